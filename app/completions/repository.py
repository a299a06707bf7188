"""All SQL for completions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Ranking


async def get(session: AsyncSession, completion_id: int) -> Completion | None:
    return await session.get(Completion, completion_id)


async def for_prompt(session: AsyncSession, prompt_id: int) -> list[Completion]:
    rows = await session.execute(select(Completion).where(Completion.prompt_id == prompt_id).order_by(Completion.id))
    return list(rows.scalars())


async def texts_for_prompt(session: AsyncSession, prompt_id: int) -> list[tuple[int, str]]:
    """(id, text) of the prompt's completions that are not stale, oldest first (a reviewer's edit
    is a text too)."""
    rows = await session.execute(
        select(Completion.id, Completion.text, Completion.edited_text)
        .where(Completion.prompt_id == prompt_id, Completion.review_status != "stale")
        .order_by(Completion.id)
    )
    out = []
    for cid, body, edited in rows:
        out.append((cid, body))
        if edited is not None:
            out.append((cid, edited))
    return out


async def list_page(
    session: AsyncSession,
    table: type[Completion] | type[Ranking],
    dataset_id: int,
    *,
    after_id: int | None,
    limit: int,
    flagged: bool | None = None,
    edited: bool | None = None,
    **equals: object,
) -> list:
    """One keyset page of a dataset's completions or rankings; `equals` maps column -> value
    (None: no filter)."""
    q = select(table).where(table.dataset_id == dataset_id)
    if after_id is not None:
        q = q.where(table.id > after_id)
    for column, value in equals.items():
        if value is not None:
            q = q.where(getattr(table, column) == value)
    if flagged is not None:
        has_flags = table.flag_reasons != []
        q = q.where(has_flags if flagged else ~has_flags)
    if edited is not None:
        q = q.where(table.edited_text.is_not(None) if edited else table.edited_text.is_(None))
    rows = await session.execute(q.order_by(table.id).limit(limit))
    return list(rows.scalars())


async def in_any_ranking(session: AsyncSession, completion: Completion) -> bool:
    q = select(Ranking.id).where(Ranking.prompt_id == completion.prompt_id, Ranking.completion_ids.any_() == completion.id)
    return (await session.execute(q.limit(1))).first() is not None
