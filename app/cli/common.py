"""What every command shares: the consoles, `fail`, and the way into the database with its
refusals (no embedded Postgres, an outdated schema) turned into one-line errors."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import NoReturn

import typer
from rich.console import Console

from app import db
from app.config import Settings
from app.errors import SchemaOutdated

console = Console()
err = Console(stderr=True)

# pgserver asks platformdirs for a runtime dir that containers often lack; harmless
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@contextlib.contextmanager
def _refusals_fail() -> Iterator[None]:
    try:
        yield
    except (db.DatabaseUnavailable, SchemaOutdated) as exc:
        fail(getattr(exc, "message", str(exc)))


@contextlib.contextmanager
def database_url(settings: Settings, *, check: bool = True) -> Iterator[str]:
    """`db.database_url` for a command: exit 1 with the fix when the database cannot be used."""
    with contextlib.ExitStack() as stack:
        with _refusals_fail():
            url = stack.enter_context(db.database_url(settings, check=check))
        yield url


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, check: bool = True) -> AsyncIterator[db.Database]:
    """`db.open_database` for a command: exit 1 with the fix when the database cannot be used."""
    async with contextlib.AsyncExitStack() as stack:
        with _refusals_fail():
            database = await stack.enter_async_context(db.open_database(settings, check=check))
        yield database
