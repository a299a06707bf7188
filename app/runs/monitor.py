"""A run's status as one process sees it, refreshed from the items at a bounded rate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal

from app.models import Run, RunStatus
from app.runs import repository as repo

log = logging.getLogger(__name__)


class RunMonitor:
    """A run's status as this process sees it. Its counters are recomputed from the items at
    most every `interval` seconds however many jobs ask, and at once when this process's own
    spending since then reaches the budget; that refresh is what finishes a run or stops it at
    its budget (other processes' spending shows at their next refresh).

    A run with a budget also reserves before it calls: an item starts only while the items in
    flight in this process, at the mean cost of the items it finished so far, fit in what is left
    of the budget (the first item goes alone, to learn that mean). So a run stops near its
    budget however slowly the refreshes come, instead of with every queued call spent past it."""

    def __init__(self, sessions, interval: float):
        self.sessions, self.interval = sessions, interval
        self._seen: dict[int, tuple[float, str | None, Decimal, Decimal | None]] = {}
        self._spent: dict[int, Decimal] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._inflight: dict[int, int] = {}
        self._finished: dict[int, tuple[int, Decimal]] = {}  # items this process finished, and their cost
        self._room: dict[int, asyncio.Event] = {}  # set when an item gives its room back
        self._on_stop: dict[int, set[Callable[[], None]]] = {}

    def on_stop(self, run_id: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` as soon as any job of this process sees the run no longer running
        (budget, cancel): every chunk stops asking the LLM at once, not at its next poll.
        Returns the function that unregisters it."""
        callbacks = self._on_stop.setdefault(run_id, set())
        callbacks.add(callback)
        return lambda: callbacks.discard(callback)

    def spent(self, run_id: int, cost: Decimal) -> None:
        self._spent[run_id] = self._spent.get(run_id, Decimal(0)) + cost

    def _fits(self, run_id: int) -> bool:
        _, _, cost, budget = self._seen.get(run_id, (0.0, None, Decimal(0), None))
        inflight = self._inflight.get(run_id, 0)
        if budget is None or inflight == 0:
            return True
        n, total = self._finished.get(run_id, (0, Decimal(0)))
        if n == 0:
            return False  # the first item's cost is not known yet
        left = budget - (cost or Decimal(0)) - self._spent.get(run_id, Decimal(0))
        return (inflight + 1) * (total / n) <= left

    async def reserve(self, run_id: int) -> bool:
        """Wait until one more item fits the budget (see the class); False once the run stops."""
        while True:
            if await self.status(run_id) != "running":
                return False
            if self._fits(run_id):  # no await between the check and the count: one item takes the room
                self._inflight[run_id] = self._inflight.get(run_id, 0) + 1
                return True
            room = self._room.setdefault(run_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):  # other processes' spending shows at a refresh
                await asyncio.wait_for(room.wait(), timeout=self.interval)

    def release(self, run_id: int, cost: Decimal | None) -> None:
        """An item `reserve` let in is over (`cost`: what it spent; None if it never finished).
        Synchronous, so that a cancelled item always gives its room back."""
        self._inflight[run_id] = max(0, self._inflight.get(run_id, 0) - 1)
        if cost is not None:
            n, total = self._finished.get(run_id, (0, Decimal(0)))
            self._finished[run_id] = (n + 1, total + cost)
        room = self._room.pop(run_id, None)
        if room is not None:
            room.set()

    def _over_budget(self, run_id: int) -> bool:
        _, status, cost, budget = self._seen.get(run_id, (0.0, None, Decimal(0), None))
        return budget is not None and (cost or Decimal(0)) + self._spent.get(run_id, Decimal(0)) >= budget

    def saw(self, run: Run) -> None:
        """The run row as just read (a resumed run is running again, maybe with a new budget)."""
        at = self._seen.get(run.id, (0.0,))[0]
        # the dataset's cap shows at the first refresh, which comes at once for a new run (at = 0)
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
            if status != RunStatus.running:
                for callback in list(self._on_stop.get(run_id, ())):
                    callback()
            return status
