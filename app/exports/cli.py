"""`rlhf-forge export --dataset NAME --out DIR`: freeze a new version (or render an existing one
again) into a directory, with a progress bar."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from app import db
from app.config import Settings, get_settings
from app.datasets import service as datasets
from app.errors import AppError
from app.exports import service, tasks
from app.exports.schemas import DEFAULT_FORMATS, ExportCreate, ExportFilters, ExportFormat, PairsMode, SplitSpec
from app.models import PromptSource, ReviewStatus
from trainer.formats import Manifest

cli = typer.Typer(help="Export datasets as JSONL files with a manifest.")
console = Console(stderr=True)


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
            err = exc.errors()[0]
            console.print(f"[red]error:[/red] {'.'.join(map(str, err['loc'])) or 'options'}: {err['msg']}")
            raise typer.Exit(2) from None
    try:
        manifest = asyncio.run(_export(get_settings(), dataset, out, version, request))
    except AppError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    table = Table(title=f"{manifest.dataset} v{manifest.dataset_version} -> {out}")
    for column in ("file", "rows", "sha256"):
        table.add_column(column)
    for name, info in sorted(manifest.files.items()):
        table.add_row(name, str(info["rows"]), info["sha256"][:16])
    Console().print(table)


async def _export(settings: Settings, name: str, out: Path, version: int | None, request: ExportCreate | None) -> Manifest:
    url, embedded = db.resolve_database_url(settings)
    engine = None
    try:
        db.check_schema(url)
        engine = db.make_engine(url, settings)
        sessions = db.session_factory(engine)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        ) as progress:
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
    finally:
        if engine is not None:
            await engine.dispose()
        if embedded is not None:
            embedded.stop()
