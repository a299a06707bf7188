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

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
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


class RateLimit:
    """At most `rate` (e.g. "600/minute", the `limits` notation) API requests per key, counted in
    this process with a moving window; over it, 429 with Retry-After. The key is the bearer token
    (hashed, so a wrong key is limited too), or the client address when there is none.

    In memory by design: it answers before any database round trip (a flood of requests must not
    become a flood of queries) and holds one window per key. Several API processes each allow
    the rate; put a proxy's limit in front for one shared limit."""

    def __init__(self, app: ASGIApp, rate: str, prefix: str = "/api/"):
        self.app, self.item, self.prefix = app, parse(rate), prefix
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

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
        who = self.identity(scope)
        if not self.limiter.hit(self.item, who):
            reset = self.limiter.get_window_stats(self.item, who).reset_time
            wait = max(1, math.ceil(reset - time.time()))
            message = f"too many requests: at most {self.item} per key; retry in {wait} s"
            return await _send_json(
                send, 429, error_body("rate_limited", message, {"retry_after_s": wait}), [(b"retry-after", str(wait).encode())]
            )
        await self.app(scope, receive, send)
