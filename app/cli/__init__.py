"""The command line, one `typer` app made of one module per group of commands:

- `db`: the schema (upgrade, downgrade, current, stamp);
- `serve`, `worker`, `demo`: the processes that stay up;
- `import`, `datasets`, `export`: data in and out;
- `synth`, `generate`, `judge`: LLM runs; `runs`: list, show, watch, cancel, resume;
- `review`: review figures;
- `keys`: API keys and their roles;
- `train`: the trainer's own command line (`rlhf-forge-train`), run in this one's place.

Commands that touch the database use DATABASE_URL when set, else the embedded Postgres in the
data folder (the same one `serve` uses), through `app.db.open_database`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from app.cli import data, db, keys, review, runs, serve, train

cli = typer.Typer(help="rlhf-forge: build RLHF datasets with an LLM's help.", no_args_is_help=True, pretty_exceptions_show_locals=False)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"rlhf-forge {version('rlhf-forge')}")
        except PackageNotFoundError:
            typer.echo("rlhf-forge (not installed)")
        raise typer.Exit()


@cli.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """rlhf-forge: build RLHF datasets with an LLM's help."""


cli.add_typer(db.cli, name="db")
for group in (serve, data, runs):  # no name: their commands sit at the top level
    cli.add_typer(group.cli)
cli.add_typer(runs.group, name="runs")
cli.add_typer(review.cli, name="review", help="Human review: agreement figures.")
cli.add_typer(keys.cli, name="keys", help="API keys and their roles: admin, annotator, viewer.")
cli.add_typer(train.cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
