"""`Idempotency-Key` on POST: a retried request that creates work (a paid run, an export, an
import) gets the first response back instead of doing the work twice.

One ASGI middleware for every POST under the API, so no route has to remember it:

- a new (caller, key) is claimed with a row whose status is null, the request runs, and a 2xx
  response is stored with the sha256 of the body that made it (anything else frees the key, so
  a corrected request may use it again);
- the same key and the same body: the stored status and body, with `Idempotent-Replayed: true`;
- the same key and another body (or route): 409 `idempotency_key_reused`;
- the same key while the first request is still being answered: 409 `idempotency_in_progress`.

The body is hashed as it streams past (imports can be large), never held in memory whole.
A claim left behind by a process that died mid-request expires after `STALE_AFTER`."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlalchemy import text
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.dependencies import authenticate, bearer_credentials
from app.errors import AppError, error_body

log = logging.getLogger(__name__)

HEADER = "idempotency-key"
STALE_AFTER = "10 minutes"
MAX_STORED = 1_000_000  # bytes of response kept for a replay; larger responses free the key

_CLAIM = text(
    """
    WITH stale AS (
        DELETE FROM idempotency_key WHERE actor = :actor AND key = :key AND status IS NULL
          AND created_at < now() - CAST(:stale AS interval)
    )
    INSERT INTO idempotency_key (actor, key, method, route) VALUES (:actor, :key, :method, :route)
    ON CONFLICT DO NOTHING RETURNING key
    """
)
_FIND = text("SELECT route, body_sha256, status, response, content_type FROM idempotency_key WHERE actor = :actor AND key = :key")
_STORE = text(
    "UPDATE idempotency_key SET body_sha256 = :sha, status = :status, response = :response, content_type = :ctype "
    "WHERE actor = :actor AND key = :key"
)
_FREE = text("DELETE FROM idempotency_key WHERE actor = :actor AND key = :key AND status IS NULL")


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


async def _caller(scope: Scope, sessions) -> str:
    """Whose keys these are: the caller as the route will see it (the same authentication), so
    one caller's key never replays another's response."""
    request = Request(scope)
    async with sessions() as session:
        caller = await authenticate(request, session, await bearer_credentials(request))
    if caller.key_id is not None:
        return f"key:{caller.key_id}"
    return f"{'open' if caller.via == 'open' else 'env'}:{caller.actor}"[:200]


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, prefix: str = "/api/v1"):
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        key = headers.get(HEADER)
        if key is None:
            return await self.app(scope, receive, send)
        if not 1 <= len(key) <= 200 or not key.isprintable():
            return await _json(send, 422, error_body("invalid_input", "Idempotency-Key must be 1 to 200 printable characters"))
        sessions = scope["app"].state.sessions
        try:
            actor = await _caller(scope, sessions)
        except AppError:  # the route itself reports the missing or bad key
            return await self.app(scope, receive, send)
        ids = {"actor": actor, "key": key}
        async with sessions() as session:
            claimed = (await session.execute(
                _CLAIM, {**ids, "method": scope["method"], "route": scope["path"], "stale": STALE_AFTER}
            )).first()
            await session.commit()
            if claimed is None:
                found = (await session.execute(_FIND, ids)).first()
        if claimed is None:
            return await self._replay(found, scope, receive, send, key)
        await self._first(sessions, ids, scope, receive, send)

    async def _first(self, sessions, ids: dict[str, str], scope: Scope, receive: Receive, send: Send) -> None:
        digest, ended = hashlib.sha256(), False
        held: list[Message] = []  # the response, sent only once its fate is stored, so a quick retry finds it
        status, ctype, size, passing = 0, None, 0, False

        async def hashing_receive() -> Message:
            nonlocal ended
            message = await receive()
            if message["type"] == "http.request":
                digest.update(message.get("body", b""))
                ended = not message.get("more_body", False)
            return message

        async def settle(store: bool) -> None:
            async with sessions() as session:
                if store:
                    body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
                    await session.execute(_STORE, {**ids, "sha": digest.hexdigest(), "status": status, "response": body, "ctype": ctype})
                else:
                    await session.execute(_FREE, ids)
                await session.commit()

        async def holding_send(message: Message) -> None:
            nonlocal status, ctype, size, passing
            if passing:
                return await send(message)
            held.append(message)
            if message["type"] == "http.response.start":
                status = message["status"]
                ctype = Headers(raw=message.get("headers", [])).get("content-type")
                return
            size += len(message.get("body", b""))
            last = not message.get("more_body", False)
            if size > MAX_STORED or last:
                while not ended:  # a route that read no body (cancel, resume): the hash covers it all the same
                    if (await hashing_receive())["type"] != "http.request":
                        break
                await settle(store=last and 200 <= status < 300 and size <= MAX_STORED)
                passing = True
                for m in held:
                    await send(m)
                held.clear()

        try:
            await self.app(scope, hashing_receive, holding_send)
        finally:
            if not passing:  # no complete response: an error escaped
                await settle(store=False)

    async def _replay(self, found, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        digest = hashlib.sha256()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            digest.update(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if found is None or found.status is None:
            return await _json(send, 409, error_body(
                "idempotency_in_progress", f"a request with Idempotency-Key {key!r} is still being answered; retry shortly",
            ))
        if found.route != scope["path"] or found.body_sha256 != digest.hexdigest():
            return await _json(send, 409, error_body(
                "idempotency_key_reused",
                f"Idempotency-Key {key!r} was used for another request; use a new key for a different request",
                {"route": found.route},
            ))
        log.info("idempotent replay of %s for key %r", found.route, key)
        body = bytes(found.response or b"")
        headers = [(b"content-length", str(len(body)).encode()), (b"idempotent-replayed", b"true")]
        if found.content_type:
            headers.append((b"content-type", found.content_type.encode()))
        await send({"type": "http.response.start", "status": found.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
