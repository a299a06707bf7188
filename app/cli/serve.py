"""`rlhf-forge serve | worker | demo`: the processes that stay up."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from app import db
from app.cli.common import console, database_url, err, fail
from app.cli.data import import_prompts
from app.config import Settings, get_settings

cli = typer.Typer()

EXAMPLE_PROMPTS = Path(__file__).resolve().parent.parent / "examples" / "prompts.jsonl"


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    worker: Annotated[bool, typer.Option(help="Run a job worker inside the server process.")] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the API (and, by default, a job worker) on HOST:PORT."""
    settings = get_settings()
    with database_url(settings) as url:
        _serve(settings.model_copy(update={"worker_in_process": worker, "database_url": url}), host, port, log_level)


def _serve(settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    from app.main import create_app
    from app.metrics import configure_logging

    configure_logging(log_level, settings.log_format)
    for noisy in ("pgserver", "alembic", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


@cli.command()
def worker(
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", help="Jobs at once.")] = None,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Take only this queue's jobs: runs or exports (repeatable; default all).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run a job worker against the configured database (any number, on any machines)."""
    from app.errors import AppError
    from app.metrics import configure_logging
    from app.worker import serve_worker

    configure_logging(log_level, get_settings().log_format)
    for noisy in ("httpx", "httpx2", "openai", "pgserver"):  # one line per LLM request otherwise
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = get_settings()
    if settings.worker_metrics_port:  # this process's LLM calls and export rows, for Prometheus to scrape
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port)
    if queue:
        from app.jobs import QUEUES

        if unknown := sorted(set(queue) - set(QUEUES)):
            err.print(f"[red]invalid_input:[/red] --queue {', '.join(unknown)}: the queues are {', '.join(QUEUES)}")
            raise typer.Exit(2)
        settings = settings.model_copy(update={"worker_queues": queue})
    try:
        asyncio.run(serve_worker(settings, concurrency or settings.worker_concurrency))
    except AppError as exc:
        err.print(f"[red]{exc.code}:[/red] {exc.message}")
        raise typer.Exit(2) from None


@cli.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
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
    from app.demo import run_demo
    from app.prompts.schemas import ImportFormat, ImportMode

    settings = get_settings()
    with database_url(settings, check=False) as url:
        db.upgrade(url)
        # everything below reuses this URL: the embedded server is started once
        settings = settings.model_copy(update={"database_url": url})
        report, dataset_id = asyncio.run(import_prompts(settings, EXAMPLE_PROMPTS, "example", ImportFormat.jsonl, ImportMode.partial, True))
        console.print(f"dataset 'example' (id {dataset_id}): {report.inserted} prompts imported ({report.duplicates} already there)")
        console.print(f"API docs: http://{host}:{port}/docs   review page: http://{host}:{port}/ui")
        if not serve_after:
            return
        # a small local model rarely writes valid judge JSON: one try, then the item is flagged
        update = {"worker_in_process": True}
        if pipeline and "FORGE_JUDGE_MAX_ATTEMPTS" not in os.environ:
            update["judge_max_attempts"] = 1
        if pipeline and "FORGE_LLM_BASE_URL" not in os.environ:
            # the local model answers one request at a time: queue in the worker, not at the server
            update["llm_timeout_s"] = max(settings.llm_timeout_s, 600.0)
            if "FORGE_LLM_MODEL" not in os.environ:  # runs are checked against the models it lists
                from app.demo import LOCAL_MODEL

                update["llm_model"] = LOCAL_MODEL
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
