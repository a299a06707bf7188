"""The job worker: procrastinate over the same Postgres, in the `serve` process or alone
(`rlhf-forge worker --concurrency N`, on any number of machines).

Every background job is a task here: a run's planning and chunks (the run engine, `app/runs/`,
working each kind through the registry `app/run_kinds.KINDS`) and an export's rendering. Jobs
carry ids only and are deferred through `app.jobs.Jobs`; `Runtime` (settings, engine, LLM
clients) and the kinds are handed to them through the worker's context.

A worker that dies (SIGKILL, lost machine) stops sending heartbeats; any other worker then puts
its running jobs back in the queue, and since finishing an item is idempotent (and a written
export is left alone), the run completes with exactly the rows it would have had.

A database outage stops no worker for good: procrastinate's own worker ends when its database
goes away (a failed fetch raises, a failed heartbeat stops it quietly), so `run_worker` starts it
again with backoff for as long as it takes; jobs that failed for want of the database are
retried without limit, other failures `job_max_attempts` times, after which a run's items fail
saying why (the run does not stay `running`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import procrastinate
import psycopg
from procrastinate import PsycopgConnector
from procrastinate.exceptions import ConnectorException, JobAborted
from procrastinate.retry import RetryDecision
from procrastinate.worker import Worker
from psycopg_pool import PoolTimeout
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from tenacity import (
    AsyncRetrying, before_sleep_log, retry_if_exception, retry_if_exception_type, retry_if_result, stop_never,
    wait_exponential_jitter,
)

from app import db, metrics
from app.config import Settings
from app.errors import describe
from app.exports import tasks as export_tasks
from app.jobs import EXPORTS_QUEUE, PROCESS_CHUNK, RENDER_EXPORT, RUNS_QUEUE, START_RUN, Jobs
from app.llm import LLMPool
from app.run_kinds import KINDS
from app.runs import pipeline
from app.runs.protocol import Handler, Runtime

__all__ = [
    "JobRetry", "Runtime", "WorkerState", "conninfo", "defer_start", "is_outage", "jobs_lifespan", "make_job_app", "run_worker",
    "serve_worker",
]

log = logging.getLogger(__name__)


def conninfo(url: str) -> str:
    """procrastinate's psycopg pool wants a plain libpq URL, not SQLAlchemy's `+psycopg`."""
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def is_outage(exc: BaseException) -> bool:
    """The database, or the way to it, is away (not a query it refused): worth waiting out."""
    orig = getattr(exc, "orig", None) or getattr(exc, "__cause__", None)
    if isinstance(exc, psycopg.errors.QueryCanceled) or isinstance(orig, psycopg.errors.QueryCanceled):
        return False  # a statement_timeout: the query, not the database
    return isinstance(exc, (
        sa_exc.OperationalError, sa_exc.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout,
        ConnectorException, ConnectionError,
    ))


class JobRetry(procrastinate.BaseRetryStrategy):
    """A job that failed for want of the database (or was stopped by a shutdown) is retried for as
    long as it takes (backoff capped at `cap_s`); any other failure `max_attempts` times in all,
    waits doubling."""

    def __init__(self, max_attempts: int, wait_s: float, cap_s: float):
        self.max_attempts, self.wait_s, self.cap_s = max_attempts, wait_s, cap_s

    def get_retry_decision(self, *, exception: BaseException, job: procrastinate.jobs.Job) -> RetryDecision | None:
        # an outage, or a job stopped by its worker's shutdown, is not the job's fault: retried whatever its attempts
        not_its_fault = is_outage(exception) or isinstance(exception, (asyncio.CancelledError, JobAborted))
        if not not_its_fault and job.attempts + 1 >= self.max_attempts:
            return None
        return RetryDecision(retry_in={"seconds": min(self.cap_s, self.wait_s * 2 ** min(job.attempts, 16))})

    def gives_up(self, exception: BaseException, job: procrastinate.jobs.Job) -> bool:
        return self.get_retry_decision(exception=exception, job=job) is None


def _gave_up(context: procrastinate.JobContext, exc: BaseException) -> str:
    return f"job {context.job.task_name} gave up after {context.job.attempts + 1} attempt(s): {describe(exc)}"[:2000]


def make_job_app(url: str, *, pool_size: int = 4, settings: Settings | None = None) -> procrastinate.App:
    s = settings or Settings.model_construct()  # the defaults (a caller without settings: a CLI command, a test)
    app = procrastinate.App(
        connector=PsycopgConnector(
            conninfo=conninfo(url), min_size=1, max_size=pool_size, kwargs={"application_name": "rlhf-forge-jobs"},
            # the pool's reconnect backoff doubles without bound; past this it starts over, so a
            # database back after a long outage is found within seconds, not half a minute
            reconnect_timeout=max(5.0, s.worker_restart_max_s),
        )
    )
    # LLM failures are handled per item; what reaches here is the database or a bug
    retry = JobRetry(s.job_max_attempts, s.job_retry_wait_s, s.worker_restart_max_s)

    async def start_run(context: procrastinate.JobContext, run_id: int) -> None:
        rt: Runtime = context.additional_context["runtime"]
        metrics.run_id.set(run_id)  # every log line of this job names its run
        try:
            chunks = await pipeline.plan_run(rt, context.additional_context["kinds"], run_id)
            jobs = Jobs(context.app)
            for lo in chunks:
                await jobs.defer_chunk(run_id, lo, lo + rt.settings.run_chunk_size)
        except Exception as exc:
            _noticed(context, exc)
            if retry.gives_up(exc, context.job):
                await pipeline.give_up_run(rt, run_id, _gave_up(context, exc))
            raise

    async def process_chunk(context: procrastinate.JobContext, run_id: int, lo: int, hi: int) -> None:
        rt: Runtime = context.additional_context["runtime"]
        metrics.run_id.set(run_id)
        try:
            await pipeline.process_chunk(rt, context.additional_context["kinds"], run_id, lo, hi)
        except Exception as exc:
            _noticed(context, exc)
            if retry.gives_up(exc, context.job):
                await pipeline.give_up_chunk(rt, run_id, lo, hi, _gave_up(context, exc))
            raise

    async def render_export(context: procrastinate.JobContext, export_id: int) -> None:
        rt: Runtime = context.additional_context["runtime"]
        try:
            await export_tasks.render(export_id, sessions=rt.sessions, settings=rt.settings)
        except Exception as exc:
            _noticed(context, exc)
            if retry.gives_up(exc, context.job):
                await export_tasks.give_up(export_id, rt.sessions, _gave_up(context, exc))
            else:
                await export_tasks.retry_later(export_id, rt.sessions, describe(exc))
            raise

    app.task(name=START_RUN, queue=RUNS_QUEUE, pass_context=True, retry=retry)(start_run)
    app.task(name=PROCESS_CHUNK, queue=RUNS_QUEUE, pass_context=True, retry=retry)(process_chunk)
    app.task(name=RENDER_EXPORT, queue=EXPORTS_QUEUE, pass_context=True, retry=retry)(render_export)
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


@dataclass
class WorkerState:
    """What `/readyz` reads of a worker (up while procrastinate's worker runs), and the signal
    its jobs raise when the database went away under them (`outage`)."""

    up: bool = False
    restarts: int = 0
    last_error: str | None = None
    outage: asyncio.Event = field(default_factory=asyncio.Event)


def _noticed(context: procrastinate.JobContext, exc: BaseException) -> None:
    """A job that lost the database: its status cannot be saved, and a live worker's jobs are
    never re-queued, so the worker is to restart (see `_run_once`)."""
    state = context.additional_context.get("worker_state")
    if state is not None and is_outage(exc):
        state.outage.set()


async def _run_once(job_app: procrastinate.App, state: WorkerState, **options) -> None:
    """One life of procrastinate's worker: until it stops on its own (its database went away:
    a failed fetch raises, a failed heartbeat stops it quietly), or until one of its jobs lost
    the database. Then it is stopped, which unregisters it when it can; either way its jobs
    left `doing` become a dead worker's, and `_requeue_stalled` puts them back."""
    worker = Worker(app=job_app, **options)
    state.outage.clear()
    runner = asyncio.create_task(worker.run(), name="procrastinate worker")
    outage = asyncio.create_task(state.outage.wait())
    try:
        await asyncio.wait({runner, outage}, return_when=asyncio.FIRST_COMPLETED)
        if outage.done() and not runner.done():
            log.warning("a job lost the database: restarting the worker so that its jobs are re-queued")
            worker.stop()
        await runner
    finally:
        outage.cancel()
        if not runner.done():  # cancelled from outside: procrastinate shuts down gracefully
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner


