"""create_app(): settings, database, routers, error handlers, lifespan."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings, get_settings
from app.deps import get_actor
from app.errors import install_error_handlers
from app.idempotency import IdempotencyMiddleware
from app.metrics import RequestMiddleware, note_route
from app.openapi import install_openapi, operation_id
from app.metrics import router as metrics_router

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _routers():
    # imported here so `app.main` stays cheap to import for the CLI
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
    return [
        (health, ""), (datasets, API_PREFIX), (prompts, API_PREFIX), (completions, API_PREFIX), (rankings, API_PREFIX),
        (exports, API_PREFIX), (runs, API_PREFIX), (review, API_PREFIX), (ui, ""),
        (imports, API_PREFIX),
    ]


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
            # the job queue, and a worker in this process when settings.worker_in_process
            from app.worker import jobs_lifespan

            async with jobs_lifespan(app.state, settings, app.state.database_url):
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
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware, prefix=API_PREFIX)
    app.add_middleware(RequestMiddleware)  # outermost: times everything, ids every log line
    for router, prefix in _routers():
        # every API route needs a key when keys are configured (get_actor checks it)
        deps = [Depends(get_actor)] if prefix == API_PREFIX else []
        app.include_router(router, prefix=prefix, dependencies=deps)
    # metrics name datasets' runs and volumes: a key when keys are configured, like the API
    app.include_router(metrics_router, dependencies=[Depends(get_actor)])
    install_openapi(app)
    return app
