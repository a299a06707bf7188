"""What the run engine asks of a run kind, and what it hands one.

A kind (generation, judging, synthesis) is a domain of its own holding a `Handler`; the engine
knows kinds only through the `Kinds` registry it is handed (built in `app/run_kinds.py`), so it
never imports one. The engine owns the rest: items, chunks, group commit, budget, cancel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Protocol, Union

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.llm import ChatResult, LLMCallFailed, LLMPool
from app.llm.cost import add_costs
from app.models import Dataset, Run
from app.runs.monitor import RunMonitor
from app.runs.schemas import RunRequest


@dataclass
class Item:
    index: int
    prompt_id: int | None
    prompt_text: str | None


@dataclass
class ItemOutcome:
    """The result of working one item: usage, what went wrong, and how to write its rows.

    `rows` are written for the whole batch at once by the handler's `write_rows` (one insert
    for many items); `write` is for what one item must do alone (flag its prompt, filter)."""

    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = Decimal(0)  # None: a call's model has no price, so the item's cost is unknown
    result: dict[str, Any] = field(default_factory=dict)
    cache_rows: list[tuple[bytes, str, dict[str, Any]]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    write: Callable[[AsyncSession], Awaitable[None]] | None = None

    def add(self, r: ChatResult, *, cacheable: bool = True) -> None:
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cost = add_costs(self.cost, r.cost)
        if cacheable and not r.cached:
            self.cache_rows.append(r.cache_row())

    def charge(self, failed: LLMCallFailed) -> None:
        """What a failed call still cost (a reply that came back unusable): billed to the item."""
        self.prompt_tokens += failed.prompt_tokens
        self.completion_tokens += failed.completion_tokens
        self.cost = add_costs(self.cost, failed.cost)


@dataclass
class Estimate:
    """What a kind's `estimate` counts for a dry run; the engine prices it."""

    prompts: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def approx_tokens(chars: int) -> int:
    """About four characters a token (English, BPE tokenizers): an estimate, not a count."""
    return (chars + 3) // 4


@dataclass
class Runtime:
    """What a job needs besides its ids: settings, database, LLM clients, this process's monitor."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    llm: LLMPool
    # what a kind keeps in this process between jobs (synthesis: its near-duplicate indexes)
    local: dict[str, Any] = field(default_factory=dict)
    monitor: RunMonitor | None = None

    def __post_init__(self) -> None:
        self.monitor = self.monitor or RunMonitor(self.sessions, self.settings.run_status_poll_s)


class Handler(Protocol):
    """One run kind. `request` is its run request model (a `RunRequest` whose `kind` is a
    Literal of `kind`); `role` the LLM role its endpoint is resolved for."""

    kind: str
    role: str
    request: type[RunRequest]

    async def check(self, session: AsyncSession, settings: Settings, dataset: Dataset, body: RunRequest) -> None:
        """Refuse at creation what the job would trip on later (raise an AppError)."""

    # optional: `models(body) -> set[str]`, the models a request names besides its endpoint's
    # (the engine checks each one's price against the run's budget, and against the endpoint's /v1/models)
    # optional: `endpoints(settings, dataset, body) -> list[Endpoint]`, the endpoints a run calls when
    # not only its role's (each one's model is checked against its /v1/models)
    # optional: `async def estimate(session, settings, dataset, body, endpoint) -> Estimate` for dry runs

    async def create_items(self, session: AsyncSession, run: Run) -> None:
        """The run's items, once (the engine calls this only while the run has none)."""

    async def prepare(self, rt: Runtime, run: Run, dataset: Dataset, items: list[Item]) -> Any:
        """Whatever a chunk's items share (endpoint, template, rows read at once)."""

    async def process(self, rt: Runtime, ctx: Any, item: Item) -> ItemOutcome:
        """One item: ask the LLM, build the rows; write nothing."""

    async def write_rows(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        """The `rows` of a batch's claimed items, in the transaction that claimed them."""

    # optional: async def report(self, session: AsyncSession, run: Run) -> dict[str, Any]
    # figures computed from the run's rows whenever the run is read, merged over `run.result`


class Kinds(Mapping[str, Handler]):
    """The registry: {kind: handler}, and the request body any registered kind accepts."""

    def __init__(self, *handlers: Handler):
        self._by_kind = {h.kind: h for h in handlers}

    def __getitem__(self, kind: str) -> Handler:
        return self._by_kind[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_kind)

    def __len__(self) -> int:
        return len(self._by_kind)

    def run_create(self) -> Any:
        """The POST body: one of the kinds' request models, told apart by `kind`."""
        models = tuple(h.request for h in self._by_kind.values())
        return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 - a Union of a runtime tuple
