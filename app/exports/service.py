"""Export rules: versions, rendering files with their manifest, streaming.

Services flush, never commit: the caller owns the transaction. The exception is
`write_files`, the long body of an export job, which reports progress in short transactions
of its own so that pollers see it move.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import Conflict, InvalidInput, NotFound, ServiceBusy
from app.exports import card, files, groups, writer
from app.exports import repository as repo
from app.exports.schemas import (
    ExportCreate,
    ExportFilters,
    ExportFormat,
    ExportProgress,
    ExportPublic,
    RenderOptions,
    SplitName,
    SplitSpec,
)
from app.metrics import EXPORT_ROWS_WRITTEN
from app.models import Dataset, Export, ExportStatus, Run, RunKind, RunStatus
from trainer.formats import FORMAT_VERSION, Manifest

ProgressCallback = Callable[[int, int, str], None]

# bytes gathered before handing a chunk to the socket or the file
CHUNK_BYTES = 1 << 18
# how often a running export writes its progress counters
PROGRESS_EVERY_S = 0.5

_SPLITS = [SplitName.train, SplitName.validation, SplitName.test]


def file_name(fmt: ExportFormat, split: SplitName) -> str:
    # flat, beside manifest.json (where the trainer looks for it): sft.train.jsonl, ...
    return f"{fmt.value}.{split.value}.jsonl"


def export_dir(settings: Settings, export: Export) -> Path:
    return files.dataset_dir(settings, export.dataset_id) / f"v{export.version}"


async def create(session: AsyncSession, dataset: Dataset, data: ExportCreate, actor: str | None) -> Export:
    """A new version of the dataset, queued; the job that freezes and writes it comes after commit."""
    if data.parquet:
        card.require_parquet()  # now, not in the job
    await repo.lock_dataset(session, dataset.id)  # versions are numbered one at a time
    version = await repo.next_version(session, dataset.id)
    run = Run(dataset_id=dataset.id, kind=RunKind.export.value, params={"version": version}, created_by=actor)
    session.add(run)
    await session.flush()
    export = Export(
        dataset_id=dataset.id,
        version=version,
        filters=data.filters.model_dump(mode="json"),
        split=data.split.model_dump(mode="json"),
        options={
            "formats": [f.value for f in data.formats],
            "pairs_mode": data.pairs_mode.value,
            "margin": data.margin,
            "archive": data.archive,
            "parquet": data.parquet,
            "license": data.license,
        },
        run_id=run.id,
        created_by=actor,
    )
    session.add(export)
    await session.flush()
    await session.refresh(export)
    return export


async def get_version_or_404(session: AsyncSession, dataset_id: int, version: int) -> Export:
    export = await repo.get_version(session, dataset_id, version)
    if export is None:
        raise NotFound(f"dataset {dataset_id} has no export version {version}")
    return export


def require_frozen(export: Export) -> None:
    if export.frozen_at is None:
        raise Conflict(
            f"export version {export.version} is not frozen yet (status {export.status}); poll it and retry",
            details={"status": export.status},
        )


def require_succeeded(export: Export) -> None:
    if export.status != ExportStatus.succeeded:
        raise Conflict(
            f"export version {export.version} has no files yet (status {export.status})",
            details={"status": export.status},
        )


async def public(session: AsyncSession, exports: list[Export], url_prefix: str = "") -> list[ExportPublic]:
    runs = await repo.runs(session, [e.run_id for e in exports if e.run_id])
    out = []
    for export in exports:
        run = runs.get(export.run_id) if export.run_id else None
        item = ExportPublic.model_validate(export)
        item.progress = ExportProgress(total=run.total, done=run.done) if run else ExportProgress()
        item.error = run.error if run else None
        if export.status == ExportStatus.succeeded and export.options.get("archive") and url_prefix:
            item.archive_url = f"{url_prefix}/{export.version}/archive"
        out.append(item)
    return out


def render_options(export: Export, override: RenderOptions | None = None, fields: set[str] = frozenset()) -> RenderOptions:
    """How a version renders: its own options, unless the caller set some explicitly."""
    chosen = {k: export.options[k] for k in RenderOptions.model_fields}
    if override is not None:
        chosen.update(override.model_dump(include=set(fields) & set(RenderOptions.model_fields)))
    return RenderOptions(**chosen)


async def _chunks(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, int]]:
    """Gather rows into chunks of about CHUNK_BYTES: (chunk, rows in it)."""
    buf: list[bytes] = []
    size = 0
    async for line in lines:
        buf.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(buf), len(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf), len(buf)


async def stream(engine: AsyncEngine, query: str, params: dict[str, Any], work_mem: str | None = None) -> AsyncIterator[bytes]:
    """The body of a streamed export. It opens its own connection: the request's session is
    closed before the body is sent.

    Reads are shielded from cancellation: when the client hangs up, Starlette cancels the
    response at its next send, never halfway through a read, and closing this generator then
    ends the COPY (psycopg cancels the query and drains it) and returns the connection clean.

    `engine` is the streaming pool (`db.stream_engine`): when all its connections are taken the
    request waits `export_stream_wait_s`, then gets 503 with Retry-After."""
    try:
        conn = await engine.connect()
    except sa_exc.TimeoutError:
        raise ServiceBusy("every connection for streamed exports is in use; retry shortly", retry_after=5) from None
    chunks = _chunks(repo.copy_lines(conn, query, params, work_mem))
    try:
        while True:
            with anyio.CancelScope(shield=True):
                item = await anext(chunks, None)
            if item is None:
                break
            yield item[0]
    finally:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()
            await conn.close()


async def primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Run the export's query up to its first rows before the response starts, so that a value
    Postgres refuses becomes a 422, not a stream cut off after a 200."""
    try:
        first = await anext(chunks, None)
    except psycopg.DataError as exc:
        await chunks.aclose()
        reason = getattr(exc.diag, "message_primary", None) or str(exc)
        raise InvalidInput(f"a filter value cannot be used: {reason}") from None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return body()


