"""All SQL for rankings."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import RankerKind, Ranking


async def get(session: AsyncSession, ranking_id: int) -> Ranking | None:
    return await session.get(Ranking, ranking_id)


async def for_prompt(session: AsyncSession, prompt_id: int) -> list[Ranking]:
    rows = await session.execute(select(Ranking).where(Ranking.prompt_id == prompt_id).order_by(Ranking.id))
    return list(rows.scalars())


async def judge_and_mine(session: AsyncSession, prompt_id: int, reviewer: str) -> tuple[Ranking | None, Ranking | None]:
    """The latest judge ranking of a prompt and the latest one `reviewer` made, in one query."""
    q = select(Ranking).where(
        Ranking.prompt_id == prompt_id,
        or_(Ranking.ranker_kind == RankerKind.judge.value, and_(Ranking.ranker_kind == RankerKind.human.value, Ranking.reviewer == reviewer)),
    )
    judge = mine = None
    for r in (await session.execute(q.order_by(Ranking.id))).scalars():
        if r.ranker_kind == RankerKind.judge.value:
            judge = r
        else:
            mine = r
    return judge, mine
