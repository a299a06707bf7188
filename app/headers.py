"""Headers every response carries, whatever produced it (a route, an error handler, a static
file, a 404): the browser is told not to guess content types, not to frame the review page, and
not to leak URLs in Referer.

Strict-Transport-Security only on responses to HTTPS requests (the scheme uvicorn saw, or the
one a trusted proxy forwarded with --proxy-headers): over plain HTTP, browsers ignore it anyway
(RFC 6797), and a loopback-only service is often plain HTTP on purpose."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class SecurityHeaders:
    """A pure ASGI middleware (no buffering: streamed bodies stay streamed)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = ALWAYS + ((HSTS,) if scope.get("scheme") == "https" else ())

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)
