"""All SQL for rankings."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Ranking


async def get(session: AsyncSession, ranking_id: int) -> Ranking | None:
    return await session.get(Ranking, ranking_id)


async def for_prompt(session: AsyncSession, prompt_id: int) -> list[Ranking]:
    rows = await session.execute(select(Ranking).where(Ranking.prompt_id == prompt_id).order_by(Ranking.id))
    return list(rows.scalars())


async def latest(session: AsyncSession, prompt_id: int, *, ranker_kind: str, reviewer: str | None = None) -> Ranking | None:
    q = select(Ranking).where(Ranking.prompt_id == prompt_id, Ranking.ranker_kind == ranker_kind)
    if reviewer is not None:
        q = q.where(Ranking.reviewer == reviewer)
    return (await session.execute(q.order_by(Ranking.id.desc()).limit(1))).scalar_one_or_none()
