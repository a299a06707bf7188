"""The SQL judge runs need: which prompts have something to rank, their candidates, the ranking insert."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Prompt, Ranking


def has_completions(of_run: int | None) -> ColumnElement[bool]:
    """A prompt has completions (of run `of_run`, when given): a judge run covers only those."""
    has = select(Completion.id).where(Completion.prompt_id == Prompt.id)
    if of_run is not None:
        has = has.where(Completion.run_id == of_run)
    return has.exists()


async def completions_for_prompts(
    session: AsyncSession, prompt_ids: list[int], source_run_id: int | None, limit_per_prompt: int
) -> dict[int, list[tuple[int, str]]]:
    """Each prompt's candidates: the source run's completions, or every completion not
    rejected by a reviewer nor stale (made for an older text of the prompt), in id order (a
    reviewer's edit stands for the text)."""
    stmt = select(Completion.prompt_id, Completion.id, func.coalesce(Completion.edited_text, Completion.text)).where(
        Completion.prompt_id.in_(prompt_ids), Completion.review_status.not_in(["rejected", "stale"])
    )
    if source_run_id is not None:
        stmt = stmt.where(Completion.run_id == source_run_id)
    out: dict[int, list[tuple[int, str]]] = {p: [] for p in prompt_ids}
    for prompt_id, cid, body in await session.execute(stmt.order_by(Completion.prompt_id, Completion.id)):
        if len(out[prompt_id]) < limit_per_prompt:
            out[prompt_id].append((cid, body))
    return out


async def insert_ranking(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.execute(insert(Ranking).values(row).on_conflict_do_nothing())
