"""`rlhf-forge import | datasets | export`: data in, a look at it, data out."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import rich.progress
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from app.cli.common import console, err, fail, open_database
from app.config import Settings, get_settings
from app.errors import AppError
from app.exports.schemas import DEFAULT_FORMATS, ExportCreate, ExportFilters, ExportFormat, PairsMode, SplitSpec
from app.models import PromptSource, ReviewStatus
from trainer.formats import Manifest

cli = typer.Typer()


async def import_prompts(settings: Settings, file: Path, dataset_name: str, fmt, mode, create: bool, near_duplicates=None):
    """Import FILE into the dataset in one transaction; the report and the dataset's id."""
    from app.datasets import service as datasets
    from app.prompts import service as prompts

    async with open_database(settings) as database, database.sessions() as session:
        dataset = await (datasets.get_or_create(session, dataset_name) if create else datasets.get_by_name_or_404(session, dataset_name))
        with rich.progress.open(file, "rb", description=f"importing {file.name}", console=err) as fh:
            report = await prompts.import_file(
                session, dataset, fh, fmt, max_chars=settings.max_text_chars, mode=mode,
                near_duplicates=near_duplicates or "flag", threshold=settings.synth_near_dup_threshold,
                within_input_max=settings.import_within_input_max_rows,
            )
        await session.commit()
        return report, dataset.id


async def import_records(settings: Settings, file: Path, dataset_name: str, fmt, split, mode, create: bool, near_duplicates=None):
    """Import FILE's completions and rankings (with their prompts) in one transaction."""
    from app.datasets import service as datasets
    from app.imports import service as imports

    async with open_database(settings) as database, database.sessions() as session:
        dataset = await (datasets.get_or_create(session, dataset_name) if create else datasets.get_by_name_or_404(session, dataset_name))
        with rich.progress.open(file, "rb", description=f"importing {file.name}", console=err) as fh:
            report = await imports.import_file(
                session, dataset, fh, fmt, file_name=file.name, split=split, max_chars=settings.max_text_chars, mode=mode,
                near_duplicates=near_duplicates or "flag", threshold=settings.synth_near_dup_threshold,
                within_input_max=settings.import_within_input_max_rows, actor="cli",
            )
        await session.commit()
        return report


@cli.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A file of prompts, or of records of an export format.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")],
    format: Annotated[
        str | None,
        typer.Option(help="Prompts: json | jsonl | csv (default: from the file name). Prompts with completions and "
                          "rankings: sft | rm | pairs | sft_chat | pairs_chat (the export formats; pairs also TRL's)."),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="With a records format: the split of the prompts it creates (default: from an export's file name).")
    ] = None,
    all_or_nothing: Annotated[bool, typer.Option(help="Import nothing if any row is invalid.")] = False,
    create: Annotated[bool, typer.Option(help="Create the dataset if it does not exist.")] = True,
    near_duplicates: Annotated[
        str, typer.Option(help="skip | flag | keep: what to do with a row whose (new) prompt nearly duplicates a stored "
                               "prompt or an earlier row's; skip leaves out the whole row.")
    ] = "flag",
) -> None:
    """Import prompts, or prompts with their completions and rankings, from FILE into a dataset, in
    one transaction, with a progress bar."""
    from app.imports.schemas import RecordFormat
    from app.imports.service import guess_from_name
    from app.prompts.parsing import guess_format
    from app.prompts.schemas import ImportFormat, ImportMode, NearDuplicateMode, Split

    mode = ImportMode.all_or_nothing if all_or_nothing else ImportMode.partial
    settings = get_settings()
    try:
        near = NearDuplicateMode(near_duplicates)
    except ValueError:
        fail(f"--near-duplicates must be skip, flag or keep, got {near_duplicates!r}")
    try:
        if format in set(RecordFormat):
            try:
                chosen_split = Split(split) if split else guess_from_name(file.name)[1]
            except ValueError:
                fail(f"--split must be train, validation or test, got {split!r}")
            report = asyncio.run(import_records(settings, file, dataset, RecordFormat(format), chosen_split, mode, create, near))
        else:
            try:
                fmt = ImportFormat(format) if format else guess_format(file.name, None)
            except ValueError:
                fail(f"--format must be json, jsonl, csv, sft, rm, pairs, sft_chat or pairs_chat, got {format!r}")
            if fmt is None:
                fail(f"cannot tell the format of {file.name}: name it .jsonl/.json/.csv or pass --format")
            if split:
                fail("--split goes with a records format (sft, rm, pairs, ...); prompts carry their own 'split'")
            report, _ = asyncio.run(import_prompts(settings, file, dataset, fmt, mode, create, near))
    except AppError as exc:
        if exc.details and isinstance(exc.details, dict) and "errors" in exc.details:
            for e in exc.details["errors"][:20]:
                err.print(f"  line {e['line']}: {e['message']}")
        fail(exc.message)
    console.print(
        f"[green]{report.inserted}[/green] inserted, {report.duplicates} duplicate, "
        f"[{'red' if report.invalid else 'green'}]{report.invalid}[/] invalid of {report.total} rows"
    )
    if format in set(RecordFormat):
        console.print(
            f"prompts {report.prompts_created} new / {report.prompts_reused} reused, completions "
            f"{report.completions_created} new / {report.completions_reused} reused, rankings {report.rankings_created} new"
        )
    if report.near_duplicates:
        console.print(f"{report.near_duplicates} near-duplicate prompt(s) ({report.near_duplicate_mode.value})")
    if not report.near_duplicates_within_input:
        console.print(
            "the new prompts were compared with the stored ones only, not with each other (more than "
            "FORGE_IMPORT_WITHIN_INPUT_MAX_ROWS): run `rlhf-forge dedup --dataset NAME` to find those"
        )
    for e in report.errors[:20]:
        console.print(f"  line {e.line}: {e.message}")
    if report.invalid > 20:
        console.print(f"  ... and {report.invalid - 20} more")


