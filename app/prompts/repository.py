"""All SQL for prompts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

import numpy as np
import psycopg
from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Prompt, Ranking


# meta is staged as JSON text (the service encodes it, "{}" for most rows) and cast once in SQL:
# psycopg's per-row jsonb dumper was a sixth of a big import's time. The band keys go in as
# one int8 column each (psycopg's C dumper) and the stage builds the array: its Python list
# dumper cost ~3 us a row, a sixth of what is left.
def stage_columns(bands: int) -> tuple[str, ...]:
    return ("line", "text", "content_hash", "source", "split", "tags", "meta", *(f"lsh_key{b}" for b in range(bands)))


def stage_types(bands: int) -> list[str]:
    return ["int4", "text", "bytea", "text", "text", "text[]", "text", *(["int8"] * bands)]


async def driver_connection(session: AsyncSession) -> psycopg.AsyncConnection:
    """The psycopg connection under the session's transaction (for COPY)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def create_stage(pg: psycopg.AsyncConnection, bands: int) -> None:
    keys = ", ".join(f"lsh_key{b}" for b in range(bands))
    await pg.execute(
        f"""
        CREATE TEMP TABLE IF NOT EXISTS prompt_import_stage (
            line int NOT NULL, text text NOT NULL, content_hash bytea NOT NULL, source text NOT NULL,
            split text, tags text[] NOT NULL, meta text NOT NULL, {" ".join(f"lsh_key{b} bigint NOT NULL," for b in range(bands))}
            lsh_keys bigint[] GENERATED ALWAYS AS (ARRAY[{keys}]) STORED,
            near_duplicate jsonb
        ) ON COMMIT DROP
        """
    )
    await pg.execute("TRUNCATE prompt_import_stage")


def copy_stage(pg: psycopg.AsyncConnection, bands: int):
    """An async COPY context for staging rows: `await copy.write_row(row)`, the band keys last."""
    cur = pg.cursor()
    return cur.copy(f"COPY prompt_import_stage ({', '.join(stage_columns(bands))}) FROM STDIN (FORMAT BINARY)")


async def stage_duplicates(pg: psycopg.AsyncConnection, dataset_id: int, limit: int) -> tuple[int, list[int]]:
    """Staged rows whose text is already in the dataset, or earlier in the same input."""
    sql = """
        WITH d AS (
            SELECT t.line FROM (
                SELECT line, content_hash,
                       row_number() OVER (PARTITION BY content_hash ORDER BY line) AS rn
                FROM prompt_import_stage
            ) t
            WHERE t.rn > 1 OR EXISTS (
                SELECT 1 FROM prompt p WHERE p.dataset_id = %(ds)s AND p.content_hash = t.content_hash)
        )
        SELECT (SELECT count(*) FROM d), ARRAY(SELECT line FROM d ORDER BY line LIMIT %(limit)s)
    """
    cur = await pg.execute(sql, {"ds": dataset_id, "limit": limit})
    count, lines = await cur.fetchone()
    return count, lines


async def stage_lines_not_inserted(pg: psycopg.AsyncConnection, dataset_id: int, after_id: int, limit: int) -> list[int]:
    """After a chunk's insert: the staged lines it skipped as exact duplicates, i.e. all but the
    first line of each text whose prompt is new (an id above `after_id`, the newest before the
    insert). A concurrent import that stored one of the texts first can make a skipped line
    look inserted here; the count, taken from the insert, stays exact."""
    cur = await pg.execute(
        """
        WITH first AS (SELECT content_hash, min(line) AS line FROM prompt_import_stage GROUP BY content_hash)
        SELECT s.line FROM prompt_import_stage s JOIN first f USING (content_hash)
        WHERE s.line <> f.line OR NOT EXISTS (
            SELECT 1 FROM prompt p WHERE p.dataset_id = %(ds)s AND p.content_hash = s.content_hash AND p.id > %(after)s
        )
        ORDER BY s.line LIMIT %(limit)s
        """,
        {"ds": dataset_id, "after": after_id, "limit": limit},
    )
    return [line for (line,) in await cur.fetchall()]


