"""create_app(): settings, database, routers, error handlers, lifespan."""

from __future__ import annotations

import functools
import gc
import logging
import secrets
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from app import db
from app.auth.dependencies import check_routes
from app.auth.guard import WriteGuard
from app.auth.service import OpenMode
from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.headers import SecurityHeaders
from app.http_limits import BodyLimit, RateLimit
from app.idempotency import IdempotencyMiddleware
from app.metrics import RequestMiddleware, note_route
from app.openapi import install_openapi, operation_id

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _routers():
    # imported here so `app.main` stays cheap to import for the CLI
    from app.auth.router import keys
    from app.auth.router import router as auth
    from app.completions.router import router as completions
    from app.datasets.router import router as datasets
    from app.exports.router import router as exports
    from app.health import router as health
    from app.imports.router import router as imports
    from app.prompts.router import router as prompts
    from app.rankings.router import router as rankings
    from app.review.router import router as review
    from app.run_kinds import KINDS
    from app.runs.router import make_router
    from app.ui.router import router as ui

    runs = make_router(KINDS)
    # the review routes first: a request is matched against the routes in this order (FastAPI
    # tries each in turn, ~2 us a route), and review's are the ones people wait on, many times a
    # minute. No route of another router matches a review path (tests/app/test_routing.py).
    return [
        (health, ""), (review, API_PREFIX), (datasets, API_PREFIX), (prompts, API_PREFIX), (completions, API_PREFIX),
        (rankings, API_PREFIX), (exports, API_PREFIX), (runs, API_PREFIX), (auth, API_PREFIX), (keys, API_PREFIX), (ui, ""),
        (imports, API_PREFIX),
    ]


@functools.cache  # once per process
def _freeze_startup_objects() -> None:
    """What startup made (modules, models, compiled SQL) lives as long as the process: out of
    the collector's sight, a full collection under load costs milliseconds instead of tens (a
    0 ms generation run spent a third of its CPU in them). Garbage collected first, and once per
    process, so that apps made again (tests) freeze nothing that should have been freed."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None) -> FastAPI:
    """Build the service. Pass `engine` to share one (tests); otherwise the lifespan makes one,
    starting the embedded Postgres when no DATABASE_URL is set."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            if engine is None:
                database = await stack.enter_async_context(db.open_database(settings))
                app.state.engine, app.state.database_url = database.engine, database.url
            else:
                app.state.engine = engine
                app.state.database_url = engine.url.render_as_string(hide_password=False)
            app.state.sessions = db.session_factory(app.state.engine)
            app.state.stream_engine = await stack.enter_async_context(db.stream_engine(app.state.database_url, settings))
            # the job queue, and a worker in this process when settings.worker_in_process
            from app.worker import jobs_lifespan

            async with jobs_lifespan(app.state, settings, app.state.database_url):
                _freeze_startup_objects()
                yield

    app = FastAPI(
        title="rlhf-forge",
        version="0.1.0",
        summary="Build SFT, reward-model and RL datasets with an LLM's help.",
        lifespan=lifespan,
        dependencies=[Depends(note_route)],
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.open_mode = OpenMode()  # "no key at all", remembered for a second (app.auth.service)
    install_error_handlers(app)
    # added last = run first: the rate, then the body size, both before routing, auth and parsing;
    # inside them a POST's Idempotency-Key (it reads the caller's key, so inside the session too)
    app.add_middleware(IdempotencyMiddleware, prefix=API_PREFIX)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, larger=settings.max_import_bytes)
    if settings.rate_limit:
        app.add_middleware(RateLimit, rate=settings.rate_limit)
    for router, prefix in _routers():
        app.include_router(router, prefix=prefix)
    check_routes(app)  # every route carries exactly one access rule (app.auth.dependencies)
    # outermost last: the Host check, then cross-site and content-type refusals, then the session cookie
    secret = settings.session_secret.get_secret_value() if settings.session_secret else secrets.token_urlsafe(32)
    app.add_middleware(
        SessionMiddleware, secret_key=secret, session_cookie="forge_session", max_age=settings.session_max_age_s,
        same_site="strict", https_only=settings.session_https_only,
    )
    app.add_middleware(WriteGuard)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)  # nosniff & co. on every response, the Host refusal's included
    app.add_middleware(RequestMiddleware)  # outermost: times everything, ids every log line (X-Request-ID)
    install_openapi(app)  # the spec states the error shape for every error status (schemathesis checks it)
    return app
