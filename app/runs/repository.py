"""All SQL for runs and their items (the rows a kind writes are in its own repository)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Prompt, ReviewStatus, Run, RunItem, RunStatus

ACTIVE = (RunStatus.queued.value, RunStatus.running.value)


async def get(session: AsyncSession, run_id: int, *, for_update: bool = False) -> Run | None:
    stmt = select(Run).where(Run.id == run_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_for_dataset(
    session: AsyncSession, dataset_id: int, kind: str | None, limit: int, *, before_id: int | None = None
) -> list[Run]:
    """Newest first; `before_id` is the page's keyset cursor."""
    stmt = select(Run).where(Run.dataset_id == dataset_id)
    if before_id is not None:
        stmt = stmt.where(Run.id < before_id)
    if kind:
        stmt = stmt.where(Run.kind == kind)
    return list((await session.execute(stmt.order_by(Run.id.desc()).limit(limit))).scalars())


async def status(session: AsyncSession, run_id: int) -> str | None:
    return (await session.execute(select(Run.status).where(Run.id == run_id))).scalar_one_or_none()


def _prompt_conditions(dataset_id: int, flt: dict[str, Any]) -> list:
    conds = [Prompt.dataset_id == dataset_id]
    if flt.get("review_status"):
        conds.append(Prompt.review_status.in_(flt["review_status"]))
    if flt.get("source"):
        conds.append(Prompt.source.in_(flt["source"]))
    if flt.get("tags"):
        conds.append(Prompt.tags.overlap(flt["tags"]))
    if flt.get("prompt_ids"):
        conds.append(Prompt.id.in_(flt["prompt_ids"]))
    return conds


def still_open(flt: dict[str, Any]) -> tuple[ColumnElement[bool], ...]:
    """A run that covers only what still needs it never touches an approved or rejected prompt,
    unless the filter asks for a review status itself."""
    if flt.get("review_status"):
        return ()
    return (Prompt.review_status.not_in([ReviewStatus.approved.value, ReviewStatus.rejected.value]),)


def _chosen(dataset_id: int, flt: dict[str, Any], where: tuple[ColumnElement[bool], ...]):
    chosen = select(Prompt.id, Prompt.text).where(and_(*_prompt_conditions(dataset_id, flt), *where)).order_by(Prompt.id)
    if flt.get("limit"):
        chosen = chosen.limit(flt["limit"])
    return chosen.subquery()


async def create_prompt_items(
    session: AsyncSession, run: Run, flt: dict[str, Any], where: tuple[ColumnElement[bool], ...] = ()
) -> None:
    """One item per selected prompt (and meeting `where`, a kind's own conditions on `Prompt`),
    numbered in prompt id order."""
    chosen = _chosen(run.dataset_id, flt, where)
    numbered = select(
        func.cast(run.id, Run.id.type), (func.row_number().over(order_by=chosen.c.id) - 1), chosen.c.id
    )
    await session.execute(
        insert(RunItem).from_select(["run_id", "item_index", "prompt_id"], numbered).on_conflict_do_nothing()
    )


async def selected_prompts(
    session: AsyncSession, dataset_id: int, flt: dict[str, Any], where: tuple[ColumnElement[bool], ...] = ()
) -> list[tuple[int, int]]:
    """(prompt id, characters) of the prompts `create_prompt_items` would choose: a dry run's base."""
    chosen = _chosen(dataset_id, flt, where)
    return [tuple(r) for r in await session.execute(select(chosen.c.id, func.length(chosen.c.text)))]


async def create_numbered_items(session: AsyncSession, run_id: int, n: int) -> None:
    await session.execute(
        text(
            "INSERT INTO run_item (run_id, item_index) SELECT :run_id, i FROM generate_series(0, :n - 1) i "
            "ON CONFLICT DO NOTHING"
        ),
        {"run_id": run_id, "n": n},
    )


async def count_items(session: AsyncSession, run_id: int) -> dict[str, int]:
    rows = await session.execute(
        select(RunItem.status, func.count()).where(RunItem.run_id == run_id).group_by(RunItem.status)
    )
    return {status: n for status, n in rows}


async def pending_chunks(session: AsyncSession, run_id: int, chunk: int) -> list[int]:
    rows = await session.execute(
        text(
            "SELECT DISTINCT (item_index / :chunk) * :chunk AS lo FROM run_item "
            "WHERE run_id = :run_id AND status = 'pending' ORDER BY lo"
        ),
        {"run_id": run_id, "chunk": chunk},
    )
    return [r[0] for r in rows]


