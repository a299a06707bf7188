"""The command line, one `typer` app made of one module per group of commands:

- `db`: the schema (upgrade, downgrade, current, stamp);
- `serve`, `worker`, `demo`: the processes that stay up;
- `import`, `datasets`, `export`: data in and out;
- `synth`, `generate`, `judge`: LLM runs;
- `review`: review figures;
- `keys`: API keys and their roles;
- `train`: the trainer's own command line (`rlhf-forge-train`), run in this one's place.

Commands that touch the database use DATABASE_URL when set, else the embedded Postgres in the
data folder (the same one `serve` uses), through `app.db.open_database`.
"""

from __future__ import annotations

import typer

from app.cli import data, db, keys, review, runs, serve, train

cli = typer.Typer(help="rlhf-forge: build RLHF datasets with an LLM's help.", no_args_is_help=True, pretty_exceptions_show_locals=False)
cli.add_typer(db.cli, name="db")
for group in (serve, data, runs):  # no name: their commands sit at the top level
    cli.add_typer(group.cli)
cli.add_typer(review.cli, name="review", help="Human review: agreement figures.")
cli.add_typer(keys.cli, name="keys", help="API keys and their roles: admin, annotator, viewer.")
cli.add_typer(train.cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
