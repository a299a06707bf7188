"""Prompt rules: bulk import, create, update. Services flush, never commit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import IO

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import Change, refuse_if_leased_to_other
from app.errors import Conflict, InvalidInput, NotFound
from app.models import Dataset, FlagReason, Prompt, ReviewStatus
from app.prompts import dedup
from app.prompts import repository as repo
from app.prompts.hashing import content_hash
from app.prompts.parsing import READERS, InputError, ParsedRow
from app.prompts.schemas import (
    DedupCluster,
    DedupReport,
    ImportFormat,
    ImportMode,
    ImportReport,
    NearDuplicate,
    NearDuplicateMode,
    PromptCreate,
    PromptUpdate,
    RowError,
)
from app.text import check_text

REPORT_LIMIT = 1000
PROGRESS_EVERY = 5000
KEY_BATCH = 2048  # rows whose band keys are computed together (numpy over the batch)
# a big import goes through the stage this many rows at a time: the next chunk is read, parsed
# and keyed in a worker thread while Postgres inserts the previous one, so both cores work
CHUNK_ROWS = 25_000

Progress = Callable[[int], None]


class ImportRejected(InvalidInput):
    """All-or-nothing import with invalid rows: nothing was written. details = the report."""


# default of settings.import_within_input_max_rows: inputs with more new prompts are compared
# with the stored prompts only (comparing a million rows with each other costs more than the import)
WITHIN_INPUT_MAX = 100_000


@dataclass(slots=True)
class Chunk:
    """Rows read and checked in a worker thread: the valid ones with their band keys, the errors."""

    rows: list[tuple[int, ParsedRow]]
    keys: list[list[int]]
    errors: list[tuple[int, str]]
    total: int


async def chunks_ahead(rows: Iterable[tuple[int, ParsedRow | str]], size: int, dataset_id: int) -> AsyncIterator[Chunk]:
    """The input `size` rows at a time, each chunk read, parsed and keyed in a worker thread
    while the caller writes the one before (one chunk ahead: memory stays bounded)."""
    it = iter(rows)

    def read() -> Chunk | None:
        valid, errors, total = [], [], 0
        for line, row in islice(it, size):
            total += 1
            if isinstance(row, str):
                errors.append((line, row))
            else:
                valid.append((line, row))
        if not total:
            return None
        keys = dedup.lsh_keys([r.text for _, r in valid], dataset_id).tolist() if valid else []
        return Chunk(valid, keys, errors, total)

    ahead = asyncio.ensure_future(anyio.to_thread.run_sync(read))
    try:
        while (chunk := await ahead) is not None:
            ahead = asyncio.ensure_future(anyio.to_thread.run_sync(read))
            yield chunk
    finally:
        # the import stopped early (an error): the chunk being read is not wanted (a thread cannot
        # be stopped; its result, or its error, is dropped with the task)
        ahead.cancel()


async def import_rows(
    session: AsyncSession,
    dataset: Dataset,
    rows: Iterable[tuple[int, ParsedRow | str]],
    *,
    mode: ImportMode = ImportMode.partial,
    near_duplicates: NearDuplicateMode = NearDuplicateMode.flag,
    threshold: float = 0.7,
    within_input_max: int = WITHIN_INPUT_MAX,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
) -> ImportReport:
    """Stage the valid rows (with their band keys) with COPY, check the stage against the stored
    prompts for near-duplicates in one join, then insert the new ones in one statement.

    An input of up to `within_input_max` valid rows is staged whole, and its rows are also
    compared with each other. A bigger one is compared with the prompts stored before it only
    (the report says so) and goes through the stage `chunk_rows` at a time: Postgres inserts a
    chunk while the next is parsed. Runs inside the caller's transaction: either the whole
    import lands or none of it does (an all-or-nothing import with an invalid row raises
    ImportRejected, and the caller's rollback undoes any chunk already inserted).
    """
    pg = await repo.driver_connection(session)
    await repo.create_stage(pg, dedup.BANDS)
    report = ImportReport(
        mode=mode, total=0, inserted=0, duplicates=0, invalid=0, duplicate_lines=[], errors=[],
        near_duplicate_mode=near_duplicates,
    )
    stored_max_id: int | None = None  # set once the input is over the bound: the prompts stored before it
    found = Found()
    last_yield = time.monotonic()
    chunks = chunks_ahead(rows, chunk_rows, dataset.id)
    more = True
    while more:
        staged = 0
        async with repo.copy_stage(pg, dedup.BANDS) as copy:
            copy.set_types(repo.stage_types(dedup.BANDS))
            while staged <= (within_input_max if stored_max_id is None else chunk_rows - 1):
                chunk = await anext(chunks, None)
                if chunk is None:
                    more = False
                    break
                for line, message in chunk.errors:
                    if len(report.errors) < REPORT_LIMIT:
                        report.errors.append(RowError(line=line, message=message))
                report.invalid += len(chunk.errors)
                for (line, r), k in zip(chunk.rows, chunk.keys, strict=True):
                    meta = json.dumps(r.meta) if r.meta else "{}"  # as psycopg's jsonb dumper writes it
                    await copy.write_row((line, r.text, r.content_hash, r.source, r.split, r.tags, meta, *k))
                    staged += 1
                    if staged % PROGRESS_EVERY == 0 and time.monotonic() - last_yield > 0.05:
                        await asyncio.sleep(0)  # let other requests run during big imports
                        last_yield = time.monotonic()
                report.total += chunk.total
                if progress:
                    progress(report.total)
        if more and stored_max_id is None:  # over the bound: from here on, chunk by chunk
            stored_max_id = await repo.max_prompt_id(pg, dataset.id)
        if not (mode is ImportMode.all_or_nothing and report.invalid):  # else read on for the report only
            await settle_stage(pg, session, dataset.id, report, found, near_duplicates, threshold, stored_max_id, staged)
        await repo.clear_stage(pg)
    if mode is ImportMode.all_or_nothing and report.invalid:
        report.committed = False
        first = report.errors[0]
        raise ImportRejected(
            f"{report.invalid} invalid row(s), first at line {first.line}: {first.message}; nothing was imported",
            details=report.model_dump(),
        )
    report.near_duplicates_within_input = stored_max_id is None
    report.near_duplicates = found.count
    report.near_duplicate_matches = found.listed[:REPORT_LIMIT]
    # a concurrent import may have taken some texts between the statements
    report.duplicates = report.total - report.invalid - found.skipped - report.inserted
    if progress:
        progress(report.total)
    return report


@dataclass(slots=True)
class Found:
    """The near-duplicates of an import so far (over its chunks)."""

    count: int = 0
    skipped: int = 0
    listed: list[NearDuplicate] = field(default_factory=list)


async def settle_stage(
    pg, session: AsyncSession, dataset_id: int, report: ImportReport, found: Found,
    near_duplicates: NearDuplicateMode, threshold: float, stored_max_id: int | None, staged: int,
) -> None:
    """What is staged (`staged` rows): its exact duplicates counted, its near-duplicates found
    (with each other as well when `stored_max_id` is None, else with the prompts up to that id),
    and the new prompts inserted. Adds to the report and `found`.

    A whole input's stage is checked for exact duplicates first (the comparison inside the input
    leaves them out). A chunk's are what its insert skips (ON CONFLICT): counted from the insert,
    and their lines looked up only when there are some, which spares a pass over every chunk."""
    chunked = stored_max_id is not None
    if chunked:
        dup_count, before = None, await repo.max_prompt_id(pg, dataset_id)
    else:
        dup_count, dup_lines = await repo.stage_duplicates(pg, dataset_id, REPORT_LIMIT)
        report.duplicate_lines = sorted([*report.duplicate_lines, *dup_lines])[:REPORT_LIMIT]
    matches = await stage_near_duplicates(
        pg, dataset_id, near_duplicates, threshold, exact_duplicates=dup_count is None or dup_count > 0,
        within_input=not chunked, stored_max_id=stored_max_id,
    )
    skipped = len(matches) if near_duplicates is NearDuplicateMode.skip else 0
    inserted = await repo.insert_from_stage(
        pg, dataset_id, deduplicate=bool(dup_count),
        flag=near_duplicates is NearDuplicateMode.flag and any(m.earlier is None for m in matches),
    )
    report.inserted += inserted
    if chunked and staged - skipped - inserted > 0 and len(report.duplicate_lines) < REPORT_LIMIT:
        lines = await repo.stage_lines_not_inserted(pg, dataset_id, before, REPORT_LIMIT)
        report.duplicate_lines = sorted([*report.duplicate_lines, *lines])[:REPORT_LIMIT]
    listed = await finish_near_duplicates(session, pg, dataset_id, near_duplicates, matches)
    found.count += len(matches)
    found.skipped += skipped
    found.listed += listed[: REPORT_LIMIT - len(found.listed)]


async def stage_near_duplicates(
    pg, dataset_id: int, mode: NearDuplicateMode, threshold: float, *,
    stage: str = repo.PROMPT_STAGE, exact_duplicates: bool = True, within_input: bool = True,
    stored_max_id: int | None = None,
) -> list[dedup.Match]:
    """The near-duplicate rule of every bulk import, on a stage of new prompts (repository.STAGES):
    find the staged rows that nearly duplicate a stored prompt or an earlier staged row
    (dedup.first_come), and drop them (skip) or mark those matching a
    stored prompt (flag, keep; a match inside the input is flagged by `finish_near_duplicates`
    once its prompt has an id). `exact_duplicates=False`: the stage holds each text once, none
    stored. `within_input=False`: only against the stored prompts (an input over the bound; its
    report says so). `stored_max_id`: only the stored prompts up to that id count (those stored
    before a chunked import began). Returns the matches, in line order."""
    stored: dict[int, dedup.Match] = {}
    if await repo.has_keyed_prompts(pg, dataset_id, stored_max_id):
        candidates = await repo.stage_near_duplicate_candidates(pg, dataset_id, dedup.CANDIDATES_PER_KEY, stage, stored_max_id)
        stored = dedup.best_matches(candidates, threshold)
    within: list[tuple[int, int, float]] = []
    if within_input:
        chunks = repo.stage_batch_candidates(pg, dataset_id, stage, exact_duplicates=exact_duplicates, chunk=dedup.VERIFY_BATCH)
        async for chunk in chunks:
            texts = {i: t for a, b, ta, tb in chunk for i, t in ((a, ta), (b, tb))}
            within += dedup.best_pairs([(a, b) for a, b, _, _ in chunk], texts, threshold)
    skip = mode is NearDuplicateMode.skip
    matches = dedup.first_come(stored, within, skip=skip)
    if marked := [m for m in matches if skip or m.earlier is None]:
        await repo.mark_stage_near_duplicates(
            pg, [m.index for m in marked], [json.dumps(m.details()) for m in marked], drop=skip, stage=stage
        )
    return matches


async def finish_near_duplicates(
    session: AsyncSession, pg, dataset_id: int, mode: NearDuplicateMode, matches: list[dedup.Match], *,
    stage: str = repo.PROMPT_STAGE,
) -> list[NearDuplicate]:
    """After the insert: the prompt ids of matches inside the input, flagged with them (flag);
    returns the report's list of the matches."""
    ids: dict[int, int] = {}
    if inside := [m for m in matches if m.earlier is not None]:
        ids = await repo.stage_prompt_ids(pg, dataset_id, {i for m in inside for i in (m.index, m.earlier)}, stage)
        if mode is NearDuplicateMode.flag:
            await repo.flag_near_duplicates(
                session, {ids[m.index]: json.dumps(m.details(ids[m.earlier])) for m in inside if m.index in ids and m.earlier in ids}
            )
    return [
        NearDuplicate(line=m.index, prompt_id=m.prompt_id if m.earlier is None else ids.get(m.earlier),
                      similarity=round(m.similarity, 4), matched_line=m.earlier)
        for m in matches[:REPORT_LIMIT]
    ]