# Candidates of a batch among the stored prompts, two ways. A few texts: per band key, a few
# stored prompts holding it, through the GIN index (no ORDER BY: a key shared by thousands of
# templated prompts must not make each lookup read and sort them all). Many texts: per key the
# oldest stored prompt holding it, from one pass over the dataset's keys (a hash semi-join and a
# GROUP BY), whose cost does not grow with how many prompts share a key.
SMALL_BATCH = 1000


def _stage(name: str) -> str:
    """A stage of new prompts (the prompt import's, the record import's): a temp table with the
    columns line, text, content_hash, lsh_keys, near_duplicate."""
    if name not in STAGES:
        raise ValueError(f"not a stage of new prompts: {name}")
    return name


PROMPT_STAGE = "prompt_import_stage"
STAGES = (PROMPT_STAGE, "record_import_new_prompt")


NO_ID_LIMIT = 2**63 - 1


async def stage_near_duplicate_candidates(
    pg: psycopg.AsyncConnection, dataset_id: int, per_key: int, stage: str = PROMPT_STAGE, max_id: int | None = None
) -> list[tuple[int, int, str, str]]:
    """(line, prompt id, staged text, stored text) for staged rows sharing a band key with a
    stored prompt (with an id up to `max_id`, if given); rows whose exact text is stored are
    left out (duplicates, not inserted)."""
    stage = _stage(stage)
    cur = await pg.execute(f"SELECT count(*) FROM {stage}")
    small = (await cur.fetchone())[0] <= SMALL_BATCH
    if small:
        pairs = f"""
        SELECT DISTINCT s.line, c.id FROM {stage} s
        CROSS JOIN LATERAL unnest(s.lsh_keys) AS q(k)
        CROSS JOIN LATERAL (
            SELECT p.id FROM prompt p WHERE p.dataset_id = %(ds)s AND p.lsh_keys @> ARRAY[q.k] AND p.id <= %(max_id)s
            LIMIT %(per_key)s
        ) c"""
    else:
        pairs = f"""
        WITH sk AS (SELECT line, unnest(lsh_keys) AS k FROM {stage}),
        head AS (
            SELECT x.k, min(x.id) AS id
            FROM (SELECT id, unnest(lsh_keys) AS k FROM prompt
                  WHERE dataset_id = %(ds)s AND lsh_keys IS NOT NULL AND id <= %(max_id)s) x
            WHERE x.k IN (SELECT k FROM sk)
            GROUP BY x.k
        )
        SELECT DISTINCT sk.line, head.id FROM sk JOIN head USING (k)"""
    cur = await pg.execute(
        f"""
        SELECT c.line, p.id, s.text, p.text
        FROM ({pairs}) c(line, id)
        JOIN {stage} s ON s.line = c.line
        JOIN prompt p ON p.id = c.id
        WHERE NOT EXISTS (SELECT 1 FROM prompt e WHERE e.dataset_id = %(ds)s AND e.content_hash = s.content_hash)
        """,
        {"ds": dataset_id, "per_key": per_key, "max_id": NO_ID_LIMIT if max_id is None else max_id},
    )
    return await cur.fetchall()


BATCH_WORK_MEM = "64MB"


