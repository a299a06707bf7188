"""What a run's jobs do: plan the items, then work through chunks of them.

A job carries ids only and reloads its rows. Each item is finished in its own transaction
whose first statement moves it from pending to done|failed; a second execution of the same
job (a retry after a crash, a duplicate) finds nothing pending and writes nothing."""

from __future__ import annotations

import asyncio
import logging
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
                await repo.create_prompt_items(
                    session, run, p.get("prompts") or {},
                    with_completions_of_run=p.get("source_run_id") if run.kind == RunKind.judge else None,
                )
            counts = await repo.count_items(session, run_id)
        total = sum(counts.values())
        await repo.set_started(session, run, total)
        if not counts.get("pending"):
            # nothing (left) to do: close the run through the same rule the items use
            await repo.advance(session, run_id)
            return []
        return await repo.pending_chunks(session, run_id, rt.settings.run_chunk_size)


async def finish_item(rt: Runtime, run_id: int, item: Item, outcome: ItemOutcome) -> str | None:
    """Write one item's rows and advance the run, in one transaction; the run's status after."""
    ok = outcome.error is None
    async with rt.sessions() as session, session.begin():
        claimed = await repo.claim_item(
            session, run_id, item.index, ok=ok, error=outcome.error, prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens, cost=outcome.cost, result=outcome.result,
        )
        if not claimed:
            return await repo.status(session, run_id)
        if outcome.write is not None:
            await outcome.write(session)
        await llm_cache.store(session, outcome.cache_rows)
        return await repo.advance(
            session, run_id, done=int(ok), failed=int(not ok), prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens, cost=outcome.cost,
        )


async def process_chunk(rt: Runtime, run_id: int, lo: int, hi: int) -> None:
    async with rt.sessions() as session:
        run = await repo.get(session, run_id)
        if run is None or run.status != RunStatus.running:
            return
        dataset = await session.get(Dataset, run.dataset_id)
        rows = await repo.pending_items(session, run_id, lo, hi)
    if not rows:
        return
    items = [Item(*r) for r in rows]
    handler = handler_for(run.kind)
    ctx = await handler.prepare(rt, run, dataset, items)
    stopped = asyncio.Event()

    async def work(item: Item) -> None:
        if stopped.is_set():
            return
        outcome = await handler.process(rt, ctx, item)
        # recorded even if the run stopped meanwhile: the call was paid for
        status = await finish_item(rt, run_id, item, outcome)
        if status != RunStatus.running:
            stopped.set()

    tasks = [asyncio.create_task(work(i)) for i in items]
    try:
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=rt.settings.run_status_poll_s)
            if pending and not stopped.is_set():
                async with rt.sessions() as session:
                    if await repo.status(session, run_id) != RunStatus.running:
                        stopped.set()
            if stopped.is_set():
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
