"""`rlhf-forge db upgrade | downgrade | current | stamp`: the schema (Alembic migrations)."""

from __future__ import annotations

from typing import Annotated

import typer

from app import db
from app.cli.common import console, database_url
from app.config import get_settings

cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Option(help="Target revision (default: the newest).")] = "head") -> None:
    """Apply the migrations up to REVISION (default: head)."""
    with database_url(get_settings(), check=False) as url:
        db.upgrade(url, revision)
        console.print(f"schema at {sorted(db.current_revisions(url))}")


@cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="e.g. base, or a revision id")]) -> None:
    """Revert the migrations down to REVISION."""
    with database_url(get_settings(), check=False) as url:
        db.downgrade(url, revision)
        console.print(f"schema at {sorted(db.current_revisions(url)) or 'base'}")


@cli.command("current")
def db_current() -> None:
    """Show the schema revision of the database and the one this version needs."""
    with database_url(get_settings(), check=False) as url:
        console.print(f"database: {sorted(db.current_revisions(url)) or 'empty'}; this version needs: {sorted(db.head_revisions())}")


@cli.command("stamp")
def db_stamp(revision: Annotated[str, typer.Argument(help="e.g. head, or a revision id")]) -> None:
    """Record REVISION as the schema's revision without running any migration (replacing what was
    recorded): for a database whose schema is already there, e.g. one made by 0.1 (see docs/guide.md, "Upgrading from 0.1")."""
    with database_url(get_settings(), check=False) as url:
        db.stamp(url, revision)
        console.print(f"schema recorded at {sorted(db.current_revisions(url)) or 'base'}")