async def run_worker(
    job_app: procrastinate.App, runtime: Runtime, *, concurrency: int, kinds: Mapping[str, Handler] = KINDS,
    state: WorkerState | None = None,
) -> None:
    """Work until cancelled, through any database outage: procrastinate's worker, which ends
    when its database goes away, is started again with backoff (each restart logged). Only
    cancelling this task ends it (`serve_worker` does on SIGTERM/SIGINT)."""
    s = runtime.settings
    state = state if state is not None else WorkerState()
    requeue = asyncio.create_task(_requeue_stalled(job_app, s))

    def restarting(retry_state) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        state.up, state.restarts = False, state.restarts + 1
        state.last_error = f"{type(exc).__name__}: {exc}" if exc else "the worker stopped (its database went away)"
        log.warning(
            "job worker stopped (%s); restart %d in %.1f s", state.last_error, state.restarts,
            retry_state.next_action.sleep if retry_state.next_action else 0,
        )

    supervised = AsyncRetrying(
        retry=retry_if_exception_type(Exception) | retry_if_result(lambda _: True),
        wait=wait_exponential_jitter(multiplier=0.5, max=s.worker_restart_max_s, jitter=0.5),
        stop=stop_never,
        before_sleep=restarting,
        reraise=True,
    )
    try:
        async for attempt in supervised:
            with attempt:
                state.up = True
                await _run_once(
                    job_app, state,
                    concurrency=concurrency,
                    queues=s.worker_queues or None,
                    name=f"{socket.gethostname()}-{id(runtime):x}",
                    additional_context={"runtime": runtime, "kinds": kinds, "worker_state": state},
                    install_signal_handlers=False,  # stopping is cancelling this task; see serve_worker
                    update_heartbeat_interval=s.worker_heartbeat_s,
                    stalled_worker_timeout=s.worker_stalled_after_s,
                    delete_jobs="successful",
                    # a retried job waits in the queue until its time; notice it about as soon
                    fetch_job_polling_interval=min(5.0, s.worker_stalled_after_s / 2),
                    shutdown_graceful_timeout=5.0,
                )
    finally:
        state.up = False
        requeue.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await requeue


