"""The SQL judge runs need: which prompts have something to rank, their candidates, the ranking insert."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Prompt, RankerKind, Ranking, ReviewStatus


def has_completions(of_run: int | None) -> ColumnElement[bool]:
    """A prompt has completions (of run `of_run`, when given): a judge run covers only those."""
    has = select(Completion.id).where(Completion.prompt_id == Prompt.id)
    if of_run is not None:
        has = has.where(Completion.run_id == of_run)
    return has.exists()


def not_judged() -> ColumnElement[bool]:
    """A prompt has no current judge ranking: none, a rejected one, or one older than its newest completion."""
    newest = select(func.max(Completion.created_at)).where(Completion.prompt_id == Ranking.prompt_id).scalar_subquery()
    current = select(Ranking.id).where(
        Ranking.prompt_id == Prompt.id, Ranking.ranker_kind == RankerKind.judge.value,
        Ranking.review_status != ReviewStatus.rejected.value, Ranking.created_at >= func.coalesce(newest, Ranking.created_at),
    )
    return ~current.exists()


async def candidate_lengths(session: AsyncSession, prompt_ids: list[int], source_run_id: int | None) -> dict[int, list[int]]:
    """Each prompt's candidates' lengths in characters, in the order `completions_for_prompts` takes them."""
    stmt = select(Completion.prompt_id, func.length(func.coalesce(Completion.edited_text, Completion.text))).where(
        Completion.prompt_id.in_(prompt_ids), Completion.review_status != "rejected"
    )
    if source_run_id is not None:
        stmt = stmt.where(Completion.run_id == source_run_id)
    out: dict[int, list[int]] = {p: [] for p in prompt_ids}
    for prompt_id, chars in await session.execute(stmt.order_by(Completion.prompt_id, Completion.id)):
        out[prompt_id].append(chars)
    return out


async def completions_for_prompts(
    session: AsyncSession, prompt_ids: list[int], source_run_id: int | None, limit_per_prompt: int
) -> dict[int, list[tuple[int, str]]]:
    """Each prompt's candidates: the source run's completions, or every completion not
    rejected by a reviewer, in id order (a reviewer's edit stands for the text)."""
    stmt = select(Completion.prompt_id, Completion.id, func.coalesce(Completion.edited_text, Completion.text)).where(
        Completion.prompt_id.in_(prompt_ids), Completion.review_status != "rejected"
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
