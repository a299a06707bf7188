"""The export job. It carries an export id only, reloads its rows, and is safe to run twice: a
version is frozen once, its files render byte-identically every time, and `render` (what the
job queue runs, deferred through `app.jobs.Jobs.defer_export` after the commit that made the
export) leaves a succeeded version alone. `run_export` is the work itself, which the CLI also
calls in the foreground.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import NotFound
from app.exports import repository as repo
from app.exports import card, service
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
        extra = []
        if export.options.get("parquet"):
            extra += [p.name for p in await asyncio.to_thread(lambda: [card.write_parquet(directory / n) for n in manifest.files])]
        async with sessions() as session:
            facts = await card.figures(session, export_id)
        card.write_card(directory, manifest.to_dict(), facts, license_id=export.options.get("license"),
                        parquet=bool(export.options.get("parquet")))
        extra.append(card.CARD)
        if export.options.get("archive"):
            await asyncio.to_thread(service.write_archive, directory, [*manifest.files, *extra])
        async with sessions() as session:
            await repo.set_status(session, export_id, manifest=manifest.to_dict(), path=str(directory))
            await session.commit()
        await service.mark(sessions, export, ExportStatus.succeeded)
    except Exception as exc:
        await service.mark(sessions, export, ExportStatus.failed, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    async with sessions() as session:
        return await repo.get(session, export_id)


async def render(export_id: int, *, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """The queued job: write the version unless an earlier execution already did. A version a
    dead worker left running is written again (same frozen rows, same files); a failure is
    recorded on the export and its run, and raised for the queue to record."""
    async with sessions() as session:
        export = await repo.get(session, export_id)
    if export is None:
        raise NotFound(f"export {export_id} does not exist")
    if export.status == ExportStatus.succeeded:
        log.info("export %s is already written", export_id)
        return
    await run_export(export_id, sessions=sessions, settings=settings)
