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
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the sampling (sample i is asked with seed + i).")]
# the prompt filters generate and judge share
StatusOpt = Annotated[list[str] | None, typer.Option("--status", help="Only prompts with this review status (repeat).")]
SourceOpt = Annotated[list[str] | None, typer.Option("--source", help="Only prompts from this source: imported, human, synthetic (repeat).")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="Only prompts with this tag (repeat: any of them).")]
PromptIdOpt = Annotated[list[int] | None, typer.Option("--prompt-id", help="Only this prompt (repeat).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="At most this many prompts.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every selected prompt, even those done, approved or rejected (default: only what still needs the run).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Start nothing: print the prompts, requests, tokens and cost the run would take.")]


def _prompts(status, source, tag, prompt_id, limit) -> dict:
    return {"review_status": status, "source": source, "tags": tag, "prompt_ids": prompt_id, "limit": limit}


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
            if spec.dry_run:
                async with sessions() as session:
                    dataset = await datasets.get_by_name_or_404(session, dataset_name)
                    estimate = await runs.estimate(session, settings, dataset, spec, handler=KINDS[spec.kind])
                typer.echo(estimate.model_dump_json(indent=2))
                return "succeeded"
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
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="Longest answer, in tokens.")] = None,
    system_prompt: Annotated[str | None, typer.Option("--system-prompt", help="System message of every sample.")] = None,
    status: StatusOpt = None, source: SourceOpt = None, tag: TagOpt = None, prompt_id: PromptIdOpt = None, limit: LimitOpt = None,
    all_: AllOpt = False, dry_run: DryRunOpt = False,
    seed: SeedOpt = 0,
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
        "kind": "generate", "k": k, "plan": plan, "seed": seed, "budget": budget, "all": all_, "dry_run": dry_run,
        "prompts": _prompts(status, source, tag, prompt_id, limit), "llm": _llm("generator", model, endpoint),
    }
    _submit(dataset, body, wait, work)


@cli.command()
def judge(
    dataset: DatasetOpt,
    mode: Annotated[str, typer.Option("--mode", help="listwise | pairwise | rubric | reward_model")] = "listwise",
    orders: Annotated[int | None, typer.Option("--orders", help="Orders per ranking (position bias).")] = None,
    source_run: Annotated[int | None, typer.Option("--source-run", help="Rank this generate run's completions.")] = None,
    allow_ties: Annotated[bool, typer.Option("--allow-ties", help="Let the judge rank answers equal.")] = False,
    status: StatusOpt = None, source: SourceOpt = None, tag: TagOpt = None, prompt_id: PromptIdOpt = None, limit: LimitOpt = None,
    all_: AllOpt = False, dry_run: DryRunOpt = False,
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
        "budget": budget, "all": all_, "dry_run": dry_run,
        "prompts": _prompts(status, source, tag, prompt_id, limit), "llm": _llm("judge", model, endpoint),
        "judges": [{"model": m} for m in judge_model] if judge_model else None, "aggregate": aggregate,
        "canaries": {"min_accuracy": min_accuracy} if canaries else None, "injection_check": injection_check,
    }
    _submit(dataset, body, wait, work)


@cli.command()
def synth(
    dataset: DatasetOpt,
    num: Annotated[int, typer.Option("--num", "-n", help="Prompts to ask for (duplicates are dropped).")] = 20,
    per_call: Annotated[int, typer.Option("--per-call", help="Prompts asked for in one LLM call.")] = 5,
    topic: Annotated[list[str] | None, typer.Option("--topic", help="Repeat for several.")] = None,
    document: Annotated[list[Path] | None, typer.Option("--document", help="A text file to draw prompts from; repeat.")] = None,
    evol: Annotated[bool, typer.Option("--evol", help="Rewrite existing prompts (evol-instruct) instead.")] = False,
    seed: SeedOpt = 0,
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


group = typer.Typer(help="Runs: list, show, watch, cancel, resume.", no_args_is_help=True)
RunIdArg = Annotated[int, typer.Argument(help="The run's id.")]


async def _with_run(run_id: int | None, act):
    """Open the database, load the run (exit 2 when missing), hand both to `act`, commit."""
    from app.cli.common import open_database
    from app.runs import service as runs

    settings = get_settings()
    async with open_database(settings) as database:
        async with database.sessions() as session:
            run = await runs.get_or_404(session, run_id) if run_id is not None else None
            out = await act(session, run, database)
            await session.commit()
            return out


def _guard(coro):
    try:
        return asyncio.run(coro)
    except AppError as exc:
        console.print(f"[red]{exc.code}:[/red] {exc.message}")
        raise typer.Exit(2) from None


def _print(run) -> None:
    from app.runs import service as runs

    typer.echo(runs.public(run).model_dump_json(indent=2))


@group.command("list")
def list_runs(
    dataset: DatasetOpt,
    kind: Annotated[str | None, typer.Option("--kind", help="Only runs of this kind: synth, generate, judge, export.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 20,
) -> None:
    """A dataset's runs, newest first."""
    from rich.table import Table

    from app.datasets import service as datasets
    from app.runs import repository as repo

    async def act(session, _, __):
        ds = await datasets.get_by_name_or_404(session, dataset)
        return await repo.list_for_dataset(session, ds.id, kind, limit)

    table = Table("id", "kind", "status", "done", "failed", "total", "cost", "created")
    for r in _guard(_with_run(None, act)):
        cost = f"${Decimal(r.cost):.4f}" if r.cost is not None else "unknown"
        table.add_row(str(r.id), r.kind, r.status, str(r.done), str(r.failed), str(r.total), cost,
                      r.created_at.strftime("%Y-%m-%d %H:%M"))
    Console().print(table)


@group.command()
def show(run_id: RunIdArg) -> None:
    """One run as JSON: status, counts, tokens, cost, progress, and its kind's report."""
    from app.run_kinds import KINDS
    from app.runs import service as runs

    async def act(session, run, _):
        return await runs.public_with_report(session, run, KINDS.get(run.kind))

    typer.echo(_guard(_with_run(run_id, act)).model_dump_json(indent=2))


@group.command()
def watch(run_id: RunIdArg) -> None:
    """Follow a run with a progress bar until it ends (exit 1 unless it succeeds)."""
    from app.runs import repository as repo
    from app.runs import service as runs

    async def act(session, run, database):
        return await _follow(database.sessions, run.id, repo, runs)

    if _guard(_with_run(run_id, act)) != "succeeded":
        raise typer.Exit(1)


@group.command()
def cancel(run_id: RunIdArg) -> None:
    """Stop a queued or running run (items in flight finish; nothing new starts)."""
    from app.runs import service as runs

    async def act(session, run, _):
        return await runs.cancel(session, run)

    _print(_guard(_with_run(run_id, act)))


@group.command()
def resume(
    run_id: RunIdArg,
    budget: Annotated[float | None, typer.Option("--budget", help="A new budget in USD (after budget_exhausted).")] = None,
) -> None:
    """Queue a finished run again: failed items are retried, done ones stay."""
    from app.runs import service as runs
    from app.runs.schemas import ResumeRun
    from app.worker import defer_start, make_job_app

    async def act(session, run, database):
        run = await runs.resume(session, run, ResumeRun(budget=budget))
        await session.commit()  # the job reloads the run: defer it only once committed
        job_app = make_job_app(database.url)
        async with job_app.open_async():
            await defer_start(job_app, run.id)
        return run

    _print(_guard(_with_run(run_id, act)))
