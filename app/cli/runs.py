"""`rlhf-forge synth | generate | judge --dataset NAME`: start an LLM run (with --wait: a live
progress bar; the run is worked on in this process too unless --no-work)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.config import get_settings
from app.errors import AppError

cli = typer.Typer()
console = Console(stderr=True)

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name.")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the run with a progress bar until it ends.")]
WorkOpt = Annotated[bool, typer.Option("--work/--no-work", help="With --wait, also work on jobs in this process.")]
BudgetOpt = Annotated[float | None, typer.Option("--budget", help="USD; the run stops when it is spent.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model for this run's role.")]
EndpointOpt = Annotated[str | None, typer.Option("--endpoint", help="A configured LLM endpoint's name (FORGE_LLM_ENDPOINTS).")]


def _llm(role: str, model: str | None, endpoint: str | None) -> dict | None:
    override = {k: v for k, v in (("model", model), ("endpoint", endpoint)) if v}
    return {role: override} if override else None


def _submit(dataset: str, body: dict, wait: bool, work: bool) -> None:
    from pydantic import TypeAdapter

    from app.run_kinds import RunCreate

    try:
        spec = TypeAdapter(RunCreate).validate_python(body)
    except ValidationError as exc:
        console.print(f"[red]invalid run:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        status = asyncio.run(_run(dataset, spec, wait, work))
    except AppError as exc:
        console.print(f"[red]{exc.code}:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if wait and status != "succeeded":
        raise typer.Exit(1)


async def _run(dataset_name: str, spec, wait: bool, work: bool) -> str:
    from app import db
    from app.datasets import service as datasets
    from app.llm import LLMPool
    from app.run_kinds import KINDS
    from app.runs import repository as repo
    from app.runs import service as runs
    from app.worker import Runtime, defer_start, make_job_app, run_worker

    settings = get_settings()
    async with db.open_database(settings) as database:
        engine, sessions = database.engine, database.sessions
        llm = LLMPool(settings, engine)
        try:
            async with sessions() as session:
                dataset = await datasets.get_by_name_or_404(session, dataset_name)
                run = await runs.create(session, settings, dataset, spec, actor="cli", handler=KINDS[spec.kind])
                await session.commit()
            job_app = make_job_app(database.url, settings=settings)
            async with job_app.open_async():
                await defer_start(job_app, run.id)
                console.print(f"run {run.id} ({run.kind}) queued for dataset {dataset_name!r}")
                if not wait:
                    return run.status
                worker = None
                if work:
                    rt = Runtime(settings, engine, sessions, llm)
                    worker = asyncio.create_task(run_worker(job_app, rt, concurrency=settings.worker_concurrency))
                try:
                    return await _follow(sessions, run.id, repo, runs)
                finally:
                    if worker is not None:
                        worker.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await worker
        finally:
            await llm.close()


async def _follow(sessions, run_id: int, repo, runs) -> str:
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"run {run_id}", total=None, info="")
        while True:
            async with sessions() as session:
                run = await repo.get(session, run_id)
            view = runs.public(run)
            p = view.progress
            info = (
                f"{run.status} · failed {run.failed} · tokens {run.prompt_tokens + run.completion_tokens} · "
                + (f"${Decimal(run.cost):.4f}" if run.cost is not None else "cost unknown")
                + (f" · {p.rate_per_s:.1f}/s" if p.rate_per_s else "")
                + (f" · ETA {p.eta_s:.0f}s" if p.eta_s is not None else "")
            )
            bar.update(task, total=run.total or None, completed=run.done + run.failed, info=info)
            if run.status in runs.TERMINAL:
                break
            await asyncio.sleep(0.5)
    console.print(json.dumps(view.model_dump(mode="json", include={"id", "status", "total", "done", "failed", "cost"})))
    return run.status


@cli.command()
def generate(
    dataset: DatasetOpt,
    k: Annotated[int, typer.Option("--k", help="Completions per prompt.")] = 4,
    temperature: Annotated[list[float] | None, typer.Option("--temperature", "-t", help="One per plan entry; repeat.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    system_prompt: Annotated[str | None, typer.Option("--system-prompt")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="Only prompts with this review status.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many prompts.")] = None,
    seed: int = 0,
    model: ModelOpt = None, endpoint: EndpointOpt = None, budget: BudgetOpt = None, wait: WaitOpt = False, work: WorkOpt = True,
) -> None:
    """K completions for each prompt of a dataset."""
    plan = None
    if temperature or max_tokens or system_prompt:
        plan = [
            {k2: v for k2, v in (("temperature", t), ("max_tokens", max_tokens), ("system_prompt", system_prompt)) if v is not None}
            for t in (temperature or [None])
        ]
    body = {
        "kind": "generate", "k": k, "plan": plan, "seed": seed, "budget": budget,
        "prompts": {"review_status": status, "limit": limit}, "llm": _llm("generator", model, endpoint),
    }
    _submit(dataset, body, wait, work)


@cli.command()
def judge(
    dataset: DatasetOpt,
    mode: Annotated[str, typer.Option("--mode", help="listwise | pairwise | rubric")] = "listwise",
    orders: Annotated[int | None, typer.Option("--orders", help="Orders per ranking (position bias).")] = None,
    source_run: Annotated[int | None, typer.Option("--source-run", help="Rank this generate run's completions.")] = None,
    allow_ties: bool = False,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    judge_model: Annotated[list[str] | None, typer.Option("--judge", help="Several judges: one model each; repeat.")] = None,
    aggregate: Annotated[str, typer.Option("--aggregate", help="Several judges combine by mean | borda.")] = "mean",
    canaries: Annotated[bool, typer.Option("--canaries", help="Judge the built-in known-answer canaries first.")] = False,
    min_accuracy: Annotated[float, typer.Option("--min-canary-accuracy", help="Below this the run stops.")] = 0.8,
    injection_check: Annotated[str | None, typer.Option("--injection-check", help="llm | patterns | off")] = None,
    model: ModelOpt = None, endpoint: EndpointOpt = None, budget: BudgetOpt = None, wait: WaitOpt = False, work: WorkOpt = True,
) -> None:
    """Rank each prompt's completions with the judge (or several: --judge A --judge B)."""
    body = {
        "kind": "judge", "mode": mode, "orders": orders, "source_run_id": source_run, "allow_ties": allow_ties,
        "budget": budget, "prompts": {"limit": limit}, "llm": _llm("judge", model, endpoint),
        "judges": [{"model": m} for m in judge_model] if judge_model else None, "aggregate": aggregate,
        "canaries": {"min_accuracy": min_accuracy} if canaries else None, "injection_check": injection_check,
    }
    _submit(dataset, body, wait, work)


