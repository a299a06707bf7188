"""Prometheus metrics (prometheus_client) and the ids every log line carries.

Two sources:
- what this process does, counted as it happens: HTTP requests (latency by route template),
  LLM calls, tokens, cost, retries and errors by endpoint and model, export rows written;
- what the database knows, read at each scrape of `/metrics`: active runs' progress, the job
  queue's depth by status, review decisions, rows of finished exports. Read there so that every
  API process reports the same truth whichever worker did the work.

Logs: a request-id middleware (`X-Request-ID` in, or a new one; echoed on the response) and the
run a job works on are kept in contextvars; `ContextFilter` puts both on every record, and
`configure_logging` writes them (text, or JSON lines with `FORGE_LOG_FORMAT=json`)."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

from fastapi import Request
from prometheus_client import Counter, Gauge, Histogram, generate_latest
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
run_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("run_id", default=None)

HTTP_LATENCY = Histogram(
    "forge_http_request_duration_seconds", "HTTP request latency", ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LLM_CALLS = Counter("forge_llm_calls_total", "LLM calls (cache hits included)", ["endpoint", "model", "outcome"])
LLM_TOKENS = Counter("forge_llm_tokens_total", "Tokens of LLM calls (not cache hits)", ["endpoint", "model", "type"])
LLM_COST = Counter("forge_llm_cost_usd_total", "USD of priced LLM calls (app/llm/prices.py, llm_prices)", ["endpoint", "model"])
LLM_RETRIES = Counter("forge_llm_retries_total", "Attempts beyond the first", ["endpoint", "model"])
LLM_ERRORS = Counter("forge_llm_errors_total", "LLM calls that failed after their attempts", ["endpoint", "model"])
LLM_LATENCY = Histogram("forge_llm_call_duration_seconds", "LLM call latency (the successful attempt)", ["endpoint", "model"])
EXPORT_ROWS_WRITTEN = Counter("forge_export_rows_written_total", "Export rows this process wrote", ["format"])

RUN_ITEMS = Gauge("forge_run_items", "Items of active runs", ["run_id", "kind", "state"])
RUNS = Gauge("forge_runs", "Runs by kind and status", ["kind", "status"])
JOBS = Gauge("forge_jobs", "Job queue depth: procrastinate jobs by queue and status", ["queue", "status"])
REVIEW_EVENTS = Gauge("forge_review_events", "Review actions recorded (a counter kept in the database)", ["action"])
EXPORT_ROWS = Gauge("forge_export_rows", "Rows of finished export versions", ["format"])


@functools.lru_cache(maxsize=1024)
def _llm_children(endpoint: str, model: str) -> tuple:
    """The LLM metrics' children for one (endpoint, model): looked up once, not five times a call."""
    labels = (endpoint, model)
    return (
        LLM_CALLS.labels(*labels, "cached"), LLM_CALLS.labels(*labels, "ok"), LLM_CALLS.labels(*labels, "error"),
        LLM_RETRIES.labels(*labels), LLM_ERRORS.labels(*labels), LLM_TOKENS.labels(*labels, "prompt"),
        LLM_TOKENS.labels(*labels, "completion"), LLM_COST.labels(*labels), LLM_LATENCY.labels(*labels),
    )


def record_llm_call(endpoint: str, model: str, *, ok: bool, cached: bool = False, attempts: int = 1,
                    prompt_tokens: int = 0, completion_tokens: int = 0, cost: Decimal | None = None,
                    latency_ms: int | None = None) -> None:
    """One call to the endpoint NAMED `endpoint` (never its URL: it may carry credentials). A reply
    that holds nothing usable is an error that still spent tokens; an unpriced call adds no cost."""
    n_cached, n_ok, n_error, retries, errors, prompt, completion, usd, latency = _llm_children(endpoint, model)
    (n_cached if cached else (n_ok if ok else n_error)).inc()
    if cached:
        return
    if attempts > 1:
        retries.inc(attempts - 1)
    if not ok:
        errors.inc()
    prompt.inc(prompt_tokens)
    completion.inc(completion_tokens)
    if cost is not None:
        usd.inc(float(cost))
    if ok and latency_ms is not None:
        latency.observe(latency_ms / 1000)


# --- the database's side, read at scrape time -------------------------------------------------

_RUN_PROGRESS = text(
    "SELECT id, kind, total, done, failed FROM run WHERE status IN ('queued', 'running') ORDER BY id DESC LIMIT 200"
)
_RUNS = text("SELECT kind, status, count(*) FROM run GROUP BY 1, 2")
_JOBS = text("SELECT queue_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2")
_REVIEW = text("SELECT action, count(*) FROM review_event GROUP BY 1")
_EXPORT_ROWS = text(
    "SELECT f.value->>'kind', sum((f.value->>'rows')::bigint) FROM export, jsonb_each(export.manifest->'files') AS f "
    "WHERE export.manifest IS NOT NULL GROUP BY 1"
)


async def _read_database(sessions) -> None:
    async with sessions() as session:
        progress = (await session.execute(_RUN_PROGRESS)).all()
        runs = (await session.execute(_RUNS)).all()
        jobs = (await session.execute(_JOBS)).all()
        review = (await session.execute(_REVIEW)).all()
        exports = (await session.execute(_EXPORT_ROWS)).all()
    for gauge in (RUN_ITEMS, RUNS, JOBS, REVIEW_EVENTS, EXPORT_ROWS):
        gauge.clear()  # a finished run, an emptied status: gone, not frozen at the last value
    for rid, kind, total, done, failed in progress:
        for state, n in (("total", total), ("done", done), ("failed", failed), ("pending", max(0, total - done - failed))):
            RUN_ITEMS.labels(str(rid), kind, state).set(n)
    for kind, status, n in runs:
        RUNS.labels(kind, status).set(n)
    for queue, status, n in jobs:
        JOBS.labels(queue, status).set(n)
    for action, n in review:
        REVIEW_EVENTS.labels(action).set(n)
    for fmt, n in exports:
        EXPORT_ROWS.labels(fmt).set(n)


async def exposition(sessions) -> bytes:
    """The Prometheus text: this process's counters and the database's figures, read now."""
    await _read_database(sessions)
    return generate_latest()


# --- requests: latency and ids -----------------------------------------------------------------

class RequestMiddleware:
    """Times each request under its route template and gives it an id (logs, X-Request-ID)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")[:100]
        rid = incoming if incoming.isprintable() and incoming else uuid.uuid4().hex
        token, holder = request_id.set(rid), {}
        matched = _matched.set(holder)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = _template(scope["path"], holder.get("params"))
            HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)
            request_id.reset(token)
            _matched.reset(matched)


_matched: contextvars.ContextVar[dict | None] = contextvars.ContextVar("matched", default=None)


async def note_route(request: Request) -> None:
    """An app-wide dependency: hands the matched path parameters to `RequestMiddleware` (the
    routers copy the scope on their way down, so the middleware does not see the match)."""
    holder = _matched.get()
    if holder is not None:
        holder["params"] = dict(request.path_params)


def _template(path: str, params: dict | None) -> str:
    """`/api/v1/runs/7` -> `/api/v1/runs/{run_id}`: label values stay bounded."""
    if params is None:
        return "unmatched"
    names = {str(v): k for k, v in params.items()}
    return "/".join("{" + names[part] + "}" if part in names else part for part in path.split("/"))


# --- logs -------------------------------------------------------------------------------------

class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.run_id = run_id.get()
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None), "run_id": getattr(record, "run_id", None),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s run=%(run_id)s]: %(message)s"
        ))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
