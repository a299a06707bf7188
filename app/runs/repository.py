"""All SQL for runs, their items, and the rows the pipeline writes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Prompt, Ranking, Run, RunItem, RunStatus

ACTIVE = (RunStatus.queued.value, RunStatus.running.value)


async def get(session: AsyncSession, run_id: int, *, for_update: bool = False) -> Run | None:
    stmt = select(Run).where(Run.id == run_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_for_dataset(session: AsyncSession, dataset_id: int, kind: str | None, limit: int) -> list[Run]:
    stmt = select(Run).where(Run.dataset_id == dataset_id)
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


async def create_prompt_items(
    session: AsyncSession, run: Run, flt: dict[str, Any], *, with_completions: bool = False,
    of_run: int | None = None,
) -> None:
    """One item per selected prompt (with completions: only prompts that have some, of `of_run`
    when given), numbered in prompt id order."""
    conds = _prompt_conditions(run.dataset_id, flt)
    if with_completions:
        has = select(Completion.id).where(Completion.prompt_id == Prompt.id)
        if of_run is not None:
            has = has.where(Completion.run_id == of_run)
        conds.append(has.exists())
    chosen = select(Prompt.id).where(and_(*conds)).order_by(Prompt.id)
    if flt.get("limit"):
        chosen = chosen.limit(flt["limit"])
    chosen = chosen.subquery()
    numbered = select(
        func.cast(run.id, Run.id.type), (func.row_number().over(order_by=chosen.c.id) - 1), chosen.c.id
    )
    await session.execute(
        insert(RunItem).from_select(["run_id", "item_index", "prompt_id"], numbered).on_conflict_do_nothing()
    )


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
                CASE WHEN a.done = 0 AND a.failed > 0 THEN 'failed' ELSE 'succeeded' END
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
               coalesce(sum(cost), 0) AS cost
        FROM run_item WHERE run_id = :run_id
    ) AS a
    WHERE run.id = :run_id
    RETURNING run.status, run.cost, run.budget
    """
)


async def refresh_counters(session: AsyncSession, run_id: int) -> tuple[str, Decimal, Decimal | None] | None:
    """Recompute the run's counters from its items (the truth, so always exact) and finish it
    when every item is done or the budget is spent. Returns (status, cost, budget) afterwards.

    Items never touch the run row themselves: with a hot row shared by every item, each
    commit would wait for the one before it."""
    row = (await session.execute(_REFRESH, {"run_id": run_id})).first()
    return tuple(row) if row else None


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


async def reset_failed_items(session: AsyncSession, run_id: int) -> int:
    stmt = (
        update(RunItem)
        .where(RunItem.run_id == run_id, RunItem.status == "failed")
        .values(status="pending", error=None)
        .returning(RunItem.item_index)
    )
    return len((await session.execute(stmt)).all())


async def items(session: AsyncSession, run_id: int, status: str | None, limit: int) -> list[RunItem]:
    stmt = select(RunItem).where(RunItem.run_id == run_id)
    if status:
        stmt = stmt.where(RunItem.status == status)
    return list((await session.execute(stmt.order_by(RunItem.item_index).limit(limit))).scalars())


# --- rows the pipeline writes ------------------------------------------------------------------


async def existing_samples(session: AsyncSession, run_id: int, prompt_ids: list[int]) -> set[tuple[int, int]]:
    rows = await session.execute(
        select(Completion.prompt_id, Completion.sample_index).where(
            Completion.run_id == run_id, Completion.prompt_id.in_(prompt_ids)
        )
    )
    return {(p, s) for p, s in rows}


async def insert_completions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(Completion).values(rows).on_conflict_do_nothing())


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


_FLAG = text(
    """
    UPDATE prompt SET
        flag_reasons = CASE WHEN CAST(:code AS text) = ANY(flag_reasons) THEN flag_reasons
                            ELSE array_append(flag_reasons, CAST(:code AS text)) END,
        meta = meta || jsonb_build_object('flag_details', coalesce(meta -> 'flag_details', '{}'::jsonb)
                                          || jsonb_build_object(CAST(:code AS text), CAST(:detail AS text))),
        review_status = CASE WHEN review_status = 'pending' THEN 'needs_review' ELSE review_status END,
        updated_at = now()
    WHERE id = :prompt_id
    """
)


async def flag_prompt(session: AsyncSession, prompt_id: int, code: str, detail: str) -> None:
    """Add a flag (a FlagReason code; the detail goes to meta.flag_details); a pending prompt
    becomes needs_review, a human decision stands."""
    await session.execute(_FLAG, {"prompt_id": prompt_id, "code": str(code), "detail": detail})


async def lock_dataset_prompts(session: AsyncSession, dataset_id: int) -> None:
    """Serialise synthetic inserts per dataset, so near-duplicate checks see each other."""
    await session.execute(text("SELECT pg_advisory_xact_lock(7401, CAST(:d AS integer))"), {"d": dataset_id})


async def prompts_after(session: AsyncSession, dataset_id: int, after_id: int) -> list[tuple[int, str]]:
    rows = await session.execute(
        select(Prompt.id, Prompt.text).where(Prompt.dataset_id == dataset_id, Prompt.id > after_id).order_by(Prompt.id)
    )
    return [tuple(r) for r in rows]


async def insert_prompts(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    stmt = insert(Prompt).values(rows).on_conflict_do_nothing().returning(Prompt.id)
    return [r[0] for r in await session.execute(stmt)]


async def sample_prompt_texts(session: AsyncSession, dataset_id: int, n: int, salt: str) -> list[str]:
    """n of the dataset's prompts, a deterministic pick per salt."""
    if n <= 0:
        return []
    stmt = (
        select(Prompt.text)
        .where(Prompt.dataset_id == dataset_id, Prompt.review_status != "rejected")
        .order_by(func.md5(func.concat(Prompt.id, salt)))
        .limit(n)
    )
    return list((await session.execute(stmt)).scalars())
