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
from app.errors import NotFound, describe
from app.exports import card, files, service
from app.exports import repository as repo
from app.models import Dataset, Export, ExportStatus
from trainer.formats import Manifest

log = logging.getLogger(__name__)


async def run_export(
    export_id: int,
    *,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    out_dir: Path | None = None,
    on_progress: service.ProgressCallback | None = None,
    retrying: bool = False,
) -> Export:
    """Freeze the version (first run only), write its files, manifest and archive. A failure
    marks the version failed, unless `retrying` (the job queue decides: give_up/retry_later)."""
    async with sessions() as session:
        export = await repo.get(session, export_id)
        if export is None:
            raise NotFound(f"export {export_id} does not exist")
        dataset = await session.get(Dataset, export.dataset_id)
    await service.mark(sessions, export, ExportStatus.running, error=None)
    directory = out_dir or service.export_dir(settings, export)
    # rendered beside its place and renamed into it once complete and on disk (see files.py)
    part = files.staging(directory)
    archive_part = None
    try:
        await asyncio.to_thread(files.discard_partials, directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        archive_part = files.staging(service.archive_of(directory)) if export.options.get("archive") else None
        async with sessions() as session:
            export = await repo.get(session, export_id)

        async def card_and_parquet(manifest: Manifest) -> list[str]:
            """Parquet beside the JSONL on request, and the dataset card (it names the folder
            where the version will lie, not the staging one)."""
            extra = []
            if export.options.get("parquet"):
                extra += [p.name for p in await asyncio.to_thread(lambda: [card.write_parquet(part / n) for n in manifest.files])]
            async with sessions() as session:
                facts = await card.figures(session, export_id)
            card.write_card(part, manifest.to_dict(), facts, license_id=export.options.get("license"),
                            parquet=bool(export.options.get("parquet")), shown_as=directory)
            return [*extra, card.CARD]

        # freezes the version (first run) and writes files, manifest, card and archive in one pass
        manifest = await service.write_files(
            sessions, export, dataset.name, part, on_progress=on_progress,
            archive=(archive_part, directory.name) if archive_part else None,
            work_mem=settings.export_work_mem, threshold=settings.synth_near_dup_threshold,
            extras=card_and_parquet,
        )
        await asyncio.to_thread(
            files.publish, part, directory, archive_part, service.archive_of(directory), whole=out_dir is None
        )
        async with sessions() as session:
            await repo.set_status(session, export_id, manifest=manifest.to_dict(), path=str(directory))
            await session.commit()
        await service.mark(sessions, export, ExportStatus.succeeded)
    except BaseException as exc:
        for leftover in (part, archive_part):
            if leftover is not None:
                files.remove(leftover)
        if not retrying and isinstance(exc, Exception):
            await service.mark(sessions, export, ExportStatus.failed, error=describe(exc))
        raise
    async with sessions() as session:
        return await repo.get(session, export_id)


async def give_up(export_id: int, sessions: async_sessionmaker[AsyncSession], reason: str) -> None:
    """The export's last attempt failed: the version is failed, saying why."""
    async with sessions() as session:
        export = await repo.get(session, export_id)
    if export is not None and export.status != ExportStatus.succeeded:
        await service.mark(sessions, export, ExportStatus.failed, error=reason)


async def retry_later(export_id: int, sessions: async_sessionmaker[AsyncSession], reason: str) -> None:
    """An attempt failed and the job will be tried again: queued, with what went wrong."""
    async with sessions() as session:
        export = await repo.get(session, export_id)
    if export is not None and export.status != ExportStatus.succeeded:
        await service.mark(sessions, export, ExportStatus.queued, error=f"retrying after {reason}"[:2000])


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
    await run_export(export_id, sessions=sessions, settings=settings, retrying=True)
