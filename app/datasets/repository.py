"""All SQL for datasets."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import FLAGGED_PREDICATE, Completion, Dataset, Prompt, Ranking, ReviewEvent


async def get(session: AsyncSession, dataset_id: int) -> Dataset | None:
    return await session.get(Dataset, dataset_id)


async def get_by_name(session: AsyncSession, name: str) -> Dataset | None:
    return (await session.execute(select(Dataset).where(Dataset.name == name))).scalar_one_or_none()


async def list_all(
    session: AsyncSession, *, after_id: int | None = None, limit: int | None = None, only: frozenset[int] | None = None
) -> list[Dataset]:
    """In id order; `only`: just these ids (a key's grants), None: all."""
    stmt = select(Dataset).order_by(Dataset.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(Dataset.id > after_id)
    if only is not None:
        stmt = stmt.where(Dataset.id.in_(only))
    return list((await session.execute(stmt)).scalars())


async def counts(session: AsyncSession, dataset_ids: list[int]) -> dict[int, dict]:
    """Prompts, completions and rankings of each dataset by review status, and how many of each
    are flagged: a page that counted prompts only said "needs review 0" while every ranking was flagged."""
    out: dict[int, dict] = {
        i: {"prompts": 0, "completions": 0, "rankings": 0, "prompts_by_status": {}, "completions_by_status": {},
            "rankings_by_status": {}, "flagged": {"prompts": 0, "completions": 0, "rankings": 0}}
        for i in dataset_ids
    }
    if not dataset_ids:
        return out
    for model, key in ((Prompt, "prompts"), (Completion, "completions"), (Ranking, "rankings")):
        flagged = func.count().filter(text(FLAGGED_PREDICATE))  # one table in FROM: unqualified is fine
        rows = await session.execute(
            select(model.dataset_id, model.review_status, func.count(), flagged)
            .where(model.dataset_id.in_(dataset_ids))
            .group_by(model.dataset_id, model.review_status)
        )
        for ds, status, n, n_flagged in rows:
            out[ds][f"{key}_by_status"][status] = n
            out[ds][key] += n
            out[ds]["flagged"][key] += n_flagged
    return out


async def audit_events(session: AsyncSession, dataset_id: int, after_id: int, limit: int) -> list[ReviewEvent]:
    stmt = (
        select(ReviewEvent).where(ReviewEvent.dataset_id == dataset_id, ReviewEvent.id > after_id)
        .order_by(ReviewEvent.id).limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