async def live_query(
    session: AsyncSession,
    dataset_id: int,
    fmt: ExportFormat,
    filters: ExportFilters,
    split: SplitSpec,
    render: RenderOptions,
    only: SplitName | None,
    threshold: float,
) -> tuple[str, dict[str, Any]]:
    """The live export's query; its splits follow the split groups as a frozen version's do."""
    found = await groups.split_groups(session, dataset_id, split, threshold, for_manifest=False)
    source, params = repo.live_source(dataset_id, filters, split, found.params())
    return repo.format_sql(fmt, source, render, only), params


def frozen_query(export: Export, fmt: ExportFormat, render: RenderOptions, only: SplitName | None) -> tuple[str, dict[str, Any]]:
    source, params = repo.frozen_source(export.id)
    return repo.format_sql(fmt, source, render, only), params


async def freeze(
    session: AsyncSession, export: Export, work_mem: str | None = None, *, threshold: float = 0.7, use_groups: bool = True
) -> int:
    """Resolve the live rows into the version's frozen rows (once: a frozen version never moves),
    with the split groups worked out once for it, and record the groups and the leakage check
    (`export.integrity`). `use_groups=False` splits every prompt on its own: only tests use it,
    to show that the check sees a leak."""
    if export.frozen_at is not None:
        return 0
    await repo.clear_items(session, export.id)
    found = await groups.split_groups(session, export.dataset_id, SplitSpec(**export.split), threshold)
    n = await repo.freeze(session, export, found.params() if use_groups else repo.NO_GROUPS, work_mem)
    await repo.set_status(
        session, export.id, frozen_at=datetime.now(UTC), integrity=await integrity(session, export.id, found)
    )
    await session.flush()
    return n


async def integrity(session: AsyncSession, export_id: int, found: groups.SplitGroups) -> dict[str, Any]:
    """The split groups and the leakage check of a frozen version: near-duplicate pairs and evol
    links whose two prompts were exported to different splits (0 unless groups were bypassed)."""
    near = await repo.pairs_across_splits(session, export_id, found.near_pairs)
    lineage = await repo.pairs_across_splits(session, export_id, found.lineage)
    return {
        "groups": found.report(),
        "leakage": {
            "near_duplicate_pairs_across_splits": len(near),
            "lineage_links_across_splits": len(lineage),
            "examples": [list(p) for p in (near + lineage)[:20]],
        },
    }


