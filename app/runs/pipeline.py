"""What a run's jobs do: plan the items, then work through chunks of them.

A job carries ids only and reloads its rows. Each item is finished in its own transaction
whose first statement moves it from pending to done|failed; a second execution of the same
job (a retry after a crash, a duplicate) finds nothing pending and writes nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.llm import ChatResult
from app.llm import cache as llm_cache
from app.models import Dataset, Run, RunKind, RunStatus
from app.runs import repository as repo

if TYPE_CHECKING:
    from app.worker import Runtime

log = logging.getLogger(__name__)


@dataclass
class Item:
    index: int
    prompt_id: int | None
    prompt_text: str | None


@dataclass
class ItemOutcome:
    """The result of working one item: usage, what went wrong, and how to write its rows."""

    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    result: dict[str, Any] = field(default_factory=dict)
    cache_rows: list[tuple[bytes, str, dict[str, Any]]] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)
    write: Callable[[AsyncSession], Awaitable[None]] | None = None

    def add(self, r: ChatResult, *, cacheable: bool = True) -> None:
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cost += r.cost
        if cacheable and not r.cached:
            self.cache_rows.append(r.cache_row())


class Handler(Protocol):
    async def prepare(self, rt: Runtime, run: Run, dataset: Dataset, items: list[Item]) -> Any: ...

    async def process(self, rt: Runtime, ctx: Any, item: Item) -> ItemOutcome: ...


def handler_for(kind: str) -> Handler:
    from app.generation.service import GenerateHandler
    from app.judging.service import JudgeHandler
    from app.synth.service import SynthHandler

    return {RunKind.generate: GenerateHandler, RunKind.judge: JudgeHandler, RunKind.synth: SynthHandler}[kind]()


async def plan_run(rt: Runtime, run_id: int) -> list[int]:
    """Create the run's items (once), mark it running; the chunk starts still to do."""
    async with rt.sessions() as session, session.begin():
        run = await repo.get(session, run_id, for_update=True)
        if run is None or run.status not in repo.ACTIVE:
            return []
        counts = await repo.count_items(session, run_id)
        if not counts:
            p = run.params
            if run.kind == RunKind.synth and p.get("mode", "self_instruct") == "self_instruct":
                calls = -(-p["num_prompts"] // p["per_call"])
                await repo.create_numbered_items(session, run_id, calls)
            else:
                # a judge run covers the prompts that have something to rank
                await repo.create_prompt_items(
                    session, run, p.get("prompts") or {},
                    with_completions=run.kind == RunKind.judge, of_run=p.get("source_run_id"),
                )
            counts = await repo.count_items(session, run_id)
        total = sum(counts.values())
        await repo.set_started(session, run, total)
        if not counts.get("pending"):
            # nothing (left) to do: close the run through the same rule the items use
            await repo.refresh_counters(session, run_id)
            return []
        return await repo.pending_chunks(session, run_id, rt.settings.run_chunk_size)


async def finish_items(rt: Runtime, run_id: int, batch: list[tuple[Item, ItemOutcome]]) -> None:
    """Write finished items' rows in one transaction, leaving out any item another execution
    of the job already finished."""
    async with rt.sessions() as session, session.begin():
        claimed = await repo.claim_items(session, run_id, [
            {"idx": item.index, "status": "failed" if o.error else "done", "error": o.error,
             "pt": o.prompt_tokens, "ct": o.completion_tokens, "cost": o.cost, "result": o.result}
            for item, o in batch
        ])
        mine = [(item, o) for item, o in batch if item.index in claimed]
        await repo.insert_completions(session, [row for _, o in mine for row in o.completions])
        for item, o in mine:
            if o.write is not None:
                before = dict(o.result)
                await o.write(session)
                if o.result != before:  # what the write found out (e.g. duplicates dropped)
                    await repo.set_item_result(session, run_id, item.index, o.result)
        await llm_cache.store(session, [row for _, o in mine for row in o.cache_rows])


class RunMonitor:
    """A run's status as this process sees it. Its counters are recomputed from the items at
    most every `interval` seconds however many jobs ask, and at once when this process's own
    spending since then reaches the budget; that refresh is what finishes a run or stops it at
    its budget (other processes' spending shows at their next refresh)."""

    def __init__(self, sessions, interval: float):
        self.sessions, self.interval = sessions, interval
        self._seen: dict[int, tuple[float, str | None, Decimal, Decimal | None]] = {}
        self._spent: dict[int, Decimal] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def spent(self, run_id: int, cost: Decimal) -> None:
        self._spent[run_id] = self._spent.get(run_id, Decimal(0)) + cost

    def _over_budget(self, run_id: int) -> bool:
        _, status, cost, budget = self._seen.get(run_id, (0.0, None, Decimal(0), None))
        return budget is not None and cost + self._spent.get(run_id, Decimal(0)) >= budget

    def saw(self, run: Run) -> None:
        """The run row as just read (a resumed run is running again, maybe with a new budget)."""
        at = self._seen.get(run.id, (0.0,))[0]
        self._seen[run.id] = (at, run.status, run.cost, run.budget)

    async def status(self, run_id: int, *, fresh: bool = False) -> str | None:
        lock = self._locks.setdefault(run_id, asyncio.Lock())
        async with lock:
            at, status, _, _ = self._seen.get(run_id, (0.0, None, Decimal(0), None))
            if fresh or self._over_budget(run_id) or time.monotonic() - at >= self.interval:
                self._spent[run_id] = Decimal(0)  # what was committed before now is in the sums
                async with self.sessions() as session, session.begin():
                    row = await repo.refresh_counters(session, run_id)
                status, cost, budget = row if row else (None, Decimal(0), None)
                self._seen[run_id] = (time.monotonic(), status, cost, budget)
                log.debug("run %s refreshed: %s, cost %s of %s", run_id, status, cost, budget)
            return status


async def process_chunk(rt: Runtime, run_id: int, lo: int, hi: int) -> None:
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
    handler = handler_for(run.kind)
    ctx = await handler.prepare(rt, run, dataset, items)

    # group commit: whoever takes the lock writes every item finished so far, so under load
    # many items share a transaction and under light load none waits
    finished: list[tuple[Item, ItemOutcome]] = []
    write_lock = asyncio.Lock()

    async def work(item: Item) -> None:
        finished.append((item, await handler.process(rt, ctx, item)))
        async with write_lock:
            if finished:
                batch = finished.copy()
                finished.clear()
                await finish_items(rt, run_id, batch)
                rt.monitor.spent(run_id, sum((o.cost for _, o in batch), Decimal(0)))
        if await rt.monitor.status(run_id) != RunStatus.running:
            for t in tasks:  # out of budget or cancelled: stop asking the LLM
                if t is not asyncio.current_task():
                    t.cancel()

    tasks = [asyncio.create_task(work(i)) for i in items]
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
        for t in tasks:
            t.cancel()
    # whoever finishes the last item sees every commit before its own, and closes the run
    await rt.monitor.status(run_id, fresh=True)
