"""All SQL for importing records (prompts with their completions and rankings).

The import stages every valid line with COPY (one staged row per answer, the prompt's text on the
first), then resolves the stage into rows with a few set-based statements, inside the caller's
transaction: prompts (reusing the dataset's own by content hash), completions (reusing the
prompt's own by content hash), rankings. Nothing here holds the input in Python memory, so the
size of an import is bounded by Postgres's temp space, not by the server's RAM.

Temp tables (dropped at commit):
- record_import_stage: line, pos (the answer's place in its record), prompt text and band keys
  (pos 0 only), hashes, the answer, its rank (NULL for SFT).
- record_import_prompt: one row per distinct prompt: the first line, the prompt's id, created?
- record_import_new_prompt: the prompts not in the dataset yet (line, text, content_hash,
  lsh_keys, near_duplicate): the stage the prompt import's near-duplicate rule runs on.
- record_import_completion: one row per distinct (prompt, answer): first line and pos, id, created?
- record_import_ranking: the rankings to store, with a canonical key for duplicates.
- record_import_edge / _node / _merge (pairs only): distinct pairs, each completion's rank, and
  whether a prompt's pairs are one ranking.
- record_import_new_line: the lines that stored something (the rest are duplicates).
"""

from __future__ import annotations

from typing import Any

import psycopg

from app.prompts.hashing import content_hash_sql
from app.prompts.repository import near_duplicate_flags

TEMP_TABLES = tuple(
    f"pg_temp.record_import_{t}"
    for t in ("stage", "prompt", "new_prompt", "completion", "ranking", "edge", "node", "merge", "new_line")
)
WORK_MEM = "64MB"  # for this transaction only
STAGE_COLUMNS = ("line", "pos", "prompt", "prompt_hash", "prompt_keys", "text", "hash", "rank")
STAGE_TYPES = ("int4", "int4", "text", "bytea", "int8[]", "text", "bytea", "int4")

# the provenance of a row made by an import: which file (name, sha256), format and line, and who
_PROVENANCE = (
    "jsonb_build_object('import', jsonb_build_object('file', %(file)s::text, 'sha256', %(sha256)s::text, "
    "'format', %(format)s::text, 'line', {line}, 'by', %(by)s::text))"
)


async def create_stage(pg: psycopg.AsyncConnection, dataset_id: int) -> None:
    """The stage, after a lock that makes record imports into one dataset take turns (two of them
    could otherwise both store the same new answer)."""
    await pg.execute("SELECT pg_advisory_xact_lock(hashtext('record_import'), %s::int)", (dataset_id % 2**31,))
    # a second import in the same transaction starts afresh
    await pg.execute(f"DROP TABLE IF EXISTS {', '.join(TEMP_TABLES)}")
    # the resolving statements sort and hash whole stages: in memory rather than in temp files
    await pg.execute("SELECT set_config('work_mem', %s, true)", (WORK_MEM,))
    await pg.execute(
        """
        CREATE TEMP TABLE record_import_stage (
            line int NOT NULL, pos int NOT NULL, prompt text, prompt_hash bytea NOT NULL, prompt_keys bigint[],
            text text NOT NULL, hash bytea NOT NULL, rank int
        ) ON COMMIT DROP
        """
    )


def copy_stage(pg: psycopg.AsyncConnection):
    """An async COPY context for staging rows: `await copy.write_row(row)`."""
    cur = pg.cursor()
    return cur.copy(f"COPY record_import_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)")


async def _count(pg: psycopg.AsyncConnection, sql: str, params: dict[str, Any] | None = None) -> int:
    cur = await pg.execute(sql, params or {})
    row = await cur.fetchone()
    return int(row[0] or 0)


