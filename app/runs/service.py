"""Run rules. Services flush, never commit: the caller owns the transaction and defers the
run's first job only after the commit that made the run."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, InvalidInput, NotFound
from app.llm.catalog import check_models
from app.llm.cost import call_cost
from app.llm.endpoints import Endpoint, price, resolve_endpoint
from app.models import Dataset, Run, RunKind, RunStatus
from app.runs import budget
from app.runs import repository as repo
from app.runs.protocol import Handler
from app.runs.schemas import Progress, ResumeRun, RunEstimate, RunPublic, RunRequest



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
    budget.bound_prompts(settings, params)
    await _checked(session, settings, dataset, body, params, handler)
    run = Run(dataset_id=dataset.id, kind=body.kind, params=params, budget=body.budget, created_by=actor)
    session.add(run)
    await session.flush()
    await session.refresh(run)
    return run


async def _checked(
    session: AsyncSession, settings: Settings, dataset: Dataset, body: RunRequest, params: dict, handler: Handler,
    *, money: bool = True,
) -> Endpoint:
    """Refuse now what the job would trip on later: unknown endpoints, whatever the kind checks,
    models an endpoint does not serve (its /v1/models), and (`money`) the money rules. The role's endpoint."""
    endpoint = resolve_endpoint(settings, handler.role, dataset.settings, params.get("llm"))
    await handler.check(session, settings, dataset, body)
    extra = getattr(handler, "models", None)  # models the request names besides the endpoint's
    models = {endpoint.model, *(extra(body) if extra else ())}
    called = getattr(handler, "endpoints", None)  # the endpoints a run calls, when not just the role's
    for ep in called(settings, dataset, body) if called else [endpoint]:
        await check_models(ep, models if ep == endpoint else {ep.model}, handler.role)
    if money:
        await budget.check(session, settings, dataset, endpoint, models, body.budget)
    return endpoint


async def estimate(
    session: AsyncSession, settings: Settings, dataset: Dataset, body: RunRequest, *, handler: Handler
) -> RunEstimate:
    """A dry run: the kind counts prompts, requests and tokens; nothing is stored or started."""
    counting = getattr(handler, "estimate", None)
    if counting is None:
        raise InvalidInput(f"a {body.kind} run has no dry run", details={"field": "dry_run"})
    params = body.model_dump(mode="json", exclude_none=True, exclude={"budget", "dry_run"})
    budget.bound_prompts(settings, params)
    # no budget needed to ask what a run would cost
    endpoint = await _checked(session, settings, dataset, body, params, handler, money=False)
    est = await counting(session, settings, dataset, body.model_validate(params), endpoint)
    return RunEstimate(
        kind=body.kind, endpoint=endpoint.name, model=endpoint.model, prompts=est.prompts, requests=est.requests,
        estimated_prompt_tokens=est.prompt_tokens, estimated_completion_tokens=est.completion_tokens,
        estimated_cost=call_cost(price(settings, endpoint), est.prompt_tokens, est.completion_tokens),
    )


async def cancel(session: AsyncSession, run: Run) -> Run:
    if not await repo.cancel(session, run.id):
        raise Conflict(f"run {run.id} is already {run.status}", details={"status": run.status})
    await session.refresh(run)
    return run


async def resume(session: AsyncSession, run: Run, body: ResumeRun) -> Run:
    """Back to the queue: failed items are tried again, missing rows filled; done ones stay.

    Any run can be resumed, a `running` one too: one whose jobs were lost stays `running` with
    items pending, and planning it again defers jobs for exactly those items (a chunk's lock
    and the claim-then-write of its items keep a duplicate job from writing twice)."""
    run = await repo.get(session, run.id, for_update=True)
    if run.kind == RunKind.export.value:
        raise Conflict(f"run {run.id} renders an export; its job retries by itself", details={"kind": run.kind})
    if body.budget is not None:
        if run.cost is None:
            raise InvalidInput(
                f"run {run.id} calls a model without a price (its cost is unknown): a budget cannot be kept",
                details={"field": "budget"},
            )
        run.budget = body.budget
    await budget.check_cap(session, await session.get(Dataset, run.dataset_id))
    if run.budget is not None and run.cost is not None and run.cost >= run.budget:
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


async def public_with_report(session: AsyncSession, run: Run, handler: Handler | None) -> RunPublic:
    """The run as `public` shows it, with its kind's figures (`handler.report`, if it has one) in `result`."""
    out = public(run)
    report = getattr(handler, "report", None)
    if report is not None:
        out.result = {**out.result, **await report(session, run)}
    return out


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