async def import_file(
    session: AsyncSession,
    dataset: Dataset,
    fh: IO[bytes],
    fmt: ImportFormat,
    *,
    max_chars: int,
    mode: ImportMode = ImportMode.partial,
    near_duplicates: NearDuplicateMode = NearDuplicateMode.flag,
    threshold: float = 0.7,
    within_input_max: int = WITHIN_INPUT_MAX,
    progress: Progress | None = None,
) -> ImportReport:
    try:
        return await import_rows(
            session, dataset, READERS[fmt](fh, max_chars), mode=mode, near_duplicates=near_duplicates,
            threshold=threshold, within_input_max=within_input_max, progress=progress,
        )
    except InputError as exc:
        raise InvalidInput(str(exc), details={"format": fmt.value}) from None


async def get_or_404(session: AsyncSession, prompt_id: int, dataset_id: int | None = None) -> Prompt:
    prompt = await repo.get(session, prompt_id)
    if prompt is None or (dataset_id is not None and prompt.dataset_id != dataset_id):
        where = f" in dataset {dataset_id}" if dataset_id is not None else ""
        raise NotFound(f"prompt {prompt_id} does not exist{where}")
    return prompt


async def create(
    session: AsyncSession,
    dataset: Dataset,
    data: PromptCreate,
    *,
    actor: str,
    max_chars: int,
    near_duplicates: NearDuplicateMode = NearDuplicateMode.flag,
    threshold: float = 0.7,
) -> Prompt:
    check_text(data.text, max_chars)
    digest = content_hash(data.text)
    if await repo.exists_text(session, dataset.id, digest):
        raise Conflict("a prompt with the same text is already in this dataset", details={"field": "text"})
    (match,), keys = await dedup.find_near_duplicates(session, dataset.id, [data.text], threshold)
    if match is not None and near_duplicates is NearDuplicateMode.skip:
        raise Conflict(
            f"the text nearly duplicates prompt {match.prompt_id} (similarity {match.similarity:.2f}); "
            "pass near_duplicates=flag or keep to store it anyway",
            details={"field": "text", "near_duplicate": match.details()},
        )
    prompt = Prompt(
        dataset_id=dataset.id, text=data.text, content_hash=digest, source=data.source.value,
        split=data.split.value if data.split else None, tags=data.tags, meta=data.meta, lsh_keys=keys[0].tolist(),
    )
    if match is not None and near_duplicates is NearDuplicateMode.flag:
        flag_near_duplicate(prompt, match.details())
    change = Change(session)
    change.add(prompt)
    await session.flush()
    await session.refresh(prompt)
    await change.record(actor=actor, action="create")
    return prompt


