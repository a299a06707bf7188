"""Refuse cross-site writes before anything reads their body.

A browser sends a cross-site request without asking the server first (no CORS preflight) only
with a "simple" content type (text/plain, application/x-www-form-urlencoded,
multipart/form-data) or none. So every write with a body (or a declared type) must declare JSON,
or one of the import's types (NDJSON, CSV, multipart), else 415: that ends cross-site form
posts, which always declare a type. Left are multipart and body-less writes (`curl -X POST
.../approve`, or a no-cors fetch from another site), so a write a browser marks as coming from
elsewhere (`Sec-Fetch-Site` cross-site or same-site, or an `Origin` that is not this host) is 403
as well; the signed-in review page's writes also carry a CSRF token (app.auth.dependencies).

Each route then narrows the types to its own (JSON everywhere but the import).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import error_body

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_BODIES = frozenset({"application/json"})
# none of these but multipart is a type a browser sends cross-site without asking (CORS "simple")
IMPORT_BODIES = JSON_BODIES | {
    "application/x-ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "text/csv",
    "application/octet-stream",
    "multipart/form-data",
}


def media_type(headers: Headers) -> str | None:
    """The Content-Type without its parameters, lower case; None when missing or empty."""
    value = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    return value or None


def cross_site(headers: Headers) -> str | None:
    """Why a write comes from another site, as the browser tells it; None when it does not."""
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"a write from another site (Sec-Fetch-Site: {site}) is refused"
    origin = headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()):
        return f"a write from another origin ({origin}) is refused"
    return None


class WriteGuard:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            headers = Headers(scope=scope)
            refused = cross_site(headers)
            if refused is not None:
                await JSONResponse(error_body("forbidden", refused), status_code=403)(scope, receive, send)
                return
            ctype = media_type(headers)
            bodyless = headers.get("content-length", "0") == "0" and "transfer-encoding" not in headers
            if not (ctype is None and bodyless) and ctype not in IMPORT_BODIES:
                message = (
                    f"Content-Type {ctype or 'missing'}: writes take application/json "
                    "(an import also NDJSON, CSV or a multipart upload)"
                )
                body = error_body("unsupported_media_type", message, {"accepted": sorted(IMPORT_BODIES)})
                await JSONResponse(body, status_code=415)(scope, receive, send)
                return
        await self.app(scope, receive, send)