async def pending_items(session: AsyncSession, run_id: int, lo: int, hi: int) -> list[tuple[int, int | None, str | None]]:
    rows = await session.execute(
        select(RunItem.item_index, RunItem.prompt_id, Prompt.text)
        .outerjoin(Prompt, Prompt.id == RunItem.prompt_id)
        .where(RunItem.run_id == run_id, RunItem.item_index >= lo, RunItem.item_index < hi, RunItem.status == "pending")
        .order_by(RunItem.item_index)
    )
    return [tuple(r) for r in rows]


_CLAIM = text(
    """
    UPDATE run_item AS ri SET
        status = v.status, error = v.error, attempts = ri.attempts + 1,
        prompt_tokens = ri.prompt_tokens + v.pt, completion_tokens = ri.completion_tokens + v.ct,
        cost = ri.cost + v.cost, result = v.result, updated_at = now()
    FROM unnest(
        CAST(:idx AS integer[]), CAST(:status AS text[]), CAST(:error AS text[]), CAST(:pt AS integer[]),
        CAST(:ct AS integer[]), CAST(:cost AS numeric[]), CAST(:result AS jsonb[])
    ) AS v(item_index, status, error, pt, ct, cost, result)
    WHERE ri.run_id = :run_id AND ri.item_index = v.item_index AND ri.status = 'pending'
    RETURNING ri.item_index
    """
)


async def claim_items(session: AsyncSession, run_id: int, finished: list[dict[str, Any]]) -> set[int]:
    """pending -> done|failed for each finished item, once: the items another execution of
    the job already finished are left out of the returned set, and their rows unwritten."""
    if not finished:
        return set()
    cols = {k: [f[k] for f in finished] for k in ("idx", "status", "error", "pt", "ct", "cost")}
    cols["result"] = [json.dumps(f["result"]) for f in finished]
    return {r[0] for r in await session.execute(_CLAIM, {"run_id": run_id, **cols})}


async def set_item_result(session: AsyncSession, run_id: int, item_index: int, result: dict[str, Any]) -> None:
    await session.execute(
        update(RunItem).where(RunItem.run_id == run_id, RunItem.item_index == item_index).values(result=result)
    )


_REFRESH = text(
    """
    UPDATE run SET
        done = a.done, failed = a.failed, prompt_tokens = a.pt, completion_tokens = a.ct, cost = a.cost,
        status = CASE
            WHEN run.status <> 'running' THEN run.status
            WHEN a.done + a.failed >= run.total THEN
                CASE WHEN (a.done = 0 AND a.failed > 0) OR run.error IS NOT NULL THEN 'failed' ELSE 'succeeded' END
            WHEN run.budget IS NOT NULL AND a.cost >= run.budget THEN 'budget_exhausted'
            ELSE run.status END,
        finished_at = CASE
            WHEN run.status = 'running' AND (a.done + a.failed >= run.total
                 OR (run.budget IS NOT NULL AND a.cost >= run.budget)) THEN now()
            ELSE run.finished_at END
    FROM (
        SELECT count(*) FILTER (WHERE status = 'done') AS done,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               coalesce(sum(prompt_tokens), 0) AS pt, coalesce(sum(completion_tokens), 0) AS ct,
               -- one item of unknown cost makes the run's cost unknown, never a smaller known sum
               CASE WHEN bool_or(cost IS NULL) THEN NULL ELSE coalesce(sum(cost), 0) END AS cost
        FROM run_item WHERE run_id = :run_id
    ) AS a
    WHERE run.id = :run_id
    RETURNING run.status, run.cost, run.budget,
        (SELECT d.settings ->> 'budget' FROM dataset d WHERE d.id = run.dataset_id) AS cap
    """
)


_CAP = text(
    """
    WITH others AS (
        SELECT coalesce(sum(o.cost), 0) AS spent FROM run o
        WHERE o.dataset_id = (SELECT dataset_id FROM run WHERE id = :run_id) AND o.id <> :run_id
    )
    UPDATE run SET status = 'budget_exhausted', finished_at = now(),
        error = 'the dataset''s spend cap (settings.budget) is reached'
    FROM others
    WHERE run.id = :run_id AND run.status = 'running' AND coalesce(run.cost, 0) + others.spent >= :cap
    RETURNING run.status
    """
)
_OTHERS = text(
    "SELECT coalesce(sum(o.cost), 0) FROM run o "
    "WHERE o.dataset_id = (SELECT dataset_id FROM run WHERE id = :run_id) AND o.id <> :run_id"
)