async def _dedup(settings: Settings, dataset_name: str, flag: bool):
    from app.datasets import service as datasets
    from app.prompts import service as prompts

    async with open_database(settings) as database, database.sessions() as session:
        dataset = await datasets.get_by_name_or_404(session, dataset_name)
        report = await prompts.dedup_pass(session, dataset, threshold=settings.synth_near_dup_threshold, flag=flag)
        await session.commit()
        return report


@cli.command("dedup")
def dedup_(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")],
    flag: Annotated[bool, typer.Option(help="Flag every prompt that nearly duplicates an older one `near_duplicate`.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
) -> None:
    """Cluster a dataset's stored prompts by near-duplication and report the clusters."""
    try:
        report = asyncio.run(_dedup(get_settings(), dataset, flag))
    except AppError as exc:
        fail(exc.message)
    if json_out:
        console.print_json(report.model_dump_json())
        return
    console.print(
        f"{report.prompts} prompts: {report.near_duplicate_pairs} near-duplicate pair(s) in {report.clusters} cluster(s) "
        f"of {report.clustered_prompts} prompts (threshold {report.threshold}); {report.keyed_now} keyed now, "
        f"{report.flagged} flagged"
    )
    for c in report.found[:20]:
        console.print(f"  cluster of {len(c.members)} from prompt {c.root}: {c.members[:12]}{' ...' if len(c.members) > 12 else ''}")


async def _datasets(settings: Settings):
    from app.datasets import repository as repo

    async with open_database(settings) as database, database.sessions() as session:
        rows = await repo.list_all(session)
        return rows, await repo.counts(session, [d.id for d in rows])


@cli.command("datasets")
def datasets_() -> None:
    """List datasets with their counts."""
    rows, counts = asyncio.run(_datasets(get_settings()))
    table = Table("id", "name", "prompts", "approved", "needs review", "completions", "rankings", "created")
    for d in rows:
        c = counts[d.id]
        table.add_row(
            str(d.id), d.name, str(c["prompts"]), str(c["prompts_by_status"].get("approved", 0)),
            str(c["prompts_by_status"].get("needs_review", 0)), str(c["completions"]), str(c["rankings"]),
            d.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@cli.command("export")
def export_command(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write {format}.{split}.jsonl and manifest.json into.")],
    version: Annotated[
        int | None, typer.Option(help="Render this frozen version again (byte-identical) instead of freezing a new one.")
    ] = None,
    fmt: Annotated[list[ExportFormat] | None, typer.Option("--format", "-f", help="Formats to write (repeat).")] = None,
    status: Annotated[
        list[ReviewStatus] | None, typer.Option(help="Accepted review statuses (repeat; default approved).")
    ] = None,
    min_consistency: Annotated[float | None, typer.Option(help="Minimum judge consistency.")] = None,
    exclude_flag: Annotated[list[str] | None, typer.Option(help="Drop rows with this flag (repeat).")] = None,
    exclude_flagged: Annotated[bool, typer.Option(help="Drop rows with any flag.")] = False,
    source: Annotated[list[PromptSource] | None, typer.Option(help="Prompt sources to keep (repeat).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Keep prompts with any of these tags (repeat).")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Keep completions of these models (repeat).")] = None,
    created_after: Annotated[datetime | None, typer.Option(help="Prompts created at or after.")] = None,
    created_before: Annotated[datetime | None, typer.Option(help="Prompts created before.")] = None,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    train: Annotated[float, typer.Option(help="Train ratio.")] = 0.9,
    validation: Annotated[float, typer.Option(help="Validation ratio.")] = 0.05,
    test: Annotated[float, typer.Option(help="Test ratio.")] = 0.05,
    rl_disjoint: Annotated[bool, typer.Option(help="Keep RL prompts out of SFT/RM.")] = False,
    pairs_mode: Annotated[PairsMode, typer.Option(help="all | best_vs_rest")] = PairsMode.all,
    margin: Annotated[bool, typer.Option(help="Add the rank gap as 'margin' to pairs.")] = False,
    archive: Annotated[bool, typer.Option(help="Also write DIR.tar.gz.")] = False,
) -> None:
    """Export a dataset: SFT, RM, RL and pairs JSONL per split, plus manifest.json."""
    request = None
    if version is None:
        try:
            request = ExportCreate(
                filters=ExportFilters(
                    status=status or [ReviewStatus.approved],
                    min_consistency=min_consistency,
                    exclude_flags=exclude_flag or [],
                    exclude_flagged=exclude_flagged,
                    source=source or [],
                    tags=tag or [],
                    models=model or [],
                    created_after=created_after,
                    created_before=created_before,
                ),
                split=SplitSpec(seed=seed, train=train, validation=validation, test=test, rl_disjoint=rl_disjoint),
                formats=fmt or list(DEFAULT_FORMATS),
                pairs_mode=pairs_mode,
                margin=margin,
                archive=archive,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            err.print(f"[red]error:[/red] {'.'.join(map(str, first['loc'])) or 'options'}: {first['msg']}")
            raise typer.Exit(2) from None
    try:
        manifest = asyncio.run(_export(get_settings(), dataset, out, version, request))
    except AppError as exc:
        fail(exc.message)
    table = Table(title=f"{manifest.dataset} v{manifest.dataset_version} -> {out}")
    for column in ("file", "rows", "sha256"):
        table.add_column(column)
    for name, info in sorted(manifest.files.items()):
        table.add_row(name, str(info["rows"]), info["sha256"][:16])
    Console().print(table)


async def _export(settings: Settings, name: str, out: Path, version: int | None, request: ExportCreate | None) -> Manifest:
    from app.datasets import service as datasets
    from app.exports import service, tasks

    async with open_database(settings) as database:
        sessions = database.sessions
        columns = (
            rich.progress.TextColumn("{task.description}"), rich.progress.BarColumn(), rich.progress.MofNCompleteColumn(),
            rich.progress.TimeRemainingColumn(),
        )
        with rich.progress.Progress(*columns, console=err) as progress:
            bar = progress.add_task("freezing", total=None)

            def on_progress(done: int, total: int, current: str) -> None:
                progress.update(bar, completed=done, total=total, description=current or "rows")

            async with sessions() as session:
                ds = await datasets.get_by_name_or_404(session, name)
                if version is not None:
                    export = await service.get_version_or_404(session, ds.id, version)
                    service.require_frozen(export)
                else:
                    export = await service.create(session, ds, request, actor="cli")
                    await session.commit()
            if version is not None:
                return await service.write_files(sessions, export, ds.name, out, on_progress=on_progress, track=False)
            await tasks.run_export(export.id, sessions=sessions, settings=settings, out_dir=out, on_progress=on_progress)
        return Manifest.load(out / "manifest.json")
