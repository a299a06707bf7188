"""All SQL for exports.

The export files are rendered by Postgres: each format is one SELECT producing one JSON text per
row, streamed with COPY ... TO STDOUT, so the service only moves bytes and memory stays flat at
any size. The same SELECTs run over live rows (the resolution query) or over a frozen version
(export_item), so a version renders exactly like the live export it was frozen from. Each line's
keys come from trainer.formats' record definitions (`record_sql`), never written here by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import pq
from psycopg.waiting import Wait
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.exports.schemas import ExportFilters, ExportFormat, PairsMode, RenderOptions, SplitName, SplitSpec
from app.models import Dataset, Export, ExportItem, Run
from trainer.formats import MESSAGE_KEYS, field_names, required_fields

# The split of a prompt: the first 60 bits of sha256(f"{seed}:{prompt_id}") against the cumulative
# ratios scaled to 2**60. `split_of` is the same rule in Python (tests and docs hold them equal).
HASH_BITS = 60
_HASH_SQL = (
    "('x' || left(encode(sha256(convert_to(%(seed)s::text || ':' || p.id::text, 'UTF8')), 'hex'), 15))"
    "::bit(60)::bigint"
)


def split_thresholds(split: SplitSpec) -> tuple[int, int]:
    scale = 1 << HASH_BITS
    return round(split.train * scale), round((split.train + split.validation) * scale)


def split_of(seed: int, prompt_id: int, split: SplitSpec) -> str:
    h = int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[: HASH_BITS // 4], 16)
    t_train, t_validation = split_thresholds(split)
    return "train" if h < t_train else "validation" if h < t_validation else "test"


# what people made, here (`human`) or elsewhere (`imported`: read from a file), counts unless
# rejected; what the judge made needs an accepted review status
_BY_PEOPLE = "('human', 'imported')"


def _and(conditions: list[str]) -> str:
    return "".join(f" AND {c}" for c in conditions)


# Prompts in a split group (app/exports/groups.py): (prompt ids, group roots, the group's split)
Groups = tuple[list[int], list[int], list[str]]
NO_GROUPS: Groups = ([], [], [])


def resolution_sql(filters: ExportFilters, split: SplitSpec, groups: Groups = NO_GROUPS) -> tuple[str, dict[str, Any]]:
    """One row per exported prompt: its split, text, SFT target, RM ranking and RL membership.

    Split: a prompt in a split group takes the group's split; else its own `split` if set; else
    the seeded hash of its id. Stale completions and rankings (made for an older text of the
    prompt) count like rejected ones. An RM row keeps one completion of each text (the better
    ranked): no text is ranked against an identical one.

    What a person did (here, or elsewhere: imported rows) counts as reviewed unless rejected; what
    the judge did needs an accepted review status (`status`, default approved):
    - SFT target: among the prompt's completions that are accepted, edited by a person or written
      by one: a human edit first, then the best rank in the ranking that counts, then
      human-written, then oldest.
    - RM ranking: the ranking that counts is the newest human ranking, else the newest judge
      ranking with an accepted status (and `min_consistency`); completions filtered out
      (rejected, other models, flagged) leave it and the ranks are renumbered densely; fewer than
      2 left: no RM row.
    - RL: prompts whose own review status is accepted (and, with rl_disjoint, used for neither
      SFT nor RM). A rejected prompt is in nothing.
    """
    t_train, t_validation = split_thresholds(split)
    params: dict[str, Any] = {
        "status": [s.value for s in filters.status],
        "seed": split.seed,
        "t_train": t_train,
        "t_validation": t_validation,
        "g_ids": groups[0],
        "g_roots": groups[1],
        "g_splits": groups[2],
    }
    # p: prompts, c: completions, r: every ranking, j: judge rankings only
    where: dict[str, list[str]] = {"p": [], "c": [], "r": [], "j": []}
    # (filter field, table alias, condition): a condition applies when its field is set
    optional = [
        ("source", "p", "p.source = ANY(%(source)s::text[])"),
        ("tags", "p", "p.tags && %(tags)s::text[]"),
        ("created_after", "p", "p.created_at >= %(created_after)s::timestamptz"),
        ("created_before", "p", "p.created_at < %(created_before)s::timestamptz"),
        ("models", "c", "c.model = ANY(%(models)s::text[])"),
        ("min_consistency", "j", "r.consistency >= %(min_consistency)s::float8"),
    ]
    values = filters.model_dump(mode="json")
    for name, alias, condition in optional:
        if values[name] not in (None, []):
            params[name] = getattr(filters, name) if name.startswith("created") else values[name]
            where[alias].append(condition)
    for alias in ("p", "c", "r"):
        if filters.exclude_flags:
            params["exclude_flags"] = filters.exclude_flags
            where[alias].append(f"NOT ({alias}.flag_reasons && %(exclude_flags)s::text[])")
        if filters.exclude_flagged:
            where[alias].append(f"cardinality({alias}.flag_reasons) = 0")
    prompt_where, completion_where, ranking_where, judge_where = (_and(where[a]) for a in "pcrj")
    rl_disjoint = " AND sft.prompt_id IS NULL AND rm.prompt_id IS NULL" if split.rl_disjoint else ""

    # the completion filter is written out in both places that need it (not a shared CTE): an
    # inlined filter lets Postgres walk completions in prompt order and skip a materialisation
    completions = f"c.dataset_id = %(dataset_id)s AND c.review_status NOT IN ('rejected', 'stale'){completion_where}"
    sql = f"""