async def stage_batch_candidates(
    pg: psycopg.AsyncConnection, dataset_id: int, stage: str = PROMPT_STAGE, *, exact_duplicates: bool = True, chunk: int
) -> AsyncIterator[list[tuple[int, int, str, str]]]:
    """(line, earlier line, text, earlier text) of staged rows sharing a band key, `chunk` at a
    time (a server-side cursor: memory stays flat however many there are): each row with the
    first row holding each of its keys (dedup.py's star, as in the dataset-wide pass). Rows that
    will not be stored for their exact text (stored already, or earlier in the input) are left
    out; with `exact_duplicates=False` the caller knows the stage has none (it saves a sort)."""
    stage = _stage(stage)
    rows = f"SELECT line, lsh_keys FROM {stage}"
    if exact_duplicates:
        rows = f"""
        SELECT t.line, t.lsh_keys FROM (
            SELECT line, lsh_keys, content_hash, row_number() OVER (PARTITION BY content_hash ORDER BY line) AS rn FROM {stage}
        ) t
        WHERE t.rn = 1 AND NOT EXISTS (SELECT 1 FROM prompt e WHERE e.dataset_id = %(ds)s AND e.content_hash = t.content_hash)"""
    # the key aggregate of a big stage: in memory rather than in temp files (this transaction only)
    # and planned for all its rows, not the first ones (a cursor's default)
    await pg.execute("SELECT set_config('work_mem', %s, true), set_config('cursor_tuple_fraction', '1', true)", (BATCH_WORK_MEM,))
    async with pg.cursor(name="near_duplicate_batch_candidates") as cur:
        await cur.execute(
            f"""
            WITH sk AS (SELECT line, unnest(lsh_keys) AS k FROM ({rows}) r),
            head AS (SELECT k, min(line) AS line FROM sk GROUP BY k HAVING count(*) > 1)
            SELECT c.line, c.head, s.text, h.text
            FROM (SELECT DISTINCT sk.line, head.line AS head FROM sk JOIN head USING (k) WHERE sk.line <> head.line) c
            JOIN {stage} s ON s.line = c.line JOIN {stage} h ON h.line = c.head
            """,
            {"ds": dataset_id},
        )
        while batch := await cur.fetchmany(chunk):
            yield batch


async def stage_prompt_ids(pg: psycopg.AsyncConnection, dataset_id: int, lines: Iterable[int], stage: str = PROMPT_STAGE) -> dict[int, int]:
    """The stored prompt of each of the staged lines (by content hash), once they are inserted."""
    cur = await pg.execute(
        f"SELECT s.line, p.id FROM {_stage(stage)} s JOIN prompt p ON p.dataset_id = %s AND p.content_hash = s.content_hash "
        "WHERE s.line = ANY(%s)",
        (dataset_id, list(lines)),
    )
    return dict(await cur.fetchall())


async def has_keyed_prompts(pg: psycopg.AsyncConnection, dataset_id: int, max_id: int | None = None) -> bool:
    cur = await pg.execute(
        "SELECT EXISTS (SELECT 1 FROM prompt WHERE dataset_id = %s AND lsh_keys IS NOT NULL AND id <= %s)",
        (dataset_id, NO_ID_LIMIT if max_id is None else max_id),
    )
    return (await cur.fetchone())[0]


async def max_prompt_id(pg: psycopg.AsyncConnection, dataset_id: int) -> int:
    """The newest prompt id of the dataset (0 when it has none)."""
    cur = await pg.execute("SELECT coalesce(max(id), 0) FROM prompt WHERE dataset_id = %s", (dataset_id,))
    return (await cur.fetchone())[0]


async def clear_stage(pg: psycopg.AsyncConnection) -> None:
    await pg.execute("TRUNCATE prompt_import_stage")


async def mark_stage_near_duplicates(
    pg: psycopg.AsyncConnection, lines: list[int], details: list[str], drop: bool, stage: str = PROMPT_STAGE
) -> None:
    """Record each line's near-duplicate (`details`: JSON texts), or drop the lines (and later
    lines of the same text, left out of the check as exact duplicates)."""
    stage = _stage(stage)
    if drop:
        await pg.execute(f"DELETE FROM {stage} WHERE content_hash IN (SELECT content_hash FROM {stage} WHERE line = ANY(%s))", (lines,))
    else:
        await pg.execute(
            f"UPDATE {stage} s SET near_duplicate = CAST(q.d AS jsonb) "
            "FROM unnest(CAST(%s AS int[]), CAST(%s AS text[])) AS q(line, d) WHERE s.line = q.line",
            (lines, details),
        )