async def stage_prompts(pg: psycopg.AsyncConnection) -> None:
    """record_import_prompt: one row per distinct staged prompt text, at its first line."""
    await pg.execute("ANALYZE record_import_stage")
    await pg.execute(
        """
        CREATE TEMP TABLE record_import_prompt ON COMMIT DROP AS
        SELECT prompt_hash, min(line) AS line, NULL::bigint AS prompt_id, false AS created
        FROM record_import_stage WHERE pos = 0 GROUP BY prompt_hash
        """
    )
    # statistics now, so the joins on it below plan as hash joins, not a nested loop over 1M rows
    await pg.execute("ANALYZE record_import_prompt")


_SAME_TEXT = """
    UPDATE record_import_prompt r SET prompt_id = p.id
    FROM prompt p WHERE r.prompt_id IS NULL AND p.dataset_id = %(ds)s AND p.content_hash = r.prompt_hash
"""


async def match_prompts(pg: psycopg.AsyncConnection, dataset_id: int) -> None:
    """Give each staged prompt the id of the dataset's prompt with the same text (content hash)."""
    await pg.execute(_SAME_TEXT, {"ds": dataset_id})


async def stage_new_prompts(pg: psycopg.AsyncConnection) -> None:
    """record_import_new_prompt: the staged prompts still without an id, with their band keys."""
    await pg.execute(
        """
        CREATE TEMP TABLE record_import_new_prompt ON COMMIT DROP AS
        SELECT r.line, s.prompt AS text, r.prompt_hash AS content_hash, s.prompt_keys AS lsh_keys, NULL::jsonb AS near_duplicate
        FROM record_import_prompt r JOIN record_import_stage s ON s.line = r.line AND s.pos = 0
        WHERE r.prompt_id IS NULL
        """
    )
    await pg.execute("ANALYZE record_import_new_prompt")  # temp tables get no statistics on their own


async def new_prompt_count(pg: psycopg.AsyncConnection) -> int:
    """The new prompts staged (record_import_new_prompt)."""
    return await _count(pg, "SELECT count(*) FROM record_import_new_prompt")


async def drop_skipped_prompts(pg: psycopg.AsyncConnection) -> int:
    """Leave out the lines of the new prompts the near-duplicate rule dropped (skip) from
    record_import_new_prompt: their answers and rankings too. Returns how many lines."""
    return await _count(
        pg,
        """
        WITH gone AS (
            DELETE FROM record_import_prompt r
            WHERE r.prompt_id IS NULL AND NOT EXISTS (SELECT 1 FROM record_import_new_prompt n WHERE n.line = r.line)
            RETURNING prompt_hash
        ),
        lines AS (DELETE FROM record_import_stage s USING gone WHERE s.prompt_hash = gone.prompt_hash RETURNING s.pos)
        SELECT count(*) FROM lines WHERE pos = 0
        """,
    )


async def insert_prompts(
    pg: psycopg.AsyncConnection, dataset_id: int, split: str | None, prov: dict[str, Any], *, flag: bool
) -> tuple[int, int]:
    """Insert the new prompts (record_import_new_prompt), in input order, with their band keys;
    with `flag`, those with a near-duplicate marked are flagged. Returns (created, reused)."""
    params = {"ds": dataset_id, "split": split, **prov}
    meta, flags, flag_columns = near_duplicate_flags("'{}'::jsonb") if flag else ("'{}'::jsonb", "", "")
    await pg.execute(
        f"""
        WITH ins AS (
            INSERT INTO prompt (dataset_id, text, content_hash, source, split, provenance, lsh_keys, meta{flag_columns})
            SELECT %(ds)s, s.text, s.content_hash, 'imported', %(split)s, {_PROVENANCE.format(line="s.line")}, s.lsh_keys, {meta}{flags}
            FROM record_import_new_prompt s
            ORDER BY s.line
            ON CONFLICT (dataset_id, content_hash) DO NOTHING
            RETURNING id, content_hash
        )
        UPDATE record_import_prompt r SET prompt_id = ins.id, created = true FROM ins WHERE r.prompt_hash = ins.content_hash
        """,
        params,
    )
    await pg.execute(_SAME_TEXT, params)  # a concurrent prompt import took some texts meanwhile
    await pg.execute("ANALYZE record_import_prompt")
    cur = await pg.execute("SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM record_import_prompt")
    created, reused = await cur.fetchone()
    return created, reused


