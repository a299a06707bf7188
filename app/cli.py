"""The command line: serve, worker, db, import, datasets, demo, train, ...

Commands that touch the database use DATABASE_URL when set, else the embedded Postgres in the
data folder (the same one `serve` uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Annotated

import rich.progress
import typer
from rich.console import Console
from rich.table import Table

from app.config import Settings, get_settings

cli = typer.Typer(help="rlhf-forge: build RLHF datasets with an LLM's help.", no_args_is_help=True, pretty_exceptions_show_locals=False)
db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")

console = Console()
err = Console(stderr=True)

EXAMPLE_PROMPTS = Path(__file__).parent / "examples" / "prompts.jsonl"


# pgserver asks platformdirs for a runtime dir that containers often lack; harmless
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@contextlib.contextmanager
def database(settings: Settings, *, check: bool = False):
    """The database URL, with the embedded Postgres started (and stopped) when needed.
    With `check`, exit with the fix when the schema is not at head."""
    from app.db import check_schema, resolve_database_url
    from app.errors import SchemaOutdated

    try:
        url, embedded = resolve_database_url(settings)
    except RuntimeError as exc:
        fail(str(exc))
    try:
        if check:
            try:
                check_schema(url)
            except SchemaOutdated as exc:
                fail(exc.message)
        yield url
    finally:
        if embedded is not None:
            embedded.stop()


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@db_cli.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the migrations up to REVISION (default: head)."""
    from app import db

    with database(get_settings()) as url:
        db.upgrade(url, revision)
        console.print(f"schema at {sorted(db.current_revisions(url))}")


@db_cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="e.g. base, or a revision id")]) -> None:
    """Revert the migrations down to REVISION."""
    from app import db

    with database(get_settings()) as url:
        db.downgrade(url, revision)
        console.print(f"schema at {sorted(db.current_revisions(url)) or 'base'}")


@db_cli.command("current")
def db_current() -> None:
    """Show the schema revision of the database and the one this version needs."""
    from app import db

    with database(get_settings()) as url:
        console.print(f"database: {sorted(db.current_revisions(url)) or 'empty'}; this version needs: {sorted(db.head_revisions())}")


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    worker: Annotated[bool, typer.Option(help="Run a job worker inside the server process.")] = True,
    log_level: str = "info",
) -> None:
    """Run the API (and, by default, a job worker) on HOST:PORT."""
    settings = get_settings()
    with database(settings, check=True) as url:
        _serve(settings.model_copy(update={"worker_in_process": worker, "database_url": url}), host, port, log_level)


def _serve(settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    from app.main import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pgserver", "alembic", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


async def _import(settings: Settings, url: str, file: Path, dataset_name: str, fmt, mode, create: bool):
    from app import db
    from app.datasets import service as datasets
    from app.prompts import service as prompts

    engine = db.make_engine(url, settings)
    try:
        async with db.session_factory(engine)() as session:
            dataset = await (datasets.get_or_create(session, dataset_name) if create else datasets.get_by_name_or_404(session, dataset_name))
            with rich.progress.open(file, "rb", description=f"importing {file.name}", console=err) as fh:
                report = await prompts.import_file(session, dataset, fh, fmt, max_chars=settings.max_text_chars, mode=mode)
            await session.commit()
            return report, dataset.id
    finally:
        await engine.dispose()


@cli.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A .jsonl, .json or .csv file of prompts.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")],
    format: Annotated[str | None, typer.Option(help="json | jsonl | csv (default: from the file name).")] = None,
    all_or_nothing: Annotated[bool, typer.Option(help="Import nothing if any row is invalid.")] = False,
    create: Annotated[bool, typer.Option(help="Create the dataset if it does not exist.")] = True,
) -> None:
    """Import prompts from FILE into a dataset, in one transaction, with a progress bar."""
    from app.errors import AppError
    from app.prompts.parsing import guess_format
    from app.prompts.schemas import ImportFormat, ImportMode

    try:
        fmt = ImportFormat(format) if format else guess_format(file.name, None)
    except ValueError:
        fail(f"--format must be json, jsonl or csv, got {format!r}")
    if fmt is None:
        fail(f"cannot tell the format of {file.name}: name it .jsonl/.json/.csv or pass --format")
    settings = get_settings()
    mode = ImportMode.all_or_nothing if all_or_nothing else ImportMode.partial
    with database(settings, check=True) as url:
        try:
            report, _ = asyncio.run(_import(settings, url, file, dataset, fmt, mode, create))
        except AppError as exc:
            if exc.details and isinstance(exc.details, dict) and "errors" in exc.details:
                for e in exc.details["errors"][:20]:
                    err.print(f"  line {e['line']}: {e['message']}")
            fail(exc.message)
    console.print(
        f"[green]{report.inserted}[/green] inserted, {report.duplicates} duplicate, "
        f"[{'red' if report.invalid else 'green'}]{report.invalid}[/] invalid of {report.total} rows"
    )
    for e in report.errors[:20]:
        console.print(f"  line {e.line}: {e.message}")
    if report.invalid > 20:
        console.print(f"  ... and {report.invalid - 20} more")


