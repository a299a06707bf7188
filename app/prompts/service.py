"""Prompt rules: bulk import, create, update. Services flush, never commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from itertools import islice
from typing import IO, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import Change, refuse_if_leased_to_other
from app.errors import Conflict, InvalidInput, NotFound
from app.models import Dataset, Prompt
from app.prompts import repository as repo
from app.prompts.hashing import content_hash
from app.prompts.parsing import READERS, InputError, ParsedRow
from app.prompts.schemas import (
    ImportFormat,
    ImportMode,
    ImportReport,
    PromptCreate,
    PromptUpdate,
    RowError,
)
from app.text import check_text

REPORT_LIMIT = 1000
PROGRESS_EVERY = 5000
PARSE_BATCH = 2000  # rows parsed per trip to a worker thread


async def parsed_off_loop(rows: Iterable[T], batch: int = PARSE_BATCH) -> AsyncIterator[T]:
    """Advance a blocking reader (file reads, JSON / CSV parsing, validation) in a worker thread,
    a batch at a time, so the event loop only ever writes rows and other requests keep flowing."""
    it = iter(rows)
    while chunk := await anyio.to_thread.run_sync(lambda: list(islice(it, batch))):
        for row in chunk:
            yield row

Progress = Callable[[int], None]
T = TypeVar("T")


class ImportRejected(InvalidInput):
    """All-or-nothing import with invalid rows: nothing was written. details = the report."""


async def import_rows(
    session: AsyncSession,
    dataset: Dataset,
    rows: Iterable[tuple[int, ParsedRow | str]],
    *,
    mode: ImportMode = ImportMode.partial,
    progress: Progress | None = None,
) -> ImportReport:
    """Stage every valid row with COPY, then insert the new ones in one statement.

    Runs inside the caller's transaction: either the whole import lands or none of it does.
    """
    pg = await repo.driver_connection(session)
    await repo.create_stage(pg)
    total = invalid = 0
    errors: list[RowError] = []
    last_yield = time.monotonic()
    async with repo.copy_stage(pg) as copy:
        copy.set_types(list(repo.STAGE_TYPES))
        async for line, row in parsed_off_loop(rows):
            total += 1
            if isinstance(row, str):
                invalid += 1
                if len(errors) < REPORT_LIMIT:
                    errors.append(RowError(line=line, message=row))
                continue
            await copy.write_row((line, row.text, row.content_hash, row.source, row.split, row.tags, row.meta))
            if total % PROGRESS_EVERY == 0:
                if progress:
                    progress(total)
                if time.monotonic() - last_yield > 0.05:  # let other requests run during big imports
                    await asyncio.sleep(0)
                    last_yield = time.monotonic()
    dup_count, dup_lines = await repo.stage_duplicates(pg, dataset.id, REPORT_LIMIT)
    report = ImportReport(
        mode=mode, total=total, inserted=0, duplicates=dup_count, invalid=invalid,
        duplicate_lines=dup_lines, errors=errors,
    )
    if mode == ImportMode.all_or_nothing and invalid:
        report.committed = False
        raise ImportRejected(
            f"{invalid} invalid row(s), first at line {errors[0].line}: {errors[0].message}; nothing was imported",
            details=report.model_dump(),
        )
    report.inserted = await repo.insert_from_stage(pg, dataset.id, deduplicate=dup_count > 0)
    # a concurrent import may have taken some texts between the two statements
    report.duplicates = total - invalid - report.inserted
    if progress:
        progress(total)
    return report


async def import_file(
    session: AsyncSession,
    dataset: Dataset,
    fh: IO[bytes],
    fmt: ImportFormat,
    *,
    max_chars: int,
    mode: ImportMode = ImportMode.partial,
    progress: Progress | None = None,
) -> ImportReport:
    try:
        return await import_rows(session, dataset, READERS[fmt](fh, max_chars), mode=mode, progress=progress)
    except InputError as exc:
        raise InvalidInput(str(exc), details={"format": fmt.value}) from None


async def get_or_404(session: AsyncSession, prompt_id: int, dataset_id: int | None = None) -> Prompt:
    prompt = await repo.get(session, prompt_id)
    if prompt is None or (dataset_id is not None and prompt.dataset_id != dataset_id):
        where = f" in dataset {dataset_id}" if dataset_id is not None else ""
        raise NotFound(f"prompt {prompt_id} does not exist{where}")
    return prompt


async def create(session: AsyncSession, dataset: Dataset, data: PromptCreate, *, actor: str, max_chars: int) -> Prompt:
    check_text(data.text, max_chars)
    digest = content_hash(data.text)
    if await repo.exists_text(session, dataset.id, digest):
        raise Conflict("a prompt with the same text is already in this dataset", details={"field": "text"})
    prompt = Prompt(
        dataset_id=dataset.id, text=data.text, content_hash=digest, source=data.source.value,
        split=data.split.value if data.split else None, tags=data.tags, meta=data.meta,
    )
    change = Change(session)
    change.add(prompt)
    await session.flush()
    await session.refresh(prompt)
    await change.record(actor=actor, action="create")
    return prompt


async def update(session: AsyncSession, prompt: Prompt, data: PromptUpdate, *, actor: str, max_chars: int) -> Prompt:
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return prompt
    refuse_if_leased_to_other(prompt, actor)  # a reviewer holding the item decides its state
    change = Change(session, prompt)
    if "text" in changes:
        if changes["text"] is None:
            raise InvalidInput("text: may not be null", details={"field": "text"})
        check_text(changes["text"], max_chars)
        digest = content_hash(changes["text"])
        if await repo.exists_text(session, prompt.dataset_id, digest, exclude_id=prompt.id):
            raise Conflict("another prompt in this dataset has the same text", details={"field": "text"})
        prompt.content_hash = digest
    for key in ("review_status", "tags", "meta", "flag_reasons"):
        if key in changes and changes[key] is None:
            raise InvalidInput(f"{key}: may not be null", details={"field": key})
    for key, value in changes.items():
        setattr(prompt, key, value.value if hasattr(value, "value") else value)
    await session.flush()
    await session.refresh(prompt)
    await change.record(actor=actor, action="update")
    return prompt