WITH p AS (
  SELECT p.id, p.text, p.review_status, coalesce(g.split, p.split) AS split, g.root AS split_group, {_HASH_SQL} AS h
  FROM prompt p
  LEFT JOIN unnest(%(g_ids)s::bigint[], %(g_roots)s::bigint[], %(g_splits)s::text[]) AS g(id, root, split) ON g.id = p.id
  WHERE p.dataset_id = %(dataset_id)s AND p.review_status <> 'rejected'{prompt_where}
),
rk AS (
  SELECT DISTINCT ON (r.prompt_id) r.prompt_id, r.completion_ids, r.ranks, r.ranker_kind
  FROM ranking r
  WHERE r.dataset_id = %(dataset_id)s AND r.review_status NOT IN ('rejected', 'stale'){ranking_where}
    AND (r.ranker_kind IN {_BY_PEOPLE} OR r.review_status = ANY(%(status)s::text[]){judge_where})
  ORDER BY r.prompt_id, (r.ranker_kind IN {_BY_PEOPLE}) DESC, r.id DESC
),
sft AS (
  SELECT DISTINCT ON (c.prompt_id) c.prompt_id, c.id AS completion_id,
         coalesce(c.edited_text, c.text) AS completion
  FROM completion c LEFT JOIN rk ON rk.prompt_id = c.prompt_id
  WHERE {completions}
    AND (c.review_status = ANY(%(status)s::text[]) OR c.edited_text IS NOT NULL OR c.source IN {_BY_PEOPLE})
  ORDER BY c.prompt_id, (c.edited_text IS NOT NULL) DESC,
           rk.ranks[array_position(rk.completion_ids, c.id)] NULLS LAST, (c.source IN {_BY_PEOPLE}) DESC, c.id
),
rm_copy AS (
  SELECT rk.prompt_id, rk.ranker_kind, x.i, x.rank, c.id, c.text, cardinality(rk.ranks) AS k,
         row_number() OVER (PARTITION BY rk.prompt_id, c.text ORDER BY x.rank, x.i) AS copy
  FROM rk
  CROSS JOIN LATERAL unnest(rk.completion_ids, rk.ranks) WITH ORDINALITY AS x(completion_id, rank, i)
  JOIN completion c ON c.id = x.completion_id AND c.prompt_id = rk.prompt_id
  WHERE {completions}
),
rm_item AS (
  SELECT prompt_id, ranker_kind, i, rank, id, text, k,
         count(*) OVER w AS kept, min(rank) OVER w AS best, max(rank) OVER w AS worst,
         dense_rank() OVER (w ORDER BY rank) AS dense
  FROM rm_copy
  WHERE copy = 1
  WINDOW w AS (PARTITION BY prompt_id)
),
rm AS (
  SELECT prompt_id, min(ranker_kind) AS ranker_kind,
         array_agg(id ORDER BY i) AS completion_ids,
         array_agg(text ORDER BY i) AS completions,
         array_agg(CASE WHEN kept = k AND best = 1 AND worst <= k THEN rank ELSE dense END ORDER BY i) AS ranks
  FROM rm_item
  GROUP BY prompt_id
  HAVING count(*) >= 2
)
SELECT p.id AS prompt_id,
       coalesce(p.split, CASE WHEN p.h < %(t_train)s THEN 'train' WHEN p.h < %(t_validation)s THEN 'validation' ELSE 'test' END)
         AS split,
       p.split_group, p.text AS prompt,
       sft.completion_id AS sft_completion_id, sft.completion AS sft_completion,
       rm.completion_ids AS rm_completion_ids, rm.completions AS rm_completions, rm.ranks AS rm_ranks,
       rm.ranker_kind AS rm_ranker_kind,
       (p.review_status = ANY(%(status)s::text[]){rl_disjoint}) AS in_rl
