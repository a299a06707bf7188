"""The job worker: procrastinate over the same Postgres, in the `serve` process or alone
(`rlhf-forge worker --concurrency N`, on any number of machines).

Every background job is a task here: a run's planning and chunks (the run engine, `app/runs/`,
working each kind through the registry `app/run_kinds.KINDS`) and an export's rendering. Jobs
carry ids only and are deferred through `app.jobs.Jobs`; `Runtime` (settings, engine, LLM
clients) and the kinds are handed to them through the worker's context.

A worker that dies (SIGKILL, lost machine) stops sending heartbeats; any other worker then puts
its running jobs back in the queue, and since finishing an item is idempotent (and a written
export is left alone), the run completes with exactly the rows it would have had."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Mapping

import procrastinate
from procrastinate import PsycopgConnector
from sqlalchemy.engine import make_url

from app import db, metrics
from app.config import Settings
from app.exports import tasks as export_tasks
from app.jobs import EXPORTS_QUEUE, PROCESS_CHUNK, RENDER_EXPORT, RUNS_QUEUE, START_RUN, Jobs
from app.llm import LLMPool
from app.run_kinds import KINDS
from app.runs import pipeline
from app.runs.protocol import Handler, Runtime

__all__ = ["Runtime", "conninfo", "defer_start", "jobs_lifespan", "make_job_app", "run_worker", "serve_worker"]

log = logging.getLogger(__name__)


def conninfo(url: str) -> str:
    """procrastinate's psycopg pool wants a plain libpq URL, not SQLAlchemy's `+psycopg`."""
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


async def _start_run(context: procrastinate.JobContext, run_id: int) -> None:
    rt: Runtime = context.additional_context["runtime"]
    metrics.run_id.set(run_id)  # every log line of this job names its run
    chunks = await pipeline.plan_run(rt, context.additional_context["kinds"], run_id)
    size = rt.settings.run_chunk_size
    jobs = Jobs(context.app)
    for lo in chunks:
        await jobs.defer_chunk(run_id, lo, lo + size)


async def _process_chunk(context: procrastinate.JobContext, run_id: int, lo: int, hi: int) -> None:
    metrics.run_id.set(run_id)
    await pipeline.process_chunk(context.additional_context["runtime"], context.additional_context["kinds"], run_id, lo, hi)


async def _render_export(context: procrastinate.JobContext, export_id: int) -> None:
    rt: Runtime = context.additional_context["runtime"]
    await export_tasks.render(export_id, sessions=rt.sessions, settings=rt.settings)


def make_job_app(url: str, *, pool_size: int = 4) -> procrastinate.App:
    app = procrastinate.App(
        connector=PsycopgConnector(conninfo=conninfo(url), min_size=1, max_size=pool_size, kwargs={"application_name": "rlhf-forge-jobs"})
    )
    # unexpected errors (a database blip) retry the job; LLM failures are handled per item
    retry = procrastinate.RetryStrategy(max_attempts=5, exponential_wait=2)
    app.task(name=START_RUN, queue=RUNS_QUEUE, pass_context=True, retry=retry)(_start_run)
    app.task(name=PROCESS_CHUNK, queue=RUNS_QUEUE, pass_context=True, retry=retry)(_process_chunk)
    # an export's failure is recorded on the export (a new version is the way to try again)
    app.task(name=RENDER_EXPORT, queue=EXPORTS_QUEUE, pass_context=True)(_render_export)
    return app


async def defer_start(job_app: procrastinate.App, run_id: int) -> None:
    """Kept for callers holding a procrastinate app; routers use `app.jobs.JobsDep`."""
    await Jobs(job_app).defer_run(run_id)


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


async def run_worker(
    job_app: procrastinate.App, runtime: Runtime, *, concurrency: int, install_signal_handlers: bool = False,
    kinds: Mapping[str, Handler] = KINDS,
) -> None:
    """Work until cancelled (or signalled, when install_signal_handlers)."""
    s = runtime.settings
    requeue = asyncio.create_task(_requeue_stalled(job_app, s))
    try:
        await job_app.run_worker_async(
            concurrency=concurrency,
            queues=s.worker_queues or None,
            name=f"{socket.gethostname()}-{id(runtime):x}",
            additional_context={"runtime": runtime, "kinds": kinds},
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
    """For the API process: the job queue to defer to (`state.jobs`, a `Jobs`), and a worker
    when worker_in_process."""
    job_app = make_job_app(url)
    await job_app.open_async()
    state.jobs = Jobs(job_app)
    state.llm = LLMPool(settings, state.engine)
    worker = None
    if settings.worker_in_process:
        runtime = Runtime(settings, state.engine, db.session_factory(state.engine), state.llm)
        worker = asyncio.create_task(run_worker(job_app, runtime, concurrency=settings.worker_concurrency))
    try:
        yield
    finally:
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        await state.llm.close()
        await job_app.close_async()


async def serve_worker(settings: Settings, concurrency: int) -> None:
    """`rlhf-forge worker`: a worker process of its own."""
    async with db.open_database(settings) as database:
        llm = LLMPool(settings, database.engine)
        job_app = make_job_app(database.url)
        try:
            async with job_app.open_async():
                runtime = Runtime(settings, database.engine, database.sessions, llm)
                log.info("worker started, concurrency %d", concurrency)
                await run_worker(job_app, runtime, concurrency=concurrency, install_signal_handlers=True)
        finally:
            await llm.close()
