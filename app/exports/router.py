"""HTTP only: validation and status codes; rules live in the service."""

from __future__ import annotations

import logging
from typing import Annotated

import anyio

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import FileResponse, StreamingResponse

from app.auth.dependencies import EXPORT
from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.errors import NotFound
from app.exports import repository as repo
from app.exports import service
from app.exports.schemas import ExportCreate, ExportFormat, ExportPublic, StreamQuery
from app.jobs import JobsDep
from app.pagination import KeysetDep
from app.schemas import Page

router = APIRouter(prefix="/datasets/{dataset_id}/exports", tags=["exports"], dependencies=[EXPORT])
log = logging.getLogger(__name__)


class BoundedStreamingResponse(StreamingResponse):
    """A streamed body whose every send must complete within `send_timeout` seconds: a client
    that stops reading is dropped, and the export's connection goes back to its pool."""

    def __init__(self, *args, send_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.send_timeout = send_timeout

    async def stream_response(self, send) -> None:
        async def bounded(message) -> None:
            with anyio.fail_after(self.send_timeout):
                await send(message)

        try:
            await super().stream_response(bounded)
        except TimeoutError:
            log.warning("dropped a streamed export whose client read nothing for %.0f s", self.send_timeout)
        finally:
            await self.body_iterator.aclose()

VersionPath = Annotated[int, Path(ge=1, description="The dataset version (export) number.")]


def _prefix(request: Request, dataset_id: int) -> str:
    return f"{request.scope.get('root_path', '')}/api/v1/datasets/{dataset_id}/exports"


@router.get(
    "/{fmt}.jsonl",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/jsonl": {}}, "description": "One JSON record a line."}},
)
async def stream_export(
    fmt: ExportFormat,
    dataset: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    q: Annotated[StreamQuery, Query()],
):
    """Stream one format as JSONL: the live rows under the given filters, or a frozen version."""
    if q.version is not None:
        export = await service.get_version_or_404(session, dataset.id, q.version)
        service.require_frozen(export)
        render = service.render_options(export, override=q.render(), fields=q.model_fields_set)
        query, params = service.frozen_query(export, fmt, render, q.split)
    else:
        query, params = await service.live_query(
            session, dataset.id, fmt, q.filters(), q.split_spec(), q.render(), q.split, settings.synth_near_dup_threshold
        )
    # a read-only route: hand its pool connection back before waiting for a streaming one
    await session.commit()
    parts = [dataset.name, f"v{q.version}" if q.version else "live", fmt.value] + ([q.split.value] if q.split else [])
    return BoundedStreamingResponse(
        await service.primed(service.stream(request.app.state.stream_engine, query, params, settings.export_work_mem)),
        send_timeout=settings.export_stream_send_timeout_s,
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{"-".join(parts)}.jsonl"'},
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=ExportPublic)
async def create_export(
    body: ExportCreate,
    dataset: DatasetDep,
    session: SessionDep,
    actor: ActorDep,
    jobs: JobsDep,
    request: Request,
):
    """Freeze a new version and write its files, manifest and archive as a job; poll the result."""
    export = await service.create(session, dataset, body, actor)
    # the job reloads the export by id, so it is deferred only once the export is committed
    await session.commit()
    await jobs.defer_export(export.id)
    return (await service.public(session, [export], _prefix(request, dataset.id)))[0]


@router.get("", response_model=Page[ExportPublic])
async def list_exports(dataset: DatasetDep, session: SessionDep, request: Request, page: KeysetDep):
    exports = await repo.list_for_dataset(session, dataset.id, after_version=page.after_id, limit=page.limit)
    last = str(exports[-1].version) if len(exports) == page.limit else None  # the cursor is the version
    return Page[ExportPublic](data=await service.public(session, exports, _prefix(request, dataset.id)), next_cursor=last)


@router.get("/{version}", response_model=ExportPublic)
async def get_export(version: VersionPath, dataset: DatasetDep, session: SessionDep, request: Request):
    export = await service.get_version_or_404(session, dataset.id, version)
    return (await service.public(session, [export], _prefix(request, dataset.id)))[0]


@router.get("/{version}/archive", response_class=FileResponse)
async def download_archive(version: VersionPath, dataset: DatasetDep, session: SessionDep):
    export = await service.get_version_or_404(session, dataset.id, version)
    service.require_succeeded(export)
    path = service.archive_path(export)
    if path is None:
        raise NotFound(f"export version {version} was written without an archive")
    return FileResponse(path, media_type="application/gzip", filename=f"{dataset.name}-{path.name}")


@router.get("/{version}/files/{name:path}", response_class=FileResponse)
async def download_file(version: VersionPath, name: str, dataset: DatasetDep, session: SessionDep):
    export = await service.get_version_or_404(session, dataset.id, version)
    service.require_succeeded(export)
    path = service.file_path(export, name)
    media = "application/json" if name == "manifest.json" else "application/jsonl"
    return FileResponse(path, media_type=media, filename=f"{dataset.name}-v{version}-{name.replace('/', '-')}")