FROM p
LEFT JOIN sft ON sft.prompt_id = p.id
LEFT JOIN rm ON rm.prompt_id = p.id
WHERE sft.prompt_id IS NOT NULL OR rm.prompt_id IS NOT NULL OR p.review_status = ANY(%(status)s::text[])
ORDER BY p.id
"""
    return sql, params


_ITEM_COLUMNS = (
    "prompt_id, split, split_group, prompt, sft_completion_id, sft_completion, rm_completion_ids, rm_completions, "
    "rm_ranks, rm_ranker_kind, in_rl"
)


def _obj(*fields: tuple[str, str]) -> str:
    """SQL for a compact JSON object text from (key, SQL of the JSON value) pairs. Postgres's
    to_json escapes strings exactly as Python's json.dumps(ensure_ascii=False) does."""
    parts = []
    for n, (key, value) in enumerate(fields):
        parts.append(("'{" if n == 0 else "',") + f'"{key}":\' || {value}')
    return " || ".join(parts) + " || '}'"


def record_sql(fmt: ExportFormat, **values: str) -> str:
    """SQL for the JSON text of one `fmt` record from the SQL of its values: the keys are
    trainer.formats' fields of that record, in its order, so a line equals trainer.formats.dumps
    of its record byte for byte. A required field left out, or a key the format does not have, is
    a programming error."""
    names = field_names(fmt.value)
    missing = set(required_fields(fmt.value)) - values.keys()
    if missing or not values.keys() <= set(names):
        raise ValueError(f"{fmt.value}: missing {sorted(missing)}, unknown {sorted(values.keys() - set(names))}")
    return _obj(*((name, values[name]) for name in names if name in values))


def _s(expr: str) -> str:
    return f"to_json({expr})"


def _message(role: str, content: str) -> str:
    values = {"role": f"'\"{role}\"'", "content": _s(content)}
    return _obj(*((key, values[key]) for key in MESSAGE_KEYS))


def _list(*items: str) -> str:
    return "'[' || " + " || ',' || ".join(items) + " || ']'"


# every index pair i < j of a ranking with different ranks and different texts (a, b), over the
# export row `e` (a pair whose chosen equals its rejected teaches nothing and confuses DPO)
_PAIRS_JOIN = (
    "unnest(e.rm_completions, e.rm_ranks) WITH ORDINALITY AS a(c, r, i) "
    "JOIN LATERAL unnest(e.rm_completions, e.rm_ranks) WITH ORDINALITY AS b(c, r, i) "
    "ON b.i > a.i AND b.r <> a.r AND b.c <> a.c"
)
_PAIR_FORMATS = (ExportFormat.pairs, ExportFormat.pairs_chat)


def _best_only(render: RenderOptions) -> str:
    return " AND least(a.r, b.r) = 1" if render.pairs_mode is PairsMode.best_vs_rest else ""


