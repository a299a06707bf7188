"""The job worker: procrastinate over the same Postgres, in the `serve` process or alone
(`rlhf-forge worker --concurrency N`, on any number of machines).

Jobs carry ids only; `Runtime` (settings, engine, LLM clients) is handed to them through the
worker's context. A worker that dies (SIGKILL, lost machine) stops sending heartbeats; any
other worker then puts its running jobs back in the queue, and since finishing an item is
idempotent, the run completes with exactly the rows it would have had."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import procrastinate
from procrastinate import PsycopgConnector
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.llm import LLMPool

log = logging.getLogger(__name__)

START_RUN = "forge.start_run"
PROCESS_CHUNK = "forge.process_chunk"


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    llm: LLMPool
    # per dataset: the near-duplicate index synthesis keeps in this process
    near_dup: dict[int, Any] = field(default_factory=dict)
    monitor: Any = None

    def __post_init__(self) -> None:
        from app.runs.pipeline import RunMonitor

        self.monitor = self.monitor or RunMonitor(self.sessions, self.settings.run_status_poll_s)


def conninfo(url: str) -> str:
    """procrastinate's psycopg pool wants a plain libpq URL, not SQLAlchemy's `+psycopg`."""
    from sqlalchemy.engine import make_url

    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


async def _start_run(context: procrastinate.JobContext, run_id: int) -> None:
    from app.runs import pipeline

    rt: Runtime = context.additional_context["runtime"]
    chunks = await pipeline.plan_run(rt, run_id)
    size = rt.settings.run_chunk_size
    for lo in chunks:
        # a lock per chunk: a resumed run's job waits for a stopping one on the same items
        # instead of asking the LLM for them a second time
        await context.app.configure_task(PROCESS_CHUNK, lock=f"run:{run_id}:{lo}").defer_async(
            run_id=run_id, lo=lo, hi=lo + size
        )


async def _process_chunk(context: procrastinate.JobContext, run_id: int, lo: int, hi: int) -> None:
    from app.runs import pipeline

    await pipeline.process_chunk(context.additional_context["runtime"], run_id, lo, hi)


def make_job_app(url: str, *, pool_size: int = 4) -> procrastinate.App:
    app = procrastinate.App(
        connector=PsycopgConnector(conninfo=conninfo(url), min_size=1, max_size=pool_size, kwargs={"application_name": "rlhf-forge-jobs"})
    )
    # unexpected errors (a database blip) retry the job; LLM failures are handled per item
    retry = procrastinate.RetryStrategy(max_attempts=5, exponential_wait=2)
    app.task(name=START_RUN, pass_context=True, retry=retry)(_start_run)
    app.task(name=PROCESS_CHUNK, pass_context=True, retry=retry)(_process_chunk)
    return app


async def defer_start(job_app: procrastinate.App, run_id: int) -> None:
    await job_app.configure_task(START_RUN).defer_async(run_id=run_id)


async def _requeue_stalled(job_app: procrastinate.App, settings: Settings) -> None:
    """Put back the running jobs of workers that stopped sending heartbeats."""
    while True:
        await asyncio.sleep(max(0.5, settings.worker_stalled_after_s / 3))
        try:
            stalled = await job_app.job_manager.get_stalled_jobs(seconds_since_heartbeat=settings.worker_stalled_after_s)
            for job in stalled:
                log.warning("re-queueing job %s (%s) of a dead worker", job.id, job.task_name)
                with contextlib.suppress(Exception):  # another worker may have re-queued it first
                    await job_app.job_manager.retry_job(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stalled-job check failed")


async def run_worker(job_app: procrastinate.App, runtime: Runtime, *, concurrency: int, install_signal_handlers: bool = False) -> None:
    """Work until cancelled (or signalled, when install_signal_handlers)."""
    s = runtime.settings
    requeue = asyncio.create_task(_requeue_stalled(job_app, s))
    try:
        await job_app.run_worker_async(
            concurrency=concurrency,
            name=f"{socket.gethostname()}-{id(runtime):x}",
            additional_context={"runtime": runtime},
            install_signal_handlers=install_signal_handlers,
            update_heartbeat_interval=s.worker_heartbeat_s,
            stalled_worker_timeout=s.worker_stalled_after_s,
            delete_jobs="successful",
            fetch_job_polling_interval=5.0,
            shutdown_graceful_timeout=5.0,
        )
    finally:
        requeue.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await requeue


@contextlib.asynccontextmanager
async def jobs_lifespan(state, settings: Settings, url: str) -> AsyncIterator[None]:
    """For the API process: the job queue to defer to, and a worker when worker_in_process."""
    from app import db

    state.jobs = make_job_app(url)
    await state.jobs.open_async()
    state.llm = LLMPool(settings, state.engine)
    worker = None
    if settings.worker_in_process:
        runtime = Runtime(settings, state.engine, db.session_factory(state.engine), state.llm)
        worker = asyncio.create_task(run_worker(state.jobs, runtime, concurrency=settings.worker_concurrency))
    try:
        yield
    finally:
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        await state.llm.close()
        await state.jobs.close_async()


async def serve_worker(settings: Settings, concurrency: int) -> None:
    """`rlhf-forge worker`: a worker process of its own."""
    from app import db

    url, embedded = db.resolve_database_url(settings)
    try:
        db.check_schema(url)
        engine = db.make_engine(url, settings)
        llm = LLMPool(settings, engine)
        job_app = make_job_app(url)
        async with job_app.open_async():
            runtime = Runtime(settings, engine, db.session_factory(engine), llm)
            log.info("worker started, concurrency %d", concurrency)
            await run_worker(job_app, runtime, concurrency=concurrency, install_signal_handlers=True)
        await llm.close()
        await engine.dispose()
    finally:
        if embedded is not None:
            embedded.stop()
