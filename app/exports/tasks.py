"""The export job. It carries an export id only, reloads its rows, and is safe to run twice: a
version is frozen once, and its files render byte-identically every time.

Until the job queue lands, the API runs it in-process after the response (see `schedule`);
a queue task only needs to call `run_export(export_id, sessions=..., settings=...)`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import NotFound
from app.exports import repository as repo
from app.exports import service
from app.models import Dataset, Export, ExportStatus

log = logging.getLogger(__name__)


async def run_export(
    export_id: int,
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    out_dir: Path | None = None,
    on_progress: service.ProgressCallback | None = None,
) -> Export:
    """Freeze the version (first run only), write its files, manifest and archive."""
    async with sessions() as session:
        export = await repo.get(session, export_id)
        if export is None:
            raise NotFound(f"export {export_id} does not exist")
        dataset = await session.get(Dataset, export.dataset_id)
    await service.mark(sessions, export, ExportStatus.running, error=None)
    try:
        async with sessions() as session:
            await service.freeze(session, await repo.get(session, export_id), settings.export_work_mem)
            await session.commit()
        async with sessions() as session:
            export = await repo.get(session, export_id)
        directory = out_dir or service.export_dir(settings, export)
        manifest = await service.write_files(sessions, export, dataset.name, directory, on_progress=on_progress)
        if export.options.get("archive"):
            await asyncio.to_thread(service.write_archive, directory, list(manifest.files))
        async with sessions() as session:
            await repo.set_status(session, export_id, manifest=manifest.to_dict(), path=str(directory))
            await session.commit()
        await service.mark(sessions, export, ExportStatus.succeeded)
    except Exception as exc:
        await service.mark(sessions, export, ExportStatus.failed, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    async with sessions() as session:
        return await repo.get(session, export_id)


async def run_in_background(export_id: int, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Run after the response that created the export (so after its commit); failures are
    recorded on the export and its run."""
    try:
        await run_export(export_id, sessions=sessions, settings=settings)
    except Exception:
        log.exception("export %s failed", export_id)