def _record(fmt: ExportFormat, render: RenderOptions) -> tuple[str, str]:
    """(SQL of the JSON text of one `fmt` record over the export row `e`, and for pairs the pair
    `a`, `b`; the condition for the record to exist). Both the streamed SELECTs (`format_sql`)
    and the one-pass render of a version (`bundle_columns`) are made of these, so they agree."""
    pid = _s("e.prompt_id::text")
    if fmt is ExportFormat.sft:
        line = record_sql(fmt, prompt=_s("e.prompt"), completion=_s("e.sft_completion"), id=pid)
        return line, "e.sft_completion IS NOT NULL"
    if fmt is ExportFormat.sft_chat:
        line = record_sql(fmt, messages=_list(_message("user", "e.prompt"), _message("assistant", "e.sft_completion")), id=pid)
        return line, "e.sft_completion IS NOT NULL"
    if fmt is ExportFormat.rm:
        line = record_sql(fmt, prompt=_s("e.prompt"), completion=_s("e.rm_completions"), ranking=_s("e.rm_ranks"), id=pid)
        return line, "e.rm_completions IS NOT NULL"
    if fmt is ExportFormat.rl:
        return record_sql(fmt, prompt=_s("e.prompt"), id=pid), "e.in_rl"
    # pairs: the better of the two chosen
    better = "a.r < b.r"
    chosen = f"CASE WHEN {better} THEN a.c ELSE b.c END"
    rejected = f"CASE WHEN {better} THEN b.c ELSE a.c END"
    values = {
        "id": _s(
            f"e.prompt_id || '-' || (CASE WHEN {better} THEN a.i ELSE b.i END - 1) || '-' "
            f"|| (CASE WHEN {better} THEN b.i ELSE a.i END - 1)"
        )
    }
    if fmt is ExportFormat.pairs:
        values.update(prompt=_s("e.prompt"), chosen=_s(chosen), rejected=_s(rejected))
    else:
        values.update(
            prompt=_list(_message("user", "e.prompt")),
            chosen=_list(_message("assistant", chosen)),
            rejected=_list(_message("assistant", rejected)),
        )
    if render.margin:
        values["margin"] = "abs(a.r - b.r) || '.0'"  # a float, written as Python writes it
    return record_sql(fmt, **values), "e.rm_completions IS NOT NULL" + _best_only(render)


def format_sql(fmt: ExportFormat, source: str, render: RenderOptions, split: SplitName | None) -> str:
    """The SELECT of one JSON text per record of `fmt` over `source` (a relation with the
    export_item columns), in a stable order: by prompt, then by pair indices."""
    where = f" AND e.split = '{SplitName(split).value}'" if split else ""
    line, condition = _record(fmt, render)
    if fmt in _PAIR_FORMATS:
        return (
            f"SELECT {line} FROM {source} e CROSS JOIN LATERAL {_PAIRS_JOIN} "
            f"WHERE {condition}{where} ORDER BY e.prompt_id, a.i, b.i"
        )
    return f"SELECT {line} FROM {source} e WHERE {condition}{where} ORDER BY e.prompt_id"


def bundle_columns(formats: list[ExportFormat], render: RenderOptions) -> str:
    """The SELECT list, over one export row `e`, of every format of a version at once: the
    prompt id, its split, its number of pairs (under the version's pairs mode; the manifest gives
    it beside the RM file; 0 without one), then per format its records joined by \\x03 (JSON text never holds
    one; NULL when it has none). One pass over the rows renders all files (service.write_files)."""
    pairs = f"(SELECT count(*) FROM {_PAIRS_JOIN} WHERE true{_best_only(render)})" if ExportFormat.rm in formats else "0"
    columns = ["e.prompt_id", "e.split", pairs]
    for fmt in formats:
        line, condition = _record(fmt, render)
        if fmt in _PAIR_FORMATS:
            columns.append(f"(SELECT string_agg({line}, E'\\x03' ORDER BY a.i, b.i) FROM {_PAIRS_JOIN} WHERE {condition})")
        else:
            columns.append(f"CASE WHEN {condition} THEN {line} END")
    return ", ".join(columns)


def bundle_sql(export_id: int, formats: list[ExportFormat], render: RenderOptions) -> tuple[str, dict[str, Any]]:
    """Every format of a frozen version in one pass over its rows, by prompt."""
    return (
        f"SELECT {bundle_columns(formats, render)} FROM export_item e WHERE e.export_id = %(export_id)s ORDER BY e.prompt_id",
        {"export_id": export_id},
    )


