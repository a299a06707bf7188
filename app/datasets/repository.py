"""All SQL for datasets."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Dataset, Prompt, Ranking


async def get(session: AsyncSession, dataset_id: int) -> Dataset | None:
    return await session.get(Dataset, dataset_id)


async def get_by_name(session: AsyncSession, name: str) -> Dataset | None:
    return (await session.execute(select(Dataset).where(Dataset.name == name))).scalar_one_or_none()


async def list_all(session: AsyncSession, *, after_id: int | None = None, limit: int | None = None) -> list[Dataset]:
    stmt = select(Dataset).order_by(Dataset.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(Dataset.id > after_id)
    return list((await session.execute(stmt)).scalars())


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