async def write_files(
    sessions: async_sessionmaker[AsyncSession],
    export: Export,
    dataset_name: str,
    out_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    track: bool = True,
    archive: tuple[Path, str] | None = None,
    work_mem: str | None = None,
    threshold: float = 0.7,
    extras: Callable[[Manifest], Awaitable[list[str]]] | None = None,
) -> Manifest:
    """Render a version into out_dir: {format}.{split}.jsonl for every non-empty file, and
    manifest.json; with `archive` (its path, its root folder) also the .tar.gz, compressed while
    the files are written. Rendering the same version again gives byte-identical files.

    All formats and splits come from one pass over the version's rows (`repo.bundle_sql`). A
    version not frozen yet is frozen by that same pass: one statement inserts the resolved rows
    into export_item and returns each one rendered (`repo.freeze_bundle_sql`); the freeze (with
    its split groups and leakage check) commits once the files are written. `extras`, given the manifest, writes more files into out_dir (the
    dataset card, Parquet) and names them; they go into the archive after the manifest."""
    render = render_options(export)
    formats = [ExportFormat(f) for f in export.options["formats"]]
    done = 0
    total = 0
    last_report = 0.0

    async def report(name: str, force: bool = False) -> None:
        nonlocal last_report
        if on_progress:
            on_progress(done, total, name)
        if track and export.run_id and (force or time.monotonic() - last_report > PROGRESS_EVERY_S):
            last_report = time.monotonic()
            async with sessions() as s:
                await repo.set_progress(s, export.run_id, total=total, done=done)
                await s.commit()

    async def one_pass(
        conn: Any, query: str, params: dict[str, Any], mem: str | None, check_order: bool = False
    ) -> tuple[_Pass, writer.VersionWriter]:
        nonlocal done
        out = writer.VersionWriter(out_dir, (archive[0], archive[1], int(export.created_at.timestamp())) if archive else None)
        result = _Pass(formats, check_order=check_order)
        try:
            async for batch, prompts in result.batches(repo.copy_rows(conn, query, params, mem)):
                await out.write(batch)
                done += prompts
                await report("rows")
            await out.finish()
        except BaseException:
            out.close()
            raise
        return result, out

    out_dir.mkdir(parents=True, exist_ok=True)
    async with sessions() as session:
        if export.frozen_at is None:
            # the freeze's transaction (session): the statement that fills export_item returns
            # the rows rendered, then the groups and the leakage check are recorded
            await repo.clear_items(session, export.id)
            found = await groups.split_groups(session, export.dataset_id, SplitSpec(**export.split), threshold)
            total = await repo.prompt_count(session, export.dataset_id)
            await report("", force=True)
            query, params = repo.freeze_bundle_sql(export, formats, render, found.params())
            passed, out = await one_pass(await session.connection(), query, params, work_mem, check_order=True)
            await repo.set_status(
                session, export.id, frozen_at=datetime.now(UTC), integrity=await integrity(session, export.id, found)
            )
            await session.commit()
            export = await repo.get(session, export.id)
            await session.refresh(export)
        else:
            total = await repo.frozen_count(session, export.id)
            await report("", force=True)
            passed, out = await one_pass(await session.connection(), *repo.bundle_sql(export.id, formats, render), work_mem)
    try:
        total = done
        await report("manifest.json", force=True)
        files: dict[str, dict[str, Any]] = {}
        for fmt in formats:
            for split in _SPLITS:
                name = file_name(fmt, split)
                if passed.rows.get(name):
                    files[name] = {"kind": fmt.value, "split": split.value, "rows": passed.rows[name], **out.info(name)}
                    if fmt is ExportFormat.rm:
                        files[name]["pairs"] = passed.pairs.get(split.value, 0)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            dataset=dataset_name,
            dataset_id=export.dataset_id,
            dataset_version=export.version,
            files=files,
            filters=export.filters,
            split={
                **export.split,
                "method": "a prompt's own split if set, else sha256(f'{seed}:{prompt_id}'), first 60 bits, against the "
                "cumulative ratios; split groups (near-duplicates, evol lineages) share one split",
                **(export.integrity or {}),
            },
            options=export.options,
            counts={f.value: {s.value: passed.rows.get(file_name(f, s), 0) for s in _SPLITS} for f in formats},
            created_at=_iso(export.created_at),
        )
        (out_dir / "manifest.json").write_text(manifest.dumps(), encoding="utf-8")
        for name, info in files.items():
            EXPORT_ROWS_WRITTEN.labels(info["kind"]).inc(info["rows"])
        more = await extras(manifest) if extras else []
        if archive:
            await asyncio.to_thread(out.write_archive, list(files), ["manifest.json", *more])
    finally:
        out.close()
    return manifest