def freeze_bundle_sql(
    export: Export, formats: list[ExportFormat], render: RenderOptions, groups: Groups = NO_GROUPS
) -> tuple[str, dict[str, Any]]:
    """Freeze a version and render it in one statement: the resolved rows go into export_item
    by prompt, and each inserted row comes back rendered as `bundle_sql` renders it from
    export_item later. Postgres writes the frozen rows itself (they never travel to the service
    and back) while the service writes the files from what RETURNING sends.

    RETURNING gives the rows in the order they were inserted, the ORDER BY's, which SQL does not
    promise: the service checks that the prompt ids rise (`service._Pass`), so the first render
    cannot differ from a later one without the job failing."""
    sql, params = resolution_sql(ExportFilters(**export.filters), SplitSpec(**export.split), groups)
    return (
        (
            f"INSERT INTO export_item AS e (export_id, {_ITEM_COLUMNS}) "
            f"SELECT %(export_id)s, {_ITEM_COLUMNS} FROM ({sql}) r ORDER BY r.prompt_id "
            f"RETURNING {bundle_columns(formats, render)}"
        ),
        {**params, "dataset_id": export.dataset_id, "export_id": export.id},
    )


def live_source(dataset_id: int, filters: ExportFilters, split: SplitSpec, groups: Groups = NO_GROUPS) -> tuple[str, dict[str, Any]]:
    sql, params = resolution_sql(filters, split, groups)
    return f"({sql})", {**params, "dataset_id": dataset_id}


def frozen_source(export_id: int) -> tuple[str, dict[str, Any]]:
    return "(SELECT * FROM export_item WHERE export_id = %(export_id)s)", {"export_id": export_id}


# COPY's CSV mode with a quote and delimiter byte that JSON text never contains (Postgres
# escapes every control character inside JSON strings) writes each value exactly as it is:
# no escaping, one JSON object per line.
_COPY = "COPY ({query}) TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"


async def driver(conn: AsyncConnection) -> psycopg.AsyncConnection:
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def copy_lines(
    conn: AsyncConnection, query: str, params: dict[str, Any], work_mem: str | None = None
) -> AsyncIterator[bytes]:
    """Yield the rows of `query` as they arrive, one b'...\\n' per row."""
    pg = await driver(conn)
    async with pg.cursor() as cur:
        if work_mem:
            await cur.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
        async with cur.copy(_COPY.format(query=query), params) as copy:
            async for row in copy:
                yield bytes(row)


async def copy_rows(
    conn: AsyncConnection, query: str, params: dict[str, Any], work_mem: str | None = None
) -> AsyncIterator[list[memoryview]]:
    """Yield the rows of `query` as COPY sends them, in lists: each row its values joined by
    \\x02, then a newline (NULL: an empty value; JSON text is never empty). A list holds the
    rows that had arrived when it was read (at most COPY_BATCH): one wait for the socket per
    list. psycopg's `AsyncCopy.read` hands over one row a wait, which cost more CPU than the
    rows (1M rows: 2.7 s against 1.7 s this way)."""
    pg = await driver(conn)
    async with pg.cursor() as cur:
        if work_mem:
            await cur.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
        async with cur.copy(_COPY.format(query=query), params):
            arrived = _Arrived(pg.pgconn, pg.info.encoding)
            while rows := await pg.wait(arrived.rows()):
                yield rows


# the most rows one read of a COPY hands over
COPY_BATCH = 4096


class _Arrived:
    """Reads a COPY TO a list at a time. `rows()` is a psycopg generator (what
    `AsyncConnection.wait` runs, as it runs psycopg's own `copy_from` for `Copy.read`): it
    returns the rows libpq holds, waiting for the socket only when it holds none; at the end of
    the COPY it reads the statement's result (an error raises), and from then on returns []."""

    def __init__(self, pgconn: Any, encoding: str):
        self.pgconn = pgconn
        self.encoding = encoding
        self.over = False

    def rows(self) -> Any:
        pgconn = self.pgconn
        rows: list[memoryview] = []
        while not self.over:
            nbytes, data = pgconn.get_copy_data(1)
            if nbytes > 0:
                rows.append(data)
                if len(rows) >= COPY_BATCH:
                    break
            elif nbytes == 0:  # nothing buffered: hand over what there is, or wait for more
                if rows:
                    break
                while not (yield Wait.R):
                    continue
                pgconn.consume_input()
            else:  # the COPY is over: its result (an error raises), after the last rows
                yield from self._result()
                self.over = True
        return rows

    def _result(self) -> Any:
        """Every result libpq has for the statement (until none: the connection is then free
        again); the first error among them raises."""
        pgconn = self.pgconn
        results = []
        while True:
            while pgconn.is_busy():
                while not (yield Wait.R):
                    continue
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            results.append(result)
        for result in results:
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.errors.error_from_result(result, encoding=self.encoding)