def near_duplicate_flags(meta: str) -> tuple[str, str, str]:
    """For an INSERT ... SELECT from a stage `s` of new prompts: the meta expression (from `meta`),
    the flag values and their column names (each after a comma) that flag a row whose
    `s.near_duplicate` is set `near_duplicate` (needs_review, meta.flag_details names the match)."""
    flagged = "s.near_duplicate IS NOT NULL"
    meta = (f"CASE WHEN {flagged} THEN {meta} || jsonb_build_object('flag_details', coalesce({meta} -> 'flag_details', '{{}}') "
            f"|| jsonb_build_object('near_duplicate', s.near_duplicate)) ELSE {meta} END")
    flags = (f", CASE WHEN {flagged} THEN ARRAY['near_duplicate'] ELSE '{{}}'::text[] END, "
             f"CASE WHEN {flagged} THEN 'needs_review' ELSE 'pending' END")
    return meta, flags, ", flag_reasons, review_status"


async def insert_from_stage(pg: psycopg.AsyncConnection, dataset_id: int, *, deduplicate: bool = True, flag: bool = True) -> int:
    """Insert each staged text once, in input order; texts already in the dataset are skipped.
    With `flag`, a row with a near-duplicate is flagged (meta.flag_details says which); without,
    the statement is the plain copy it was before near-duplicates (most imports have none).

    `deduplicate=False` when the stage is known to hold each text once (it saves a sort);
    ON CONFLICT still guards against a concurrent import of the same texts."""
    source = (
        "(SELECT DISTINCT ON (content_hash) * FROM prompt_import_stage ORDER BY content_hash, line) s"
        if deduplicate
        else "prompt_import_stage s"
    )
    meta, flags, flag_columns = near_duplicate_flags("meta::jsonb") if flag else ("meta::jsonb", "", "")
    cur = await pg.execute(
        f"""
        INSERT INTO prompt (dataset_id, text, content_hash, source, split, tags, meta, lsh_keys{flag_columns})
        SELECT %(ds)s, text, content_hash, source, split, tags, {meta}, lsh_keys{flags}
        FROM {source}
        ORDER BY line
        ON CONFLICT (dataset_id, content_hash) DO NOTHING
        """,
        {"ds": dataset_id},
    )
    return cur.rowcount


async def get(session: AsyncSession, prompt_id: int) -> Prompt | None:
    return await session.get(Prompt, prompt_id)


def list_query(
    dataset_id: int,
    *,
    after_id: int | None,
    limit: int,
    review_status: str | None = None,
    source: str | None = None,
    split: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> Select:
    stmt = select(Prompt).where(Prompt.dataset_id == dataset_id)
    if after_id is not None:
        stmt = stmt.where(Prompt.id > after_id)
    if review_status:
        stmt = stmt.where(Prompt.review_status == review_status)
    if source:
        stmt = stmt.where(Prompt.source == source)
    if split:
        stmt = stmt.where(Prompt.split == split)
    if tag:
        stmt = stmt.where(Prompt.tags.contains([tag]))
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Prompt.text.ilike(f"%{escaped}%", escape="\\"))
    if created_after:
        stmt = stmt.where(Prompt.created_at >= created_after)
    if created_before:
        stmt = stmt.where(Prompt.created_at < created_before)
    return stmt.order_by(Prompt.id).limit(limit)


async def list_page(session: AsyncSession, dataset_id: int, **kw) -> list[Prompt]:
    return list((await session.execute(list_query(dataset_id, **kw))).scalars())


async def answers_of(session: AsyncSession, prompt_id: int) -> list[Completion | Ranking]:
    """The prompt's completions and rankings that count (neither rejected nor stale already)."""
    out: list[Completion | Ranking] = []
    for table in (Completion, Ranking):
        stmt = select(table).where(table.prompt_id == prompt_id, table.review_status.not_in(["rejected", "stale"])).order_by(table.id)
        out.extend((await session.execute(stmt)).scalars())
    return out