async def resolve_completions(pg: psycopg.AsyncConnection, dataset_id: int, prov: dict[str, Any]) -> tuple[int, int]:
    """Map every staged answer to a completion of its prompt: the prompt's own completion with the
    same text (its `text` or a reviewer's `edited_text`, by content hash) when there is one, else a
    new one (source `imported`). Returns (created, reused)."""
    params = {"ds": dataset_id, **prov}
    # a new completion's id is drawn here, in input order, so the rankings can use it without
    # reading the inserted rows back (the table has no column to find an answer by)
    await pg.execute(
        f"""
        CREATE TEMP TABLE record_import_completion ON COMMIT DROP AS
        WITH d AS (
            SELECT DISTINCT ON (s.prompt_hash, s.hash) s.prompt_hash, s.hash, s.line, s.pos, r.prompt_id, r.created AS new_prompt
            FROM record_import_stage s JOIN record_import_prompt r USING (prompt_hash)
            ORDER BY s.prompt_hash, s.hash, s.line, s.pos
        ),
        existing AS (
            SELECT DISTINCT ON (c.prompt_id, h.hash) c.prompt_id, h.hash, c.id
            FROM completion c
            JOIN record_import_prompt r ON r.prompt_id = c.prompt_id AND NOT r.created
            CROSS JOIN LATERAL (VALUES ({content_hash_sql("c.text")}), ({content_hash_sql("c.edited_text")})) h(hash)
            WHERE h.hash IS NOT NULL
            ORDER BY c.prompt_id, h.hash, c.id
        )
        SELECT d.prompt_hash, d.hash, d.line, d.pos, d.prompt_id,
               coalesce(e.id, nextval(pg_get_serial_sequence('completion', 'id'))) AS completion_id,
               e.id IS NULL AS created
        FROM d LEFT JOIN existing e ON NOT d.new_prompt AND e.prompt_id = d.prompt_id AND e.hash = d.hash
        ORDER BY d.line, d.pos
        """,
        params,
    )
    await pg.execute("ANALYZE record_import_completion")
    await pg.execute(
        f"""
        INSERT INTO completion (id, dataset_id, prompt_id, text, source, provenance)
        SELECT c.completion_id, %(ds)s, c.prompt_id, s.text, 'imported', {_PROVENANCE.format(line="c.line")}
        FROM record_import_completion c JOIN record_import_stage s ON s.line = c.line AND s.pos = c.pos
        WHERE c.created
        """,
        params,
    )
    cur = await pg.execute("SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM record_import_completion")
    created, reused = await cur.fetchone()
    return created, reused


_RANKING_TABLE = """
    CREATE TEMP TABLE record_import_ranking (
        line int NOT NULL, lines int[] NOT NULL, prompt_id bigint NOT NULL,
        completion_ids bigint[] NOT NULL, ranks int[] NOT NULL, key_ids bigint[] NOT NULL, key_ranks int[] NOT NULL
    ) ON COMMIT DROP
"""
# a line's answers as (prompt, completion id, rank), in the order of the record
_ANSWERS = """
    SELECT s.line, s.pos, c.prompt_id, c.completion_id, s.rank
    FROM record_import_stage s JOIN record_import_completion c ON c.prompt_hash = s.prompt_hash AND c.hash = s.hash
"""


async def stage_rm_rankings(pg: psycopg.AsyncConnection) -> None:
    """One ranking per RM line, completions in the record's order."""
    await pg.execute(_RANKING_TABLE)
    await pg.execute(
        f"""
        INSERT INTO record_import_ranking
        SELECT a.line, ARRAY[a.line], min(a.prompt_id),
               array_agg(a.completion_id ORDER BY a.pos), array_agg(a.rank ORDER BY a.pos),
               array_agg(a.completion_id ORDER BY a.completion_id), array_agg(a.rank ORDER BY a.completion_id)
        FROM ({_ANSWERS}) a
        GROUP BY a.line
        """
    )