async def refresh_counters(session: AsyncSession, run_id: int) -> tuple[str, Decimal | None, Decimal | None] | None:
    """Recompute the run's counters from its items (the truth, so always exact) and finish it
    when every item is done, its budget is spent or its dataset's spend cap (settings.budget) is
    reached. Returns (status, cost, budget) afterwards, where budget is what the run may spend in
    all: the lower of its own budget and what the dataset's cap leaves after its other runs.

    Items never touch the run row themselves: with a hot row shared by every item, each
    commit would wait for the one before it."""
    row = (await session.execute(_REFRESH, {"run_id": run_id})).first()
    if not row:
        return None
    status, cost, budget, raw_cap = row
    try:
        cap = Decimal(raw_cap) if raw_cap is not None else None
    except ArithmeticError:  # not an amount (written before settings were checked): no cap
        cap = None
    if cap is None or not cap.is_finite():
        return status, cost, budget
    stopped = (await session.execute(_CAP, {"run_id": run_id, "cap": cap})).scalar_one_or_none()
    spent = (await session.execute(_OTHERS, {"run_id": run_id})).scalar_one()
    left = cap - spent
    return stopped or status, cost, left if budget is None else min(budget, left)


async def dataset_spend(session: AsyncSession, dataset_id: int) -> Decimal:
    """What the dataset's runs have spent (known costs; a run of unknown cost adds nothing)."""
    stmt = select(func.coalesce(func.sum(Run.cost), 0)).where(Run.dataset_id == dataset_id)
    return (await session.execute(stmt)).scalar_one()


async def set_started(session: AsyncSession, run: Run, total: int) -> None:
    run.status = RunStatus.running.value
    run.total = total
    run.started_at = run.started_at or func.now()
    run.finished_at = None
    await session.flush()


async def cancel(session: AsyncSession, run_id: int) -> bool:
    stmt = (
        update(Run)
        .where(Run.id == run_id, Run.status.in_(ACTIVE))
        .values(status=RunStatus.cancelled.value, finished_at=func.now())
        .returning(Run.id)
    )
    return (await session.execute(stmt)).first() is not None


async def fail_pending_items(session: AsyncSession, run_id: int, lo: int, hi: int, reason: str) -> int:
    """A chunk whose job gave up: its items still pending fail with the reason, and the run
    carries it (a run with an error ends `failed`, see _REFRESH)."""
    stmt = (
        update(RunItem)
        .where(RunItem.run_id == run_id, RunItem.item_index >= lo, RunItem.item_index < hi, RunItem.status == "pending")
        .values(status="failed", error=reason, updated_at=func.now())
        .returning(RunItem.item_index)
    )
    n = len((await session.execute(stmt)).all())
    await session.execute(update(Run).where(Run.id == run_id, Run.error.is_(None)).values(error=reason))
    return n


async def fail_run(session: AsyncSession, run_id: int, reason: str) -> bool:
    """A run whose planning job gave up: failed, with the reason, unless it already ended."""
    stmt = (
        update(Run)
        .where(Run.id == run_id, Run.status.in_(ACTIVE))
        .values(status=RunStatus.failed.value, error=reason, finished_at=func.now())
        .returning(Run.id)
    )
    return (await session.execute(stmt)).first() is not None


async def reset_failed_items(session: AsyncSession, run_id: int) -> int:
    stmt = (
        update(RunItem)
        .where(RunItem.run_id == run_id, RunItem.status == "failed")
        .values(status="pending", error=None)
        .returning(RunItem.item_index)
    )
    return len((await session.execute(stmt)).all())


async def items(
    session: AsyncSession, run_id: int, status: str | None, limit: int, *, after_index: int | None = None
) -> list[RunItem]:
    stmt = select(RunItem).where(RunItem.run_id == run_id)
    if after_index is not None:
        stmt = stmt.where(RunItem.item_index > after_index)
    if status:
        stmt = stmt.where(RunItem.status == status)
    return list((await session.execute(stmt.order_by(RunItem.item_index).limit(limit))).scalars())
