"""HTTP only: runs of a dataset, progress by polling and by server-sent events."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, status
from sse_starlette import EventSourceResponse

from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.runs import repository as repo
from app.runs import service
from app.runs.dependencies import RunDep
from app.runs.schemas import ResumeRun, RunCreate, RunItemPublic, RunPublic
from app.schemas import ListOf
from app.worker import defer_start

router = APIRouter(tags=["runs"])


async def _commit_and_start(request: Request, session, run) -> None:
    # the job reloads the run by id, so it is deferred only once the run is committed
    await session.commit()
    await defer_start(request.app.state.jobs, run.id)


@router.post("/datasets/{dataset_id}/runs", status_code=status.HTTP_201_CREATED, response_model=RunPublic)
async def create_run(
    request: Request, body: Annotated[RunCreate, Body()], dataset: DatasetDep, session: SessionDep,
    settings: SettingsDep, actor: ActorDep,
):
    run = await service.create(session, settings, dataset, body, actor)
    await _commit_and_start(request, session, run)
    return service.public(run)


@router.get("/datasets/{dataset_id}/runs", response_model=ListOf[RunPublic])
async def list_runs(
    dataset: DatasetDep, session: SessionDep,
    kind: Literal["synth", "generate", "judge", "export"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    runs = await repo.list_for_dataset(session, dataset.id, kind, limit)
    return ListOf(data=[service.public(r) for r in runs], count=len(runs))


@router.get("/runs/{run_id}", response_model=RunPublic)
async def get_run(run: RunDep):
    return service.public(run)


@router.get("/runs/{run_id}/items", response_model=ListOf[RunItemPublic])
async def list_run_items(
    run: RunDep, session: SessionDep,
    status_: Annotated[Literal["pending", "done", "failed"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
):
    items = await repo.items(session, run.id, status_, limit)
    return ListOf(data=[RunItemPublic.model_validate(i) for i in items], count=len(items))


@router.post("/runs/{run_id}/cancel", response_model=RunPublic)
async def cancel_run(run: RunDep, session: SessionDep):
    return service.public(await service.cancel(session, run))


@router.post("/runs/{run_id}/resume", response_model=RunPublic)
async def resume_run(request: Request, run: RunDep, session: SessionDep, body: Annotated[ResumeRun | None, Body()] = None):
    run = await service.resume(session, run, body or ResumeRun())
    await _commit_and_start(request, session, run)
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