def flag_near_duplicate(prompt: Prompt, details: dict) -> None:
    prompt.flag_reasons = [*(prompt.flag_reasons or []), FlagReason.near_duplicate.value]
    prompt.meta = {**(prompt.meta or {}), "flag_details": {**(prompt.meta or {}).get("flag_details", {}), "near_duplicate": details}}
    prompt.review_status = ReviewStatus.needs_review.value


async def update(session: AsyncSession, prompt: Prompt, data: PromptUpdate, *, actor: str, max_chars: int) -> Prompt:
    """Change a prompt. A new text gets new band keys, and the completions and rankings made for
    the old one turn `stale` (kept and shown, left out of exports until a reviewer approves the
    item again) and the prompt goes back to review; the same audit event records them
    (`related`)."""
    changes = data.model_dump(exclude_unset=True)
    if not changes:
        return prompt
    refuse_if_leased_to_other(prompt, actor)  # a reviewer holding the item decides its state
    change = Change(session, prompt)
    text_changed = "text" in changes and changes["text"] != prompt.text
    if "text" in changes:
        if changes["text"] is None:
            raise InvalidInput("text: may not be null", details={"field": "text"})
        check_text(changes["text"], max_chars)
        digest = content_hash(changes["text"])
        if await repo.exists_text(session, prompt.dataset_id, digest, exclude_id=prompt.id):
            raise Conflict("another prompt in this dataset has the same text", details={"field": "text"})
        prompt.content_hash = digest
        prompt.lsh_keys = dedup.lsh_keys([changes["text"]], prompt.dataset_id)[0].tolist()
    for key in ("review_status", "tags", "meta", "flag_reasons"):
        if key in changes and changes[key] is None:
            raise InvalidInput(f"{key}: may not be null", details={"field": key})
    for key, value in changes.items():
        setattr(prompt, key, value.value if hasattr(value, "value") else value)
    if text_changed:
        made_for_old_text = await repo.answers_of(session, prompt.id)
        for row in made_for_old_text:
            change.touch(row).review_status = ReviewStatus.stale.value
        if made_for_old_text:  # back to the reviewers, who approve the item again
            if FlagReason.text_changed.value not in prompt.flag_reasons:
                prompt.flag_reasons = [*prompt.flag_reasons, FlagReason.text_changed.value]
            if "review_status" not in changes:
                prompt.review_status = ReviewStatus.needs_review.value
    await session.flush()
    await session.refresh(prompt)
    await change.record(actor=actor, action="update")
    return prompt