async def freeze(session: AsyncSession, export: Export, groups: Groups = NO_GROUPS, work_mem: str | None = None) -> int:
    """Write the export's rows into export_item from the live rows; the number of prompts."""
    sql, params = resolution_sql(ExportFilters(**export.filters), SplitSpec(**export.split), groups)
    pg = await driver(await session.connection())
    async with pg.cursor() as cur:
        if work_mem:
            await cur.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
        await cur.execute(
            f"INSERT INTO export_item (export_id, {_ITEM_COLUMNS}) "
            f"SELECT %(export_id)s, {_ITEM_COLUMNS} FROM ({sql}) r",
            {**params, "dataset_id": export.dataset_id, "export_id": export.id},
        )
        return cur.rowcount


async def frozen_count(session: AsyncSession, export_id: int) -> int:
    """The prompts of a frozen version."""
    return int(await session.scalar(select(func.count()).select_from(ExportItem).where(ExportItem.export_id == export_id)))


async def prompt_count(session: AsyncSession, dataset_id: int) -> int:
    """The dataset's prompts not rejected: at most what a version of it holds."""
    return int(
        await session.scalar(
            text("SELECT count(*) FROM prompt WHERE dataset_id = :d AND review_status <> 'rejected'"), {"d": dataset_id}
        )
    )


async def lock_dataset(session: AsyncSession, dataset_id: int) -> None:
    await session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())


async def next_version(session: AsyncSession, dataset_id: int) -> int:
    current = await session.scalar(select(func.max(Export.version)).where(Export.dataset_id == dataset_id))
    return (current or 0) + 1


async def get(session: AsyncSession, export_id: int) -> Export | None:
    return await session.get(Export, export_id)


async def get_version(session: AsyncSession, dataset_id: int, version: int) -> Export | None:
    return (
        await session.execute(select(Export).where(Export.dataset_id == dataset_id, Export.version == version))
    ).scalar_one_or_none()


async def list_for_dataset(
    session: AsyncSession, dataset_id: int, *, after_version: int | None = None, limit: int | None = None
) -> list[Export]:
    stmt = select(Export).where(Export.dataset_id == dataset_id).order_by(Export.version).limit(limit)
    if after_version is not None:
        stmt = stmt.where(Export.version > after_version)
    return list((await session.execute(stmt)).scalars())


async def runs(session: AsyncSession, run_ids: list[int]) -> dict[int, Run]:
    if not run_ids:
        return {}
    return {r.id: r for r in (await session.execute(select(Run).where(Run.id.in_(run_ids)))).scalars()}


async def set_progress(session: AsyncSession, run_id: int, **values: Any) -> None:
    await session.execute(update(Run).where(Run.id == run_id).values(**values))


async def set_status(session: AsyncSession, export_id: int, **values: Any) -> None:
    await session.execute(update(Export).where(Export.id == export_id).values(**values))


async def clear_items(session: AsyncSession, export_id: int) -> None:
    """Before a freeze: the export row locked as a foreign key check would lock it (so it cannot
    be deleted until the freeze commits, and then its items go with it), any earlier items gone."""
    await session.execute(select(Export.id).where(Export.id == export_id).with_for_update(key_share=True))
    await session.execute(delete(ExportItem).where(ExportItem.export_id == export_id))



async def pairs_across_splits(session: AsyncSession, export_id: int, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs whose two prompts are both in the frozen version, in different splits."""
    if not pairs:
        return []
    rows = await session.execute(
        text(
            """
SELECT q.a, q.b FROM unnest(CAST(:a AS bigint[]), CAST(:b AS bigint[])) AS q(a, b)
JOIN export_item x ON x.export_id = :e AND x.prompt_id = q.a
JOIN export_item y ON y.export_id = :e AND y.prompt_id = q.b
WHERE x.split <> y.split
ORDER BY q.a, q.b
"""
        ),
        {"e": export_id, "a": [a for a, _ in pairs], "b": [b for _, b in pairs]},
    )
    return [(int(a), int(b)) for a, b in rows]