async def exists_text(session: AsyncSession, dataset_id: int, content_hash: bytes, exclude_id: int | None = None) -> bool:
    stmt = select(Prompt.id).where(Prompt.dataset_id == dataset_id, Prompt.content_hash == content_hash)
    if exclude_id is not None:
        stmt = stmt.where(Prompt.id != exclude_id)
    return (await session.execute(stmt.limit(1))).first() is not None


_FLAG = text(
    """
    UPDATE prompt SET
        flag_reasons = CASE WHEN CAST(:code AS text) = ANY(flag_reasons) THEN flag_reasons
                            ELSE array_append(flag_reasons, CAST(:code AS text)) END,
        meta = meta || jsonb_build_object('flag_details', coalesce(meta -> 'flag_details', '{}'::jsonb)
                                          || jsonb_build_object(CAST(:code AS text), CAST(:detail AS text))),
        review_status = CASE WHEN review_status = 'pending' THEN 'needs_review' ELSE review_status END,
        updated_at = now()
    WHERE id = :prompt_id
    """
)


async def flag_prompt(session: AsyncSession, prompt_id: int, code: str, detail: str) -> None:
    """Add a flag (a FlagReason code; the detail goes to meta.flag_details); a pending prompt
    becomes needs_review, a human decision stands."""
    await session.execute(_FLAG, {"prompt_id": prompt_id, "code": str(code), "detail": detail})


# --- near-duplicates (the rules are app/prompts/dedup.py's) ---------------------------------

_FEW_CANDIDATES = text(
    """
SELECT DISTINCT q.i, c.id, c.text
FROM unnest(CAST(:idx AS bigint[]), CAST(:keys AS bigint[])) AS q(i, k)
CROSS JOIN LATERAL (
  SELECT p.id, p.text FROM prompt p
  WHERE p.dataset_id = :ds AND p.lsh_keys @> ARRAY[q.k] AND p.id <> ALL(CAST(:exclude AS bigint[]))
  LIMIT :per_key
) c
"""
)
_MANY_CANDIDATES = text(
    """
WITH q AS (SELECT * FROM unnest(CAST(:idx AS bigint[]), CAST(:keys AS bigint[])) AS q(i, k)),
head AS (
  SELECT x.k, min(x.id) AS id
  FROM (SELECT id, unnest(lsh_keys) AS k FROM prompt
        WHERE dataset_id = :ds AND lsh_keys IS NOT NULL AND id <> ALL(CAST(:exclude AS bigint[]))) x
  WHERE x.k IN (SELECT k FROM q)
  GROUP BY x.k
)
SELECT DISTINCT q.i, p.id, p.text FROM q JOIN head USING (k) JOIN prompt p ON p.id = head.id
"""
)


async def lsh_candidates(
    session: AsyncSession, dataset_id: int, keys: np.ndarray, per_key: int, exclude_ids: Sequence[int] = ()
) -> list[tuple[int, int, str]]:
    """(index in the batch, prompt id, text) of stored prompts sharing a band key with a text of
    the batch (see SMALL_BATCH for the two ways)."""
    if not len(keys):
        return []
    idx = np.repeat(np.arange(len(keys), dtype=np.int64), keys.shape[1])
    params = {"idx": idx.tolist(), "keys": keys.ravel().tolist(), "ds": dataset_id, "per_key": per_key,
              "exclude": list(exclude_ids)}
    stmt = _FEW_CANDIDATES if len(keys) <= SMALL_BATCH else _MANY_CANDIDATES
    return [(int(i), int(pid), body) for i, pid, body in await session.execute(stmt, params)]


async def lsh_star_pairs(session: AsyncSession, dataset_id: int) -> list[tuple[int, int]]:
    """The dataset's candidate pairs: each prompt with the oldest prompt sharing a band key with
    it (one pair per prompt and key, however many share the key)."""
    rows = await session.execute(
        text(
            """
WITH k AS (
  SELECT id, unnest(lsh_keys) AS key FROM prompt WHERE dataset_id = :ds AND lsh_keys IS NOT NULL
), head AS (
  SELECT key, min(id) AS head FROM k GROUP BY key HAVING count(*) > 1
)
SELECT DISTINCT k.id, head.head FROM k JOIN head USING (key) WHERE k.id <> head.head
"""
        ),
        {"ds": dataset_id},
    )
    return [(int(a), int(b)) for a, b in rows]


