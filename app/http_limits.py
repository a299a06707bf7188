"""Limits every request meets before any route runs: a body size checked while the body streams
in, and a rate per API key. Both are pure ASGI middleware, so nothing is buffered or parsed
(not even for a request that will be refused a 401) before the limit has been checked."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body

# the routes that take whole files: their own, larger limit (FORGE_MAX_IMPORT_BYTES)
IMPORT_PATHS = (r"/api/v1/datasets/[^/]+/prompts/import", r"/api/v1/datasets/[^/]+/import")


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes its limit; rendered as 413 in the app's shape."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


async def _send_json(send: Send, status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": raw})


class BodyLimit:
    """Refuse a body over `limit` bytes (`larger` for paths matching its patterns): at once when
    Content-Length says so, else as soon as the bytes received pass it, whatever reads them
    (JSON parsing, multipart parsing, a streaming import)."""

    def __init__(self, app: ASGIApp, limit: int, larger: int | None = None, larger_paths: Iterable[str] = IMPORT_PATHS):
        self.app, self.limit, self.larger = app, limit, larger or limit
        self.larger_paths = re.compile("|".join(f"(?:{p})" for p in larger_paths))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.larger if self.larger_paths.fullmatch(scope["path"]) else self.limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            size = int(declared) if declared.isdigit() else -1
            if size < 0 or size > limit:
                if size >= 0:
                    reason, code, status = f"the request body is {size} bytes; the limit is {limit}", "payload_too_large", 413
                else:
                    reason, code, status = "Content-Length is not a size", "bad_request", 400
                return await _send_json(send, status, error_body(code, reason, {"limit": limit}), [(b"connection", b"close")])
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            message = f"the request body is over the limit of {limit} bytes"
            await _send_json(send, 413, error_body("payload_too_large", message, {"limit": limit}), [(b"connection", b"close")])


RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
PERIOD_S = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def parse_rate(rate: str) -> tuple[int, float]:
    """A rate such as "600/minute" as (600, 60.0)."""
    m = RATE.match(rate)
    if not m or int(m[1]) < 1:
        raise ValueError(f"{rate!r} is not a rate: write COUNT/second|minute|hour|day, e.g. 600/minute")
    return int(m[1]), PERIOD_S[m[2]]


class Gcra:
    """GCRA in memory, the algorithm of app/llm/ratelimit.py: each key holds a theoretical arrival
    time (TAT); a request pushes it forward by period / count and is allowed while the TAT stays
    within one period of now (a burst of `count`). O(1) a request, one float a key, no timer."""

    MAX_KEYS = 100_000

    def __init__(self, count: int, period: float):
        self.interval, self.tolerance = period / count, period - period / count
        self.tat: dict[str, float] = {}

    def hit(self, key: str, now: float) -> float:
        """0 when allowed (and counted), else the seconds until the next request would be."""
        tat = max(self.tat.get(key, now), now)
        wait = tat - now - self.tolerance
        if wait > 0:
            return wait
        self.tat[key] = tat + self.interval
        if len(self.tat) > self.MAX_KEYS:  # forget keys whose TAT has passed: they start afresh anyway
            self.tat = {k: t for k, t in self.tat.items() if t > now}
        return 0.0


class RateLimit:
    """At most `rate` (e.g. "600/minute") API requests per key, in this process; over it, 429 with
    Retry-After. The key is the bearer token (hashed, so a wrong key is limited too), or the
    client address when there is none.

    In memory by design, our own GCRA (the `limits` library's memory storage runs a timer thread
    every 10 ms, which slowed the whole process): it answers before any database round trip (a
    flood of requests must not become a flood of queries). Several API processes each allow the
    rate; put a proxy's limit in front for one shared limit."""

    def __init__(self, app: ASGIApp, rate: str, prefix: str = "/api/"):
        self.app, self.rate, self.prefix = app, rate, prefix
        self.gcra = Gcra(*parse_rate(rate))

    @staticmethod
    def identity(scope: Scope) -> str:
        auth = dict(scope["headers"]).get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return "key:" + hashlib.sha256(auth[7:].strip()).hexdigest()[:32]
        client = scope.get("client")
        return "addr:" + (client[0] if client else "unknown")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        wait = self.gcra.hit(self.identity(scope), time.monotonic())
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            message = f"too many requests: at most {self.rate} per key; retry in {seconds} s"
            body = error_body("rate_limited", message, {"retry_after_s": seconds})
            return await _send_json(send, 429, body, [(b"retry-after", str(seconds).encode())])
        await self.app(scope, receive, send)
