"""All SQL for datasets."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Dataset, Prompt, Ranking, ReviewEvent


async def get(session: AsyncSession, dataset_id: int) -> Dataset | None:
    return await session.get(Dataset, dataset_id)


async def get_by_name(session: AsyncSession, name: str) -> Dataset | None:
    return (await session.execute(select(Dataset).where(Dataset.name == name))).scalar_one_or_none()


async def list_all(session: AsyncSession) -> list[Dataset]:
    return list((await session.execute(select(Dataset).order_by(Dataset.id))).scalars())


async def counts(session: AsyncSession, dataset_ids: list[int]) -> dict[int, dict]:
    out: dict[int, dict] = {i: {"prompts": 0, "completions": 0, "rankings": 0, "prompts_by_status": {}} for i in dataset_ids}
    if not dataset_ids:
        return out
    rows = await session.execute(
        select(Prompt.dataset_id, Prompt.review_status, func.count())
        .where(Prompt.dataset_id.in_(dataset_ids))
        .group_by(Prompt.dataset_id, Prompt.review_status)
    )
    for ds, status, n in rows:
        out[ds]["prompts_by_status"][status] = n
        out[ds]["prompts"] += n
    for model, key in ((Completion, "completions"), (Ranking, "rankings")):
        rows = await session.execute(
            select(model.dataset_id, func.count()).where(model.dataset_id.in_(dataset_ids)).group_by(model.dataset_id)
        )
        for ds, n in rows:
            out[ds][key] = n
    return out


async def audit_events(session: AsyncSession, dataset_id: int, after_id: int, limit: int) -> list[ReviewEvent]:
    stmt = (
        select(ReviewEvent).where(ReviewEvent.dataset_id == dataset_id, ReviewEvent.id > after_id)
        .order_by(ReviewEvent.id).limit(limit)
    )
    return list((await session.execute(stmt)).scalars())
