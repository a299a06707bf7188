"""The one door into the job queue: every background job is deferred through `Jobs`.

A job carries ids only and is deferred after the commit that made its row (the job reloads
it); the tasks themselves are registered by the worker (`app/worker.py`). Routers take `JobsDep`
and never import the worker."""

from __future__ import annotations

from typing import Annotated

import procrastinate
from fastapi import Depends, Request

START_RUN = "forge.start_run"
PROCESS_CHUNK = "forge.process_chunk"
RENDER_EXPORT = "forge.render_export"
# a worker may take one kind of work only (FORGE_WORKER_QUEUES): LLM runs or export rendering
RUNS_QUEUE = "runs"
EXPORTS_QUEUE = "exports"
QUEUES = (RUNS_QUEUE, EXPORTS_QUEUE)


class Jobs:
    """Defers jobs on a procrastinate app whose connector is open."""

    def __init__(self, app: procrastinate.App):
        self.app = app

    async def defer_run(self, run_id: int) -> None:
        """Plan a run (new or resumed), which then defers its chunks."""
        await self.app.configure_task(START_RUN).defer_async(run_id=run_id)

    async def defer_chunk(self, run_id: int, lo: int, hi: int) -> None:
        # a lock per chunk: a resumed run's job waits for a stopping one on the same items
        # instead of asking the LLM for them a second time
        await self.app.configure_task(PROCESS_CHUNK, lock=f"run:{run_id}:{lo}").defer_async(run_id=run_id, lo=lo, hi=hi)

    async def defer_export(self, export_id: int) -> None:
        """Freeze and write an export version; one at a time per export."""
        await self.app.configure_task(RENDER_EXPORT, lock=f"export:{export_id}").defer_async(export_id=export_id)


def get_jobs(request: Request) -> Jobs:
    return request.app.state.jobs


JobsDep = Annotated[Jobs, Depends(get_jobs)]
