"""The SQL generation runs need: completions already made, and the insert of new ones."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion


async def existing_samples(session: AsyncSession, run_id: int, prompt_ids: list[int]) -> set[tuple[int, int]]:
    rows = await session.execute(
        select(Completion.prompt_id, Completion.sample_index).where(
            Completion.run_id == run_id, Completion.prompt_id.in_(prompt_ids)
        )
    )
    return {(p, s) for p, s in rows}


async def insert_completions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(Completion).values(rows).on_conflict_do_nothing())


async def insert_completion(session: AsyncSession, row: dict[str, Any]) -> int | None:
    """Insert one completion; its id, or None when a run already wrote that sample."""
    stmt = insert(Completion).values(row).on_conflict_do_nothing().returning(Completion.id)
    return (await session.execute(stmt)).scalar()


async def completion_texts(session: AsyncSession, prompt_id: int) -> list[tuple[int, str]]:
    """(id, text) of the prompt's completions that are not stale, oldest first (a stale one was
    made for an older text: a new sample may repeat it)."""
    rows = await session.execute(
        select(Completion.id, Completion.text)
        .where(Completion.prompt_id == prompt_id, Completion.review_status != "stale")
        .order_by(Completion.id)
    )
    return [(int(i), t) for i, t in rows]