async def texts_of(session: AsyncSession, ids: Iterable[int]) -> dict[int, str]:
    rows = await session.execute(select(Prompt.id, Prompt.text).where(Prompt.id.in_(list(ids))))
    return {int(i): t for i, t in rows}


async def count_unkeyed(session: AsyncSession, dataset_id: int) -> int:
    stmt = select(func.count()).select_from(Prompt).where(Prompt.dataset_id == dataset_id, Prompt.lsh_keys.is_(None))
    return int(await session.scalar(stmt))


async def unkeyed_page(session: AsyncSession, dataset_id: int, after_id: int, limit: int) -> list[tuple[int, str]]:
    """The next prompts without band keys after `after_id` (keyset: each page one index range)."""
    rows = await session.execute(
        select(Prompt.id, Prompt.text)
        .where(Prompt.dataset_id == dataset_id, Prompt.id > after_id, Prompt.lsh_keys.is_(None))
        .order_by(Prompt.id)
        .limit(limit)
    )
    return [(int(i), t) for i, t in rows]


async def set_lsh_keys(session: AsyncSession, ids: Sequence[int], keys: np.ndarray) -> None:
    await session.execute(
        text(
            "UPDATE prompt p SET lsh_keys = CAST(q.k AS bigint[]) "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[])) AS q(id, k) WHERE p.id = q.id"
        ),
        {"ids": list(ids), "keys": ["{" + ",".join(map(str, k)) + "}" for k in keys.tolist()]},
    )


async def lineage_and_splits(session: AsyncSession, dataset_id: int) -> tuple[list[tuple[int, int]], dict[int, str]]:
    """(child, parent) links of evolved prompts (provenance.parent_prompt_id), and the split set
    on each prompt that has one."""
    rows = await session.execute(
        text(
            """
SELECT id, CASE WHEN provenance ? 'parent_prompt_id' THEN (provenance ->> 'parent_prompt_id')::bigint END, split
FROM prompt WHERE dataset_id = :ds AND (provenance ? 'parent_prompt_id' OR split IS NOT NULL)
"""
        ),
        {"ds": dataset_id},
    )
    links, splits = [], {}
    for pid, parent, split in rows:
        if parent is not None:
            links.append((int(pid), int(parent)))
        if split is not None:
            splits[int(pid)] = split
    return links, splits


async def count(session: AsyncSession, dataset_id: int) -> int:
    return int(await session.scalar(select(func.count()).select_from(Prompt).where(Prompt.dataset_id == dataset_id)))


async def flag_near_duplicates(session: AsyncSession, details: dict[int, str]) -> int:
    """Flag prompts `near_duplicate` with their details (JSON texts) in meta.flag_details; the
    number newly flagged. A pending prompt becomes needs_review, a human decision stands."""
    if not details:
        return 0
    result = await session.execute(
        text(
            """
UPDATE prompt p SET
    flag_reasons = array_append(p.flag_reasons, 'near_duplicate'),
    meta = p.meta || jsonb_build_object('flag_details', coalesce(p.meta -> 'flag_details', '{}'::jsonb)
                                        || jsonb_build_object('near_duplicate', CAST(q.d AS jsonb))),
    review_status = CASE WHEN p.review_status = 'pending' THEN 'needs_review' ELSE p.review_status END,
    updated_at = now()
FROM unnest(CAST(:ids AS bigint[]), CAST(:details AS text[])) AS q(id, d)
WHERE p.id = q.id AND NOT ('near_duplicate' = ANY(p.flag_reasons))
"""
        ),
        {"ids": list(details), "details": list(details.values())},
    )
    return result.rowcount