async def stage_pair_rankings(pg: psycopg.AsyncConnection) -> int:
    """The pairs of each prompt as one ranking when they are exactly the pairs of one ranking,
    else one 2-way ranking per pair. Returns the number of prompts whose pairs could not be merged.

    Merging: completions are ranked by how many completions are preferred to them (dense ranks
    1, 2, ...); the pairs are merged when every pair agrees with those ranks and there are as many
    distinct pairs as the ranks order: no preference is invented and none is lost, so the pairs an
    export renders from the merged ranking are the imported ones (a tie is a pair that is absent).
    A cycle, a pair and its reverse, or pairs that leave some order open (a > b and c > d) are
    not one ranking. Completions are ordered by their first appearance in the file.
    """
    await pg.execute(_RANKING_TABLE)
    await pg.execute(
        f"""
        CREATE TEMP TABLE record_import_edge ON COMMIT DROP AS
        SELECT DISTINCT ON (p.prompt_id, p.w, p.l) p.line, p.prompt_id, p.w, p.l
        FROM (
            SELECT a.line, min(a.prompt_id) AS prompt_id,
                   min(a.completion_id) FILTER (WHERE a.pos = 0) AS w, min(a.completion_id) FILTER (WHERE a.pos = 1) AS l
            FROM ({_ANSWERS}) a GROUP BY a.line
        ) p
        ORDER BY p.prompt_id, p.w, p.l, p.line
        """
    )
    await pg.execute(
        """
        CREATE TEMP TABLE record_import_node ON COMMIT DROP AS
        WITH appearance AS (
            SELECT DISTINCT ON (prompt_id, c) prompt_id, c, line, pos
            FROM (SELECT prompt_id, w AS c, line, 0 AS pos FROM record_import_edge
                  UNION ALL SELECT prompt_id, l, line, 1 FROM record_import_edge) n
            ORDER BY prompt_id, c, line, pos
        ),
        beaten AS (SELECT prompt_id, l AS c, count(*) AS n FROM record_import_edge GROUP BY prompt_id, l)
        SELECT a.prompt_id, a.c, a.line, a.pos, dense_rank() OVER (PARTITION BY a.prompt_id ORDER BY coalesce(b.n, 0))::int AS rank
        FROM appearance a LEFT JOIN beaten b USING (prompt_id, c)
        """
    )
    await pg.execute(
        """
        CREATE TEMP TABLE record_import_merge ON COMMIT DROP AS
        WITH ordered AS (  -- per prompt: how many (x, y) pairs the ranks order, x above y
            SELECT prompt_id, sum(n - at_or_above) AS pairs
            FROM (SELECT prompt_id, count(*) OVER (PARTITION BY prompt_id) AS n,
                         count(*) OVER (PARTITION BY prompt_id ORDER BY rank RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                           AS at_or_above
                  FROM record_import_node) x
            GROUP BY prompt_id
        ),
        edges AS (
            SELECT e.prompt_id, count(*) AS pairs, bool_and(nw.rank < nl.rank) AS agree
            FROM record_import_edge e
            JOIN record_import_node nw ON nw.prompt_id = e.prompt_id AND nw.c = e.w
            JOIN record_import_node nl ON nl.prompt_id = e.prompt_id AND nl.c = e.l
            GROUP BY e.prompt_id
        )
        SELECT e.prompt_id, e.agree AND e.pairs = o.pairs AS merged FROM edges e JOIN ordered o USING (prompt_id)
        """
    )
    await pg.execute(
        """
        INSERT INTO record_import_ranking
        SELECT min(e.line), array_agg(e.line ORDER BY e.line), e.prompt_id, n.completion_ids, n.ranks, n.key_ids, n.key_ranks
        FROM record_import_edge e
        JOIN record_import_merge m ON m.prompt_id = e.prompt_id AND m.merged
        JOIN (
            SELECT prompt_id, array_agg(c ORDER BY line, pos) AS completion_ids, array_agg(rank ORDER BY line, pos) AS ranks,
                   array_agg(c ORDER BY c) AS key_ids, array_agg(rank ORDER BY c) AS key_ranks
            FROM record_import_node GROUP BY prompt_id
        ) n ON n.prompt_id = e.prompt_id
        GROUP BY e.prompt_id, n.completion_ids, n.ranks, n.key_ids, n.key_ranks
        """
    )
    await pg.execute(
        """
        INSERT INTO record_import_ranking
        SELECT e.line, ARRAY[e.line], e.prompt_id, ARRAY[e.w, e.l], ARRAY[1, 2],
               ARRAY[least(e.w, e.l), greatest(e.w, e.l)], CASE WHEN e.w < e.l THEN ARRAY[1, 2] ELSE ARRAY[2, 1] END
        FROM record_import_edge e JOIN record_import_merge m ON m.prompt_id = e.prompt_id AND NOT m.merged
        """
    )
    return await _count(pg, "SELECT count(*) FILTER (WHERE NOT merged) FROM record_import_merge")


