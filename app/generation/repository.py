"""The SQL generation runs need: completions already made, and the insert of new ones."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, cast, func, literal, null, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Prompt, Run, RunKind


def same_plan_runs(dataset_id: int, params: dict[str, Any]) -> Select:
    """The dataset's generate runs asked with this run's plan: the same sampling plan, seed and
    generator override (JSONB equality, so key order does not matter). Their completions are
    this plan's samples, whichever run made them."""

    def same(path: tuple[str, ...], value: Any) -> ColumnElement[bool]:
        stored = Run.params[path] if len(path) > 1 else Run.params[path[0]]
        return stored.is_not_distinct_from(null() if value is None else cast(literal(value, JSONB), JSONB))

    llm = params.get("llm") or {}
    return select(Run.id).where(
        Run.dataset_id == dataset_id, Run.kind == RunKind.generate.value,
        same(("plan",), params.get("plan")), same(("seed",), params.get("seed", 0)),
        same(("llm", "generator"), llm.get("generator")),
    )


def needs_samples(dataset_id: int, params: dict[str, Any]) -> ColumnElement[bool]:
    """A prompt still has fewer than K samples from this plan."""
    made = select(func.count(func.distinct(Completion.sample_index))).where(
        Completion.prompt_id == Prompt.id, Completion.run_id.in_(same_plan_runs(dataset_id, params))
    )
    return made.scalar_subquery() < params.get("k", 4)


async def existing_samples(session: AsyncSession, runs: Select | int, prompt_ids: list[int]) -> set[tuple[int, int]]:
    """(prompt, sample index) already made by the run, or by any of `runs`."""
    of_runs = Completion.run_id == runs if isinstance(runs, int) else Completion.run_id.in_(runs)
    rows = await session.execute(
        select(Completion.prompt_id, Completion.sample_index).where(of_runs, Completion.prompt_id.in_(prompt_ids))
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
