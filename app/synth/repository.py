"""The SQL synth runs need: seed prompts to show, and the serialised insert of new prompts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Prompt


async def lock_dataset_prompts(session: AsyncSession, dataset_id: int) -> None:
    """Serialise synthetic inserts per dataset, so near-duplicate checks see each other."""
    await session.execute(text("SELECT pg_advisory_xact_lock(7401, CAST(:d AS integer))"), {"d": dataset_id})


async def prompts_after(session: AsyncSession, dataset_id: int, after_id: int) -> list[tuple[int, str]]:
    rows = await session.execute(
        select(Prompt.id, Prompt.text).where(Prompt.dataset_id == dataset_id, Prompt.id > after_id).order_by(Prompt.id)
    )
    return [tuple(r) for r in rows]


async def insert_prompts(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    stmt = insert(Prompt).values(rows).on_conflict_do_nothing().returning(Prompt.id)
    return [r[0] for r in await session.execute(stmt)]


async def sample_prompt_texts(session: AsyncSession, dataset_id: int, n: int, salt: str) -> list[str]:
    """n of the dataset's prompts, a deterministic pick per salt."""
    if n <= 0:
        return []
    stmt = (
        select(Prompt.text)
        .where(Prompt.dataset_id == dataset_id, Prompt.review_status != "rejected")
        .order_by(func.md5(func.concat(Prompt.id, salt)))
        .limit(n)
    )
    return list((await session.execute(stmt)).scalars())
