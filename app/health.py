from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import db, metrics
from app.auth.dependencies import PUBLIC, READ
from app.errors import error_body

router = APIRouter(tags=["health"])


@router.get("/healthz", dependencies=[PUBLIC], summary="The process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", dependencies=[PUBLIC], summary="The database answers and the in-process job worker runs")
async def readyz(request: Request):
    # only the exception's type: its message can carry hosts and socket paths
    try:
        await db.ping(request.app.state.engine)
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse(error_body("not_ready", f"database unreachable: {type(exc).__name__}"), status_code=503)
    worker = getattr(request.app.state, "worker", None)  # None: this process runs no worker
    if worker is not None and not worker.up:
        cause = (worker.last_error or "").split(":")[0] or "stopped"
        return JSONResponse(
            error_body("not_ready", f"the job worker is restarting ({cause}; restart {worker.restarts})"), status_code=503
        )
    return {"status": "ready"}


@router.get(
    "/metrics", dependencies=[READ], summary="Prometheus metrics", response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def prometheus_metrics(request: Request) -> Response:
    # run ids, volumes and queue depths of every dataset: a key when keys exist (a viewer's will do)
    return Response(await metrics.exposition(request.app.state.sessions), media_type=CONTENT_TYPE_LATEST)