async def insert_rankings(pg: psycopg.AsyncConnection, dataset_id: int, prov: dict[str, Any]) -> int:
    """Store the staged rankings (ranker_kind `imported`), each once: not twice from the same input,
    not again when the prompt already has the same imported ranking (the same completions with the
    same ranks, in any order). Returns how many were stored."""
    params = {"ds": dataset_id, **prov}
    details = _PROVENANCE.format(line="r.line")
    return await _count(
        pg,
        f"""
        WITH new AS MATERIALIZED (
            SELECT DISTINCT ON (r.prompt_id, r.key_ids, r.key_ranks) r.*
            FROM record_import_ranking r
            WHERE NOT EXISTS (
                SELECT 1 FROM ranking x
                JOIN record_import_prompt p ON p.prompt_id = x.prompt_id AND NOT p.created
                WHERE x.prompt_id = r.prompt_id AND x.ranker_kind = 'imported'
                  AND (r.key_ids, r.key_ranks) = (SELECT array_agg(u.c ORDER BY u.c), array_agg(u.r ORDER BY u.c)
                                                  FROM unnest(x.completion_ids, x.ranks) u(c, r))
            )
            ORDER BY r.prompt_id, r.key_ids, r.key_ranks, r.line
        ),
        ins AS (
            INSERT INTO ranking (dataset_id, prompt_id, completion_ids, ranks, ranker_kind, details)
            SELECT %(ds)s, r.prompt_id, r.completion_ids, r.ranks, 'imported',
                   CASE WHEN cardinality(r.lines) > 1 THEN jsonb_set({details}, '{{import,lines}}', to_jsonb(r.lines))
                        ELSE {details} END
            FROM new r ORDER BY r.line
        ),
        mark AS (INSERT INTO record_import_new_line SELECT unnest(lines) FROM new)
        SELECT count(*) FROM new
        """,
        params,
    )


async def create_new_lines(pg: psycopg.AsyncConnection) -> None:
    await pg.execute("CREATE TEMP TABLE record_import_new_line (line int NOT NULL) ON COMMIT DROP")


async def duplicate_lines(pg: psycopg.AsyncConnection, limit: int) -> tuple[int, list[int]]:
    """Staged lines that stored nothing: their prompt, answers and ranking were all there already
    (in the dataset, or on an earlier line)."""
    cur = await pg.execute(
        """
        WITH new AS (
            SELECT line FROM record_import_prompt WHERE created
            UNION SELECT line FROM record_import_completion WHERE created
            UNION SELECT line FROM record_import_new_line
        ),
        d AS (SELECT s.line FROM record_import_stage s WHERE s.pos = 0 AND NOT EXISTS (SELECT 1 FROM new WHERE new.line = s.line))
        SELECT (SELECT count(*) FROM d), ARRAY(SELECT line FROM d ORDER BY line LIMIT %(limit)s)
        """,
        {"limit": limit},
    )
    count, lines = await cur.fetchone()
    return count, lines