@contextlib.asynccontextmanager
async def jobs_lifespan(state, settings: Settings, url: str) -> AsyncIterator[None]:
    """For the API process: the job queue to defer to (`state.jobs`, a `Jobs`), and a worker
    when worker_in_process."""
    job_app = make_job_app(url, settings=settings)
    await job_app.open_async()
    state.jobs = Jobs(job_app)
    state.llm = LLMPool(settings, state.engine)
    state.worker = None
    worker = None
    if settings.worker_in_process:
        runtime = Runtime(settings, state.engine, db.session_factory(state.engine), state.llm)
        state.worker = WorkerState()
        worker = asyncio.create_task(
            run_worker(job_app, runtime, concurrency=settings.worker_concurrency, state=state.worker)
        )
    try:
        yield
    finally:
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        await state.llm.close()
        await job_app.close_async()


async def _wait_for_database(settings: Settings) -> None:
    """A worker started while its database is away (both restarting) waits for it, not exits."""
    if not settings.database_url:
        return  # the embedded Postgres: started by this process
    waiting = AsyncRetrying(
        retry=retry_if_exception(is_outage), stop=stop_never, before_sleep=before_sleep_log(log, logging.WARNING),
        wait=wait_exponential_jitter(multiplier=0.5, max=settings.worker_restart_max_s, jitter=0.5),
    )
    async for attempt in waiting:
        with attempt:
            await asyncio.to_thread(db.current_revisions, settings.database_url)


async def serve_worker(settings: Settings, concurrency: int) -> None:
    """`rlhf-forge worker`: a worker process of its own."""
    await _wait_for_database(settings)
    async with db.open_database(settings) as database:
        llm = LLMPool(settings, database.engine)
        job_app = make_job_app(database.url, settings=settings)
        try:
            async with job_app.open_async():
                runtime = Runtime(settings, database.engine, database.sessions, llm)
                log.info("worker started, concurrency %d", concurrency)
                work = asyncio.create_task(run_worker(job_app, runtime, concurrency=concurrency))
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, work.cancel)
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                log.info("worker stopped")
        finally:
            await llm.close()
