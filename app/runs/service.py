"""Run rules. Services flush, never commit: the caller owns the transaction and defers the
run's first job only after the commit that made the run."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, InvalidInput, NotFound
from app.llm.catalog import check_models
from app.llm.cost import call_cost
from app.llm.endpoints import resolve_endpoint
from app.models import Dataset, Run, RunStatus
from app.runs import repository as repo
from app.runs.protocol import Handler
from app.runs.schemas import Progress, ResumeRun, RunEstimate, RunPublic, RunRequest

RESUMABLE = (RunStatus.failed.value, RunStatus.cancelled.value, RunStatus.budget_exhausted.value, RunStatus.succeeded.value)


async def get_or_404(session: AsyncSession, run_id: int) -> Run:
    run = await repo.get(session, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return run


async def create(
    session: AsyncSession, settings: Settings, dataset: Dataset, body: RunRequest, actor: str, *, handler: Handler
) -> Run:
    """A queued run of `handler`'s kind (the registry's handler for `body.kind`)."""
    params = body.model_dump(mode="json", exclude_none=True, exclude={"budget", "dry_run"})
    # refuse now what the job would trip on later: unknown overrides, models the endpoint does not
    # serve, and whatever the kind checks
    endpoint = resolve_endpoint(settings, handler.role, dataset.settings, params.get("llm"))
    await handler.check(session, settings, dataset, body)
    await check_models(endpoint, {endpoint.model, *body.models()}, handler.role)
    run = Run(dataset_id=dataset.id, kind=body.kind, params=params, budget=body.budget, created_by=actor)
    session.add(run)
    await session.flush()
    await session.refresh(run)
    return run


async def estimate(
    session: AsyncSession, settings: Settings, dataset: Dataset, body: RunRequest, *, handler: Handler
) -> RunEstimate:
    """A dry run: the kind counts prompts, requests and tokens; nothing is stored or started."""
    endpoint = resolve_endpoint(settings, handler.role, dataset.settings, body.model_dump(mode="json", exclude_none=True).get("llm"))
    await handler.check(session, settings, dataset, body)
    await check_models(endpoint, {endpoint.model, *body.models()}, handler.role)
    counting = getattr(handler, "estimate", None)
    if counting is None:
        raise InvalidInput(f"a {body.kind} run has no dry run", details={"field": "dry_run"})
    est = await counting(session, settings, dataset, body, endpoint)
    priced = endpoint.model in settings.llm_prices
    return RunEstimate(
        kind=body.kind, model=endpoint.model, prompts=est.prompts, requests=est.requests,
        estimated_prompt_tokens=est.prompt_tokens, estimated_completion_tokens=est.completion_tokens,
        estimated_cost=call_cost(settings.llm_prices, endpoint.model, est.prompt_tokens, est.completion_tokens) if priced else None,
    )


async def cancel(session: AsyncSession, run: Run) -> Run:
    if not await repo.cancel(session, run.id):
        raise Conflict(f"run {run.id} is already {run.status}", details={"status": run.status})
    await session.refresh(run)
    return run


async def resume(session: AsyncSession, run: Run, body: ResumeRun) -> Run:
    """Back to the queue: failed items are tried again, missing rows filled; done ones stay."""
    run = await repo.get(session, run.id, for_update=True)
    if run.status not in RESUMABLE:
        raise Conflict(f"run {run.id} is {run.status}; only a finished run can be resumed", details={"status": run.status})
    if body.budget is not None:
        run.budget = body.budget
    if run.budget is not None and run.cost >= run.budget:
        raise Conflict(
            f"run {run.id} has spent {run.cost} of its budget {run.budget}: resume with a higher budget",
            details={"cost": str(run.cost), "budget": str(run.budget)},
        )
    retried = await repo.reset_failed_items(session, run.id)
    run.failed -= retried
    run.status = RunStatus.queued.value
    run.finished_at = None
    run.error = None
    await session.flush()
    await session.refresh(run)
    return run


def public(run: Run) -> RunPublic:
    out = RunPublic.model_validate(run)
    pending = max(0, run.total - run.done - run.failed)
    finished = run.done + run.failed
    elapsed = rate = eta = None
    if run.started_at is not None:
        end = run.finished_at or datetime.now(UTC)
        elapsed = max(0.0, (end - run.started_at).total_seconds())
        if elapsed > 0 and finished:
            rate = finished / elapsed
            eta = pending / rate if run.status == RunStatus.running else None
    out.progress = Progress(
        pending=pending, fraction=(finished / run.total) if run.total else (1.0 if run.finished_at else 0.0),
        elapsed_s=elapsed, rate_per_s=rate, eta_s=eta,
    )
    return out


TERMINAL = frozenset(s.value for s in RunStatus) - set(repo.ACTIVE)