class _Pass:
    """Splits the rows of a bundle query (prompt id, split, pairs, one column per format) into
    each file's lines, counting records per file and pairs per split. `check_order`: fail unless
    the prompt ids rise (rows that RETURNING sends, whose order SQL does not promise)."""

    def __init__(self, formats: list[ExportFormat], check_order: bool = False):
        self.names = {split.value.encode(): [file_name(fmt, split) for fmt in formats] for split in _SPLITS}
        self.multi = [fmt in (ExportFormat.pairs, ExportFormat.pairs_chat) for fmt in formats]
        self.check_order = check_order
        self.rows: dict[str, int] = {}
        self.pairs: dict[str, int] = {}

    async def batches(self, rows: AsyncIterator[list[memoryview]]) -> AsyncIterator[tuple[list[tuple[str, bytes]], int]]:
        """Per about CHUNK_BYTES: the (file name, bytes) pairs and the number of prompts they
        hold, from lists of rows as `repo.copy_rows` reads them."""
        lines: dict[str, list[bytes]] = {}
        counts = self.rows
        size = prompts = last = 0
        pairs: dict[bytes, int] = {}
        columns = list(enumerate(self.multi, start=3))
        check = self.check_order
        names_of = self.names
        async for arrived in rows:
            # one split of the rows that arrived together (the rendered values never hold
            # \x02 nor a newline: JSON text escapes control characters)
            for row in b"".join(arrived).split(b"\n")[:-1]:
                values = row.split(b"\x02")
                if check:
                    if int(values[0]) <= last:
                        raise RuntimeError(f"export rows out of prompt order: {int(values[0])} after {last}")
                    last = int(values[0])
                split = values[1]
                if values[2] != b"0":
                    pairs[split] = pairs.get(split, 0) + int(values[2])
                names = names_of[split]
                for i, multi in columns:
                    line = values[i]
                    if line:
                        name = names[i - 3]
                        if multi:  # pairs: the records of one prompt, joined by \x03
                            counts[name] = counts.get(name, 0) + line.count(b"\x03") + 1
                            line = line.replace(b"\x03", b"\n")
                        else:
                            counts[name] = counts.get(name, 0) + 1
                        if name in lines:
                            lines[name].append(line)
                        else:
                            lines[name] = [line]
                        size += len(line)
            prompts += len(arrived)
            if size >= CHUNK_BYTES:
                yield [(name, b"\n".join(group) + b"\n") for name, group in lines.items()], prompts
                lines, size, prompts = {}, 0, 0
        if lines or prompts:
            yield [(name, b"\n".join(group) + b"\n") for name, group in lines.items()], prompts
        self.pairs = {split.decode(): n for split, n in pairs.items()}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def archive_of(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".tar.gz")


async def mark(sessions: async_sessionmaker[AsyncSession], export: Export, status: ExportStatus, **run_values: Any) -> None:
    async with sessions() as session:
        values: dict[str, Any] = {"status": status.value}
        if status in (ExportStatus.succeeded, ExportStatus.failed):
            values["finished_at"] = datetime.now(UTC)
        await repo.set_status(session, export.id, **values)
        if export.run_id:
            run_status = {ExportStatus.running: RunStatus.running, ExportStatus.succeeded: RunStatus.succeeded,
                          ExportStatus.failed: RunStatus.failed}.get(status, RunStatus.queued)
            run_values["status"] = run_status.value
            if status is ExportStatus.running:
                run_values["started_at"] = datetime.now(UTC)
            elif "finished_at" in values:
                run_values["finished_at"] = datetime.now(UTC)
            await repo.set_progress(session, export.run_id, **run_values)
        await session.commit()


def archive_path(export: Export) -> Path | None:
    if not export.path or not export.options.get("archive"):
        return None
    path = archive_of(Path(export.path))
    return path if path.is_file() else None


def file_path(export: Export, name: str) -> Path:
    """A file of a written version, by its name in the manifest (nothing else is served)."""
    known = set((export.manifest or {}).get("files", {})) | {"manifest.json"}
    path = Path(export.path or "") / name
    if name not in known or not export.path or not path.is_file():
        raise NotFound(f"export version {export.version} has no file {name!r}", details={"files": sorted(known)})
    return path