@cli.command()
def synth(
    dataset: DatasetOpt,
    num: Annotated[int, typer.Option("--num", "-n", help="Prompts to ask for (duplicates are dropped).")] = 20,
    per_call: int = 5,
    topic: Annotated[list[str] | None, typer.Option("--topic", help="Repeat for several.")] = None,
    document: Annotated[list[Path] | None, typer.Option("--document", help="A text file to draw prompts from; repeat.")] = None,
    evol: Annotated[bool, typer.Option("--evol", help="Rewrite existing prompts (evol-instruct) instead.")] = False,
    seed: int = 0,
    model: ModelOpt = None, endpoint: EndpointOpt = None, budget: BudgetOpt = None, wait: WaitOpt = False, work: WorkOpt = True,
) -> None:
    """New prompts: self-instruct from the dataset's prompts, topics or documents (or --evol)."""
    body = {
        "kind": "synth", "mode": "evol" if evol else "self_instruct", "num_prompts": num, "per_call": per_call,
        "topics": topic or [], "documents": [p.read_text(encoding="utf-8") for p in document or []],
        "seed": seed, "budget": budget, "llm": _llm("synthesizer", model, endpoint),
    }
    if evol:
        body["prompts"] = {"limit": num}
    _submit(dataset, body, wait, work)

