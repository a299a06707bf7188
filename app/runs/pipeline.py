"""What a run's jobs do: plan the items, then work through chunks of them. The engine is the
same for every kind; what a kind does (its items, its LLM calls, its rows) is its `Handler`,
looked up in the registry the worker hands in (`kinds`).

A job carries ids only and reloads its rows. Each item is finished in its own transaction
whose first statement moves it from pending to done|failed; a second execution of the same
job (a retry after a crash, a duplicate) finds nothing pending and writes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from decimal import Decimal

from sqlalchemy import exc as sa_exc

from app.errors import describe
from app.llm import cache as llm_cache
from app.models import Dataset, RunStatus
from app.runs import repository as repo
from app.runs.protocol import Handler, Item, ItemOutcome, Runtime

log = logging.getLogger(__name__)


async def plan_run(rt: Runtime, kinds: Mapping[str, Handler], run_id: int) -> list[int]:
    """Create the run's items (once, by its kind), mark it running; the chunk starts still to do."""
    async with rt.sessions() as session, session.begin():
        run = await repo.get(session, run_id, for_update=True)
        if run is None or run.status not in repo.ACTIVE:
            return []
        counts = await repo.count_items(session, run_id)
        if not counts:
            await kinds[run.kind].create_items(session, run)
            counts = await repo.count_items(session, run_id)
        total = sum(counts.values())
        await repo.set_started(session, run, total)
        if not counts.get("pending"):
            # nothing (left) to do: close the run through the same rule the items use
            await repo.refresh_counters(session, run_id)
            return []
        return await repo.pending_chunks(session, run_id, rt.settings.run_chunk_size)


async def finish_items(rt: Runtime, handler: Handler, run_id: int, batch: list[tuple[Item, ItemOutcome]]) -> None:
    """Write finished items' rows in one transaction, leaving out any item another execution
    of the job already finished."""
    async with rt.sessions() as session, session.begin():
        claimed = await repo.claim_items(session, run_id, [
            {"idx": item.index, "status": "failed" if o.error else "done", "error": o.error,
             "pt": o.prompt_tokens, "ct": o.completion_tokens, "cost": o.cost, "result": o.result}
            for item, o in batch
        ])
        mine = [(item, o) for item, o in batch if item.index in claimed]
        rows = [row for _, o in mine for row in o.rows]
        if rows:
            await handler.write_rows(session, rows)
        for item, o in mine:
            if o.write is not None:
                before = dict(o.result)
                await o.write(session)
                if o.result != before:  # what the write found out (e.g. duplicates dropped)
                    await repo.set_item_result(session, run_id, item.index, o.result)
        await llm_cache.store(session, [row for _, o in mine for row in o.cache_rows])


# what Postgres (or the driver, before sending) refuses to store: a NUL byte, a lone surrogate,
# a value out of a column's range. A fault of one item's reply, never of the batch or the job.
UNSTORABLE = (sa_exc.DataError, sa_exc.IntegrityError, UnicodeError)


def _why(exc: BaseException) -> str:
    return f"unstorable reply ({describe(exc, 450)})".replace("\x00", "\\x00")


async def finish_batch(rt: Runtime, handler: Handler, run_id: int, batch: list[tuple[Item, ItemOutcome]]) -> None:
    """`finish_items`, and when Postgres refuses the batch, each item alone: an item whose rows
    cannot be stored fails with the reason (its tokens still billed), the others are written."""
    try:
        await finish_items(rt, handler, run_id, batch)
    except UNSTORABLE as exc:
        if len(batch) > 1:
            for pair in batch:
                await finish_batch(rt, handler, run_id, [pair])
            return
        item, o = batch[0]
        log.warning("run %s item %s: %s", run_id, item.index, _why(exc))
        failed = ItemOutcome(error=_why(exc), prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens, cost=o.cost)
        await finish_items(rt, handler, run_id, [(item, failed)])


async def process_chunk(rt: Runtime, kinds: Mapping[str, Handler], run_id: int, lo: int, hi: int) -> None:
    async with rt.sessions() as session:
        run = await repo.get(session, run_id)
        if run is None or run.status != RunStatus.running:
            return
        rt.monitor.saw(run)
        dataset = await session.get(Dataset, run.dataset_id)
        rows = await repo.pending_items(session, run_id, lo, hi)
    if not rows:
        await rt.monitor.status(run_id, fresh=True)
        return
    items = [Item(*r) for r in rows]
    handler = kinds[run.kind]
    ctx = await handler.prepare(rt, run, dataset, items)

    # group commit: whoever takes the lock writes every item finished so far, so under load
    # many items share a transaction and under light load none waits
    finished: list[tuple[Item, ItemOutcome]] = []
    write_lock = asyncio.Lock()

    async def work(item: Item) -> None:
        if not await rt.monitor.reserve(run_id):  # stopped, or cancelled, while waiting for room in the budget
            return
        cost = None
        try:
            outcome = await handler.process(rt, ctx, item)
            finished.append((item, outcome))
            async with write_lock:
                if finished:
                    batch = finished.copy()
                    finished.clear()
                    await finish_batch(rt, handler, run_id, batch)
                    rt.monitor.spent(run_id, sum((o.cost or Decimal(0) for _, o in batch), Decimal(0)))
            cost = outcome.cost or Decimal(0)
        finally:
            rt.monitor.release(run_id, cost)
        await rt.monitor.status(run_id)  # out of budget or cancelled: stop_rest, in every chunk

    def stop_rest() -> None:
        for t in tasks:  # stop asking the LLM
            if t is not asyncio.current_task():
                t.cancel()

    tasks = [asyncio.create_task(work(i)) for i in items]
    unregister = rt.monitor.on_stop(run_id, stop_rest)
    try:
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=rt.settings.run_status_poll_s)
            if pending and await rt.monitor.status(run_id) != RunStatus.running:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
        for t in tasks:  # surface unexpected errors: procrastinate retries the job
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()
    finally:
        unregister()
        for t in tasks:
            t.cancel()
    # whoever finishes the last item sees every commit before its own, and closes the run
    await rt.monitor.status(run_id, fresh=True)


async def give_up_chunk(rt: Runtime, run_id: int, lo: int, hi: int, reason: str) -> None:
    """The chunk's job failed its last attempt: its pending items fail with the reason and the
    run ends (`failed`, saying why) once nothing else is pending, instead of staying `running`."""
    async with rt.sessions() as session, session.begin():
        n = await repo.fail_pending_items(session, run_id, lo, hi, reason)
    log.error("run %s: %d item(s) of chunk %d..%d failed: %s", run_id, n, lo, hi, reason)
    await rt.monitor.status(run_id, fresh=True)


async def give_up_run(rt: Runtime, run_id: int, reason: str) -> None:
    """The run's planning job failed its last attempt: the run fails, saying why."""
    async with rt.sessions() as session, session.begin():
        if await repo.fail_run(session, run_id, reason):
            log.error("run %s failed: %s", run_id, reason)
