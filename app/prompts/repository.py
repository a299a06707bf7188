"""All SQL for prompts."""

from __future__ import annotations

from datetime import datetime

import psycopg
from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Prompt

STAGE_COLUMNS = ("line", "text", "content_hash", "source", "split", "tags", "meta")
STAGE_TYPES = ("int4", "text", "bytea", "text", "text", "text[]", "jsonb")


async def driver_connection(session: AsyncSession) -> psycopg.AsyncConnection:
    """The psycopg connection under the session's transaction (for COPY)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def create_stage(pg: psycopg.AsyncConnection) -> None:
    await pg.execute(
        """
        CREATE TEMP TABLE IF NOT EXISTS prompt_import_stage (
            line int NOT NULL, text text NOT NULL, content_hash bytea NOT NULL, source text NOT NULL,
            split text, tags text[] NOT NULL, meta jsonb NOT NULL
        ) ON COMMIT DROP
        """
    )
    await pg.execute("TRUNCATE prompt_import_stage")


def copy_stage(pg: psycopg.AsyncConnection):
    """An async COPY context for staging rows: `await copy.write_row(row)`."""
    cur = pg.cursor()
    return cur.copy(f"COPY prompt_import_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)")


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


async def insert_from_stage(pg: psycopg.AsyncConnection, dataset_id: int, *, deduplicate: bool = True) -> int:
    """Insert each staged text once, in input order; texts already in the dataset are skipped.

    `deduplicate=False` when the stage is known to hold each text once (it saves a sort);
    ON CONFLICT still guards against a concurrent import of the same texts."""
    source = (
        "(SELECT DISTINCT ON (content_hash) * FROM prompt_import_stage ORDER BY content_hash, line) s"
        if deduplicate
        else "prompt_import_stage s"
    )
    cur = await pg.execute(
        f"""
        INSERT INTO prompt (dataset_id, text, content_hash, source, split, tags, meta)
        SELECT %(ds)s, text, content_hash, source, split, tags, meta FROM {source}
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