async def _datasets(settings: Settings, url: str):
    from app import db
    from app.datasets import repository as repo

    engine = db.make_engine(url, settings)
    try:
        async with db.session_factory(engine)() as session:
            rows = await repo.list_all(session)
            return rows, await repo.counts(session, [d.id for d in rows])
    finally:
        await engine.dispose()


@cli.command("datasets")
def datasets_() -> None:
    """List datasets with their counts."""
    settings = get_settings()
    with database(settings, check=True) as url:
        rows, counts = asyncio.run(_datasets(settings, url))
    table = Table("id", "name", "prompts", "approved", "needs review", "completions", "rankings", "created")
    for d in rows:
        c = counts[d.id]
        table.add_row(
            str(d.id), d.name, str(c["prompts"]), str(c["prompts_by_status"].get("approved", 0)),
            str(c["prompts_by_status"].get("needs_review", 0)), str(c["completions"]), str(c["rankings"]),
            d.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@cli.command()
def demo(
    host: str = "127.0.0.1",
    port: int = 8000,
    pipeline: Annotated[bool, typer.Option(help="Generate and judge answers for a few example prompts.")] = True,
    prompts: Annotated[int, typer.Option(min=1, help="How many example prompts the pipeline covers.")] = 4,
    k: Annotated[int, typer.Option(min=2, max=4, help="Answers per prompt.")] = 2,
    max_tokens: Annotated[int, typer.Option(min=8, help="Longest answer, in tokens.")] = 64,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve after the set-up.")] = True,
) -> None:
    """One command on a fresh machine: the example prompts, an LLM, the service, generate -> judge.

    Migrates the (embedded) database, imports the example prompts, finds the LLM at
    FORGE_LLM_BASE_URL or starts the local one, serves, and runs generate -> judge on a few
    prompts while the review page is up."""
    from app import db
    from app.demo import run_demo

    settings = get_settings()
    with database(settings) as url:
        db.upgrade(url)
        report, dataset_id = asyncio.run(_import(settings, url, EXAMPLE_PROMPTS, "example", _fmt("jsonl"), _mode(), True))
        console.print(f"dataset 'example' (id {dataset_id}): {report.inserted} prompts imported ({report.duplicates} already there)")
        console.print(f"API docs: http://{host}:{port}/docs   review page: http://{host}:{port}/ui")
        if not serve_after:
            return
        # a small local model rarely writes valid judge JSON: one try, then the item is flagged
        update = {"database_url": url, "worker_in_process": True}
        if pipeline and "FORGE_JUDGE_MAX_ATTEMPTS" not in os.environ:
            update["judge_max_attempts"] = 1
        if pipeline and "FORGE_LLM_BASE_URL" not in os.environ:
            # the local model answers one request at a time: queue in the worker, not at the server
            update["llm_timeout_s"] = max(settings.llm_timeout_s, 600.0)
            for role in ("llm_generator", "llm_judge", "llm_synthesizer"):
                update[role] = getattr(settings, role).model_copy(update={"concurrency": 1})
        settings = settings.model_copy(update=update)
        try:
            run_demo(
                settings, dataset_id, host=host, port=port, prompts=prompts, k=k, max_tokens=max_tokens,
                pipeline=pipeline, serve=lambda: _serve(settings, host, port), console=console,
            )
        except RuntimeError as exc:
            fail(str(exc))


def _fmt(name: str):
    from app.prompts.schemas import ImportFormat

    return ImportFormat(name)


def _mode():
    from app.prompts.schemas import ImportMode

    return ImportMode.partial


from app.review.cli import cli as review_cli  # noqa: E402

cli.add_typer(review_cli, name="review", help="Human review: agreement figures.")


def _mount_optional() -> None:
    """Sub-commands that live in their own packages."""
    from app.exports.cli import cli as exports_cli
    from app.runs.cli import cli as runs_cli

    cli.add_typer(exports_cli)  # no name: `rlhf-forge export ...` at the top level
    cli.add_typer(runs_cli)  # worker, synth, generate, judge at the top level
    try:
        from trainer.cli import cli as train_cli
    except ImportError:  # the trainer package is optional at runtime
        return
    cli.add_typer(train_cli, name="train", help="Train on exported data: sft | rm | ppo (needs the 'train' extra).")


_mount_optional()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
