"""Typed domain errors, each with its status code, rendered by one handler in one shape:

    {"error": {"code": "not_found", "message": "dataset 7 does not exist", "details": {...}}}
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError as DBDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class InvalidInput(AppError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class ServiceBusy(AppError):
    """A bounded resource is all in use; `Retry-After` says when to try again."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: int = 5, details: Any = None):
        super().__init__(message, details=details)
        self.headers = {"Retry-After": str(retry_after)}


class SchemaOutdated(AppError):
    status_code = 503
    code = "schema_outdated"


def describe(exc: BaseException, limit: int = 2000) -> str:
    """An exception as it may be stored and shown through the API: its type and message, an
    OSError without the file names it carries (this machine's paths are nobody's business)."""
    orig = getattr(exc, "orig", None)  # a SQLAlchemy error: Postgres's own words, not the SQL and its parameters
    if orig is not None:
        exc = orig
        message = getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig).split("\n")[0]
    elif isinstance(exc, OSError) and exc.strerror:
        message = exc.strerror
    else:
        message = str(exc)
    return f"{type(exc).__name__}: {message}"[:limit]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: not_found, invalid_input, conflict, ...")
    message: str = Field(description="For people: what is wrong and where, and how to fix it.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Always an object; `errors` lists each invalid field for invalid_input."
    )


class ErrorResponse(BaseModel):
    """The one error shape, as the OpenAPI spec states it for every error status."""

    error: ErrorDetail


ERROR_STATUSES: dict[int, str] = {
    400: "Bad request", 401: "No or unknown API key", 403: "The key's role may not do this",
    404: "Not found", 409: "Conflict with the current state (or an Idempotency-Key used for another request)",
    413: "Too large", 415: "Not a content type this route takes", 422: "Invalid input",
    429: "Too many requests; see Retry-After", 500: "Internal error", 503: "Busy or not ready; see Retry-After",
}


def error_body(code: str, message: str, details: Any = None) -> dict:
    """The one error shape; `details` is always an object (a list goes under `errors`, text under `reason`)."""
    if details is None:
        details = {}
    elif isinstance(details, list):
        details = {"errors": details}
    elif not isinstance(details, dict):
        details = {"reason": str(details)}
    return {"error": {"code": code, "message": message, "details": details}}


def _loc(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body",)] or [str(loc[0])] if loc else []
    return ".".join(parts) if parts else "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            errors.append({"loc": _loc(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")})
        first = errors[0] if errors else {"loc": "body", "msg": "invalid request"}
        message = f"{first['loc']}: {first['msg']}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return JSONResponse(error_body("invalid_input", message, errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DBDataError)
    async def _data(request: Request, exc: DBDataError) -> JSONResponse:
        # Postgres refused a value the schema let through: an id past bigint, a NUL character,
        # \u0000 inside JSON, a number too large for its column. The request's transaction is
        # already rolled back; say what Postgres said, without the SQL.
        diag = getattr(exc.orig, "diag", None)
        reason = (getattr(diag, "message_primary", None) or str(exc.orig).splitlines()[0]).strip()
        return JSONResponse(
            error_body("invalid_value", f"a value cannot be stored: {reason}", {"sqlstate": getattr(exc.orig, "sqlstate", None)}),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
