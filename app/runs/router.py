"""HTTP only: runs of a dataset, progress by polling and by server-sent events.

The routes are built by `make_router(kinds)`: POST takes any registered kind's request body,
and the engine still imports no kind. (No `from __future__ import annotations` here: FastAPI
must see `create_run`'s body type itself, a local of `make_router`.)"""

import asyncio
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from app.auth.dependencies import ADMIN
from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.jobs import Jobs, JobsDep
from app.models import Run
from app.pagination import KeysetDep, next_cursor
from app.runs import repository as repo
from app.runs import service
from app.runs.dependencies import RunDep
from app.runs.protocol import Kinds
from app.runs.schemas import ResumeRun, RunEstimate, RunItemPublic, RunPublic
from app.schemas import Page

router = APIRouter(tags=["runs"], dependencies=[ADMIN])  # runs spend money: admins only
"""The routes that hold for every kind; `make_router` puts the creating one in front."""


def make_router(kinds: Kinds) -> APIRouter:
    """The runs API for the registered kinds."""
    run_create = kinds.run_create()
    with_kinds = APIRouter()

    @with_kinds.post(
        "/datasets/{dataset_id}/runs", dependencies=[ADMIN], status_code=status.HTTP_201_CREATED, response_model=RunPublic,
        tags=["runs"], responses={200: {"model": RunEstimate, "description": "`dry_run: true`: what the run would cover and cost"}},
    )
    async def create_run(
        body: Annotated[run_create, Body()], dataset: DatasetDep, session: SessionDep,
        settings: SettingsDep, actor: ActorDep, jobs: JobsDep,
    ):
        if body.dry_run:
            estimate = await service.estimate(session, settings, dataset, body, handler=kinds[body.kind])
            return JSONResponse(estimate.model_dump(mode="json"), status_code=200)
        run = await service.create(session, settings, dataset, body, actor, handler=kinds[body.kind])
        await _commit_and_start(session, jobs, run)
        return service.public(run)

    @with_kinds.get("/runs/{run_id}", dependencies=[ADMIN], response_model=RunPublic, tags=["runs"])
    async def get_run(run: RunDep, session: SessionDep):
        return await service.public_with_report(session, run, kinds.get(run.kind))

    with_kinds.include_router(router)
    return with_kinds


async def _commit_and_start(session: AsyncSession, jobs: Jobs, run: Run) -> None:
    # the job reloads the run by id, so it is deferred only once the run is committed
    await session.commit()
    await jobs.defer_run(run.id)


@router.get("/datasets/{dataset_id}/runs", response_model=Page[RunPublic], summary="A dataset's runs, newest first")
async def list_runs(
    dataset: DatasetDep, session: SessionDep, page: KeysetDep,
    kind: Literal["synth", "generate", "judge", "export"] | None = None,
):
    runs = await repo.list_for_dataset(session, dataset.id, kind, page.limit, before_id=page.after_id)
    return Page[RunPublic](data=[service.public(r) for r in runs], next_cursor=next_cursor(runs, page))


@router.get("/runs/{run_id}/items", response_model=Page[RunItemPublic])
async def list_run_items(
    run: RunDep, session: SessionDep, page: KeysetDep,
    status_: Annotated[Literal["pending", "done", "failed"] | None, Query(alias="status")] = None,
):
    items = await repo.items(session, run.id, status_, page.limit, after_index=page.after_id)
    last = str(items[-1].item_index) if len(items) == page.limit else None
    return Page[RunItemPublic](data=[RunItemPublic.model_validate(i) for i in items], next_cursor=last)


@router.post("/runs/{run_id}/cancel", response_model=RunPublic)
async def cancel_run(run: RunDep, session: SessionDep):
    return service.public(await service.cancel(session, run))


@router.post("/runs/{run_id}/resume", response_model=RunPublic)
async def resume_run(run: RunDep, session: SessionDep, jobs: JobsDep, body: Annotated[ResumeRun | None, Body()] = None):
    run = await service.resume(session, run, body or ResumeRun())
    await _commit_and_start(session, jobs, run)
    return service.public(run)


@router.get("/runs/{run_id}/events", summary="Progress as server-sent events until the run ends")
async def run_events(
    request: Request, run: RunDep, interval: Annotated[float, Query(ge=0.1, le=60)] = 1.0,
):
    sessions = request.app.state.sessions
    run_id = run.id

    async def events():
        last = None
        while True:
            async with sessions() as session:
                current = await repo.get(session, run_id)
            if current is None:
                yield {"event": "error", "data": json.dumps({"message": f"run {run_id} was deleted"})}
                return
            payload = service.public(current).model_dump_json()
            if payload != last:
                yield {"event": "progress", "data": payload}
                last = payload
            if current.status in service.TERMINAL:
                yield {"event": "end", "data": json.dumps({"status": current.status})}
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(interval)

    return EventSourceResponse(events(), ping=15)
