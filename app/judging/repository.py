"""The SQL judge runs need: which prompts have something to rank, their candidates, the ranking insert,
the flags on completions that address the judge, the canary gate's lock and report, the run's figures."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Prompt, RankerKind, Ranking, ReviewStatus, Run, RunStatus

_GATE_LOCK = 16016  # advisory lock namespace: a judge run's canary gate


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


_FLAG_COMPLETION = text(
    """
    UPDATE completion SET
        flag_reasons = CASE WHEN CAST(:code AS text) = ANY(flag_reasons) THEN flag_reasons
                            ELSE array_append(flag_reasons, CAST(:code AS text)) END,
        meta = meta || jsonb_build_object(
            'flag_details', coalesce(meta -> 'flag_details', '{}'::jsonb) || jsonb_build_object(CAST(:code AS text), CAST(:detail AS text)),
            CAST(:code AS text), CAST(:evidence AS jsonb)),
        review_status = CASE WHEN review_status = 'pending' THEN 'needs_review' ELSE review_status END,
        updated_at = now()
    WHERE id = :completion_id
    """
)


async def flag_completion(session: AsyncSession, completion_id: int, code: str, detail: str, evidence: dict[str, Any]) -> None:
    """Add a flag to a completion: the detail to meta.flag_details, the evidence (span, quote,
    detector) to meta[code]; a pending completion becomes needs_review, a human decision stands."""
    await session.execute(
        _FLAG_COMPLETION,
        {"completion_id": completion_id, "code": str(code), "detail": detail, "evidence": json.dumps(evidence)},
    )


async def lock_run_for_gate(session: AsyncSession, run_id: int) -> tuple[str, str | None, dict[str, Any]]:
    """Hold the run's gate lock for this transaction; the run's status, error and result."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:ns, CAST(:run_id AS integer))"), {"ns": _GATE_LOCK, "run_id": run_id})
    row = (await session.execute(select(Run.status, Run.error, Run.result).where(Run.id == run_id))).one()
    return row[0], row[1], dict(row[2] or {})


async def set_run_result(session: AsyncSession, run_id: int, key: str, value: Any) -> None:
    await session.execute(
        text("UPDATE run SET result = result || jsonb_build_object(CAST(:key AS text), CAST(:value AS jsonb)) WHERE id = :run_id"),
        {"run_id": run_id, "key": key, "value": json.dumps(value)},
    )


async def stop_run(session: AsyncSession, run_id: int, reason: str) -> None:
    """A running run ends as failed with the reason (a cancelled or finished one stays as it is)."""
    await session.execute(
        update(Run).where(Run.id == run_id, Run.status == RunStatus.running.value)
        .values(status=RunStatus.failed.value, error=reason, finished_at=func.now())
    )


_RUN_RANKINGS = text(
    """
    SELECT r.ranks, r.flag_reasons,
           ARRAY(SELECT length(coalesce(c.edited_text, c.text)) FROM unnest(r.completion_ids) WITH ORDINALITY AS u(id, n)
                 JOIN completion c ON c.id = u.id ORDER BY u.n) AS lengths
    FROM ranking r WHERE r.run_id = :run_id
    """
)


async def run_rankings(session: AsyncSession, run_id: int) -> list[tuple[list[int], list[str], list[int]]]:
    """(ranks, flags, candidate lengths in characters) of each ranking the run stored."""
    return [tuple(r) for r in await session.execute(_RUN_RANKINGS, {"run_id": run_id})]