async def dedup_pass(session: AsyncSession, dataset: Dataset, *, threshold: float, flag: bool = False) -> DedupReport:
    """Cluster the dataset's stored prompts by near-duplication (keying those without band keys
    first); with `flag`, mark every prompt that nearly duplicates an older one `near_duplicate`
    (meta.flag_details names the older one)."""
    keyed = await dedup.ensure_keys(session, dataset.id)
    clusters = await dedup.cluster(session, dataset.id, threshold)
    by_root: dict[int, list[tuple[int, int, float]]] = {}
    root_of = {m: root for root, members in clusters.groups.items() for m in members}
    for a, b, sim in clusters.pairs:
        by_root.setdefault(root_of[a], []).append((a, b, round(sim, 4)))
    listed = sorted(clusters.groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:REPORT_LIMIT]
    flagged = 0
    if flag:
        best: dict[int, tuple[int, float]] = {}
        for a, b, sim in clusters.pairs:
            if a not in best or sim > best[a][1]:
                best[a] = (b, sim)
        flagged = await repo.flag_near_duplicates(
            session, {a: json.dumps({"prompt_id": b, "similarity": round(sim, 4)}) for a, (b, sim) in best.items()}
        )
    return DedupReport(
        dataset_id=dataset.id, threshold=threshold, prompts=await repo.count(session, dataset.id), keyed_now=keyed,
        near_duplicate_pairs=len(clusters.pairs), clustered_prompts=len(root_of), clusters=len(clusters.groups),
        flagged=flagged, found=[DedupCluster(root=r, members=m, pairs=sorted(by_root.get(r, []))) for r, m in listed],
    )
