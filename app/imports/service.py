"""Importing existing data: prompts with their completions and rankings, from the project's own
export files or TRL's shapes of them. Services flush, never commit: the whole import lands in the
caller's transaction or none of it does.

Rules (docs/guide.md, "Importing completions and rankings"):
- A prompt whose text is already in the dataset (same content hash) is reused, as is a completion
  of that prompt with the same text: an answer is never stored twice for one prompt.
- A new prompt nearly duplicating a stored one or an earlier line's new prompt follows the prompt
  import's rule (`near_duplicates` skip | flag | keep, app/prompts/service.stage_near_duplicates):
  skip leaves out every line of that prompt (its answers and rankings with it).
- Completions get source `imported`, rankings ranker_kind `imported`; both carry the file's name,
  sha256 and line as provenance. An imported ranking counts in exports like a human one (people
  made it elsewhere) unless it is rejected, and so does an imported completion as an SFT target.
- RM: one ranking per line. Pairs: a prompt's pairs become one ranking when they are exactly the
  pairs of one ranking, else one 2-way ranking per pair (repository.stage_pair_rankings).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import IO

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidInput
from app.imports import repository as repo
from app.imports.parsing import HashingReader, ImportRow, InputError, is_json_array, read_rows
from app.imports.schemas import RecordFormat, RecordImportReport
from app.models import Dataset
from app.prompts import dedup
from app.prompts.repository import driver_connection
from app.prompts.schemas import ImportMode, NearDuplicateMode, RowError, Split
from app.prompts.service import (
    KEY_BATCH,
    REPORT_LIMIT,
    WITHIN_INPUT_MAX,
    ImportRejected,
    finish_near_duplicates,
    stage_near_duplicates,
)

PROGRESS_EVERY = 5000
NEW_PROMPTS = "record_import_new_prompt"  # repository.stage_new_prompts

Progress = Callable[[int], None]

# the files an export writes: {format}.{split}.jsonl
_EXPORT_NAME = re.compile(r"(?:^|/)(sft|rm|pairs|sft_chat|pairs_chat)(?:\.(train|validation|test))?\.jsonl?$")


def guess_from_name(name: str | None) -> tuple[RecordFormat | None, Split | None]:
    """The format and split an export file's name says (`rm.train.jsonl`), if it is one."""
    m = _EXPORT_NAME.search(name or "")
    if not m:
        return None, None
    return RecordFormat(m.group(1)), Split(m.group(2)) if m.group(2) else None


async def import_file(
    session: AsyncSession,
    dataset: Dataset,
    fh: IO[bytes],
    fmt: RecordFormat,
    *,
    file_name: str,
    split: Split | None,
    max_chars: int,
    mode: ImportMode = ImportMode.partial,
    near_duplicates: NearDuplicateMode = NearDuplicateMode.flag,
    threshold: float = 0.7,
    actor: str,
    within_input_max: int = WITHIN_INPUT_MAX,
    progress: Progress | None = None,
) -> RecordImportReport:
    """Stage every valid line (with its prompt's band keys) with COPY, then resolve prompts,
    completions and rankings in SQL."""
    pg = await driver_connection(session)
    await repo.create_stage(pg, dataset.id)
    reader = HashingReader(fh)
    total = invalid = 0
    errors: list[RowError] = []
    last_yield = time.monotonic()
    pending: list[tuple[int, ImportRow]] = []

    async def flush(copy) -> None:
        keys = dedup.lsh_keys([row.prompt for _, row in pending], dataset.id).tolist()
        for (line, row), k in zip(pending, keys, strict=True):
            ranks = row.ranks or (None,)
            for pos, (text, digest) in enumerate(zip(row.completions, row.hashes, strict=True)):
                first = pos == 0
                await copy.write_row(
                    (line, pos, row.prompt if first else None, row.prompt_hash, k if first else None, text, digest,
                     ranks[pos] if row.ranks else None)
                )
        pending.clear()

    try:
        array = is_json_array(fh)
        async with repo.copy_stage(pg) as copy:
            copy.set_types(list(repo.STAGE_TYPES))
            for line, row in read_rows(reader, fmt, max_chars, array=array):
                total += 1
                if isinstance(row, str):
                    invalid += 1
                    if len(errors) < REPORT_LIMIT:
                        errors.append(RowError(line=line, message=row))
                    continue
                pending.append((line, row))
                if len(pending) >= KEY_BATCH:
                    await flush(copy)
                if total % PROGRESS_EVERY == 0:
                    if progress:
                        progress(total)
                    if time.monotonic() - last_yield > 0.05:  # let other requests run during big imports
                        await asyncio.sleep(0)
                        last_yield = time.monotonic()
            await flush(copy)
    except InputError as exc:
        raise InvalidInput(str(exc), details={"format": fmt.value}) from None
    report = RecordImportReport(
        mode=mode, total=total, inserted=0, duplicates=0, invalid=invalid, duplicate_lines=[], errors=errors,
        format=fmt, file=file_name, sha256=reader.sha256.hexdigest(), split=split, near_duplicate_mode=near_duplicates,
    )
    if mode == ImportMode.all_or_nothing and invalid:
        report.committed = False
        raise ImportRejected(
            f"{invalid} invalid line(s), first at line {errors[0].line}: {errors[0].message}; nothing was imported",
            details=report.model_dump(mode="json"),
        )
    prov = {"file": file_name, "sha256": report.sha256, "format": fmt.value, "by": actor}
    await repo.stage_prompts(pg)
    await repo.match_prompts(pg, dataset.id)
    # the duplicate rules of the prompt import: the same text is the same prompt (content hash);
    # a new text nearly duplicating a stored prompt or an earlier line's new prompt is left out with
    # its line(s) (skip), flagged (flag) or stored as it is (keep)
    await repo.stage_new_prompts(pg)
    report.near_duplicates_within_input = await repo.new_prompt_count(pg) <= within_input_max
    matches = await stage_near_duplicates(
        pg, dataset.id, near_duplicates, threshold, stage=NEW_PROMPTS, exact_duplicates=False,
        within_input=report.near_duplicates_within_input,
    )
    report.near_duplicates = len(matches)
    skipped = await repo.drop_skipped_prompts(pg) if matches and near_duplicates is NearDuplicateMode.skip else 0
    report.prompts_created, report.prompts_reused = await repo.insert_prompts(
        pg, dataset.id, split and split.value, prov,
        flag=near_duplicates is NearDuplicateMode.flag and any(m.earlier is None for m in matches),
    )
    report.near_duplicate_matches = await finish_near_duplicates(session, pg, dataset.id, near_duplicates, matches, stage=NEW_PROMPTS)
    report.completions_created, report.completions_reused = await repo.resolve_completions(pg, dataset.id, prov)
    await repo.create_new_lines(pg)
    if fmt in (RecordFormat.rm,):
        await repo.stage_rm_rankings(pg)
    elif fmt in (RecordFormat.pairs, RecordFormat.pairs_chat):
        report.unmerged_pair_prompts = await repo.stage_pair_rankings(pg)
    if fmt not in (RecordFormat.sft, RecordFormat.sft_chat):
        report.rankings_created = await repo.insert_rankings(pg, dataset.id, prov)
    report.duplicates, report.duplicate_lines = await repo.duplicate_lines(pg, REPORT_LIMIT)
    report.inserted = total - invalid - skipped - report.duplicates
    if progress:
        progress(total)
    return report
