"""`rlhf-forge review ...`: review figures on the command line."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from app.cli.common import console, fail, open_database
from app.config import Settings, get_settings

cli = typer.Typer(help="Human review: agreement figures.", no_args_is_help=True)


@cli.callback()
def _group() -> None:
    """Human review."""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


async def _agreement(settings: Settings, dataset_ref: str) -> dict:
    from app.datasets import service as datasets
    from app.errors import NotFound
    from app.review import agreement
    from app.review import repository as repo

    async with open_database(settings) as database, database.sessions() as session:
        try:
            dataset = (
                await datasets.get_or_404(session, int(dataset_ref))
                if dataset_ref.isdigit()
                else await datasets.get_by_name_or_404(session, dataset_ref)
            )
        except NotFound as exc:
            fail(exc.message)
        pairs, lengths = await repo.approved_verdicts(session, dataset.id), await repo.judge_rankings_with_lengths(session, dataset.id)
        return agreement.report(dataset.id, pairs, lengths) | {"name": dataset.name}


def agreement_table(report: dict) -> Table:
    table = Table(title=f"review agreement: dataset {report['name']} ({report['dataset_id']})")
    for col in ("judge model", "template", "reviewed", "confirmed unchanged", "top-1 agreement", "mean Kendall tau", "length ρ"):
        table.add_column(col, justify="left" if col in ("judge model", "template") else "right")
    rows = [*report["by_judge"], {"judge_model": "all", "template_version": "", **report["overall"]}]
    for r in rows:
        table.add_row(
            r["judge_model"] or "-", r["template_version"] or "-", str(r["reviewed"]),
            _fmt(r["confirmed_unchanged"]), _fmt(r["top1_agreement"]), _fmt(r["mean_kendall_tau"]),
            _fmt(r.get("length_rank_spearman")),
        )
    ia = report["inter_annotator"]
    table.caption = (
        f"between reviewers: {ia['items']} items with overlap, {ia['reviewers']} reviewers, "
        f"Krippendorff's alpha {_fmt(ia['krippendorff_alpha'])}, mean Kendall's W {_fmt(ia['mean_kendall_w'])}"
    )
    return table


@cli.command("agreement")
def agreement_cmd(dataset: Annotated[str, typer.Argument(help="Dataset name or id.")]) -> None:
    """Judge-vs-human and between-reviewer agreement, per judge model and template version."""
    report = asyncio.run(_agreement(get_settings(), dataset))
    console.print(agreement_table(report))
