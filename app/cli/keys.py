"""`rlhf-forge keys create | list | revoke`: API keys, written straight to the database (the same
rules as the admin's /api/v1/keys routes; no running server needed)."""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from app.cli.common import console, fail, open_database
from app.config import Settings, get_settings
from app.models import Role

cli = typer.Typer(help="API keys and their roles: admin, annotator, viewer.", no_args_is_help=True)


@cli.callback()
def _group() -> None:
    """API keys and their roles."""


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # a container user without a passwd entry
        return "cli"


async def _create(settings: Settings, name: str, role: Role, datasets: list[str], expires_in: float | None):
    from app.auth import service
    from app.errors import AppError

    async with open_database(settings) as database, database.sessions() as session:
        try:
            ids = await service.dataset_ids(session, datasets)
            row, _, key = await service.create(
                session, name=name, role=role, dataset_ids=ids, expires_in_days=expires_in, created_by=_operator()
            )
        except AppError as exc:
            fail(exc.message)
        await session.commit()
        return row, key


@cli.command("create")
def create(
    role: Annotated[Role, typer.Option(help="admin: everything; annotator: read and review; viewer: read and export.")],
    name: Annotated[str, typer.Option(help="Who holds the key: recorded as the actor of their changes.")],
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", "-d", help="A dataset the key may see (annotator, viewer); repeat.")
    ] = None,
    expires_in: Annotated[float | None, typer.Option("--expires-in", min=0.001, help="Days until the key stops working.")] = None,
) -> None:
    """Make a key. It is printed once, alone on the last line; only its hash is stored."""
    row, key = asyncio.run(_create(get_settings(), name.strip(), role, dataset or [], expires_in))
    expiry = f", expires {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else ""
    console.print(f"key {row.id} for {row.name!r}: {row.role}{expiry}. Keep it now, it is not shown again:", highlight=False)
    print(key, flush=True)


async def _list(settings: Settings):
    from app.auth import repository as repo

    async with open_database(settings) as database, database.sessions() as session:
        rows = await repo.list_all(session)
        names = await repo.dataset_names(session)
        return rows, {k: [names[d] for d in ids] for k, ids in (await repo.grants(session, [r.id for r in rows])).items()}


def _state(row, now: datetime) -> str:
    if row.revoked_at is not None:
        return f"revoked {row.revoked_at:%Y-%m-%d}"
    if row.expires_at is not None:
        return f"expired {row.expires_at:%Y-%m-%d}" if row.expires_at <= now else f"until {row.expires_at:%Y-%m-%d %H:%M}"
    return "active"


@cli.command("list")
def list_() -> None:
    """Every key made (never the key itself: its first characters tell keys apart)."""
    rows, grants = asyncio.run(_list(get_settings()))
    now = datetime.now(UTC)
    table = Table(title="API keys (FORGE_API_KEYS keys are admin keys and not listed)")
    for col in ("id", "name", "role", "key", "datasets", "created", "by", "state"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r.id),
            r.name,
            r.role,
            f"{r.prefix}…",
            ", ".join(grants[r.id]) or ("all" if r.role == Role.admin else "-"),
            f"{r.created_at:%Y-%m-%d}",
            r.created_by,
            _state(r, now),
        )
    console.print(table)


async def _revoke(settings: Settings, key_id: int):
    from app.auth import service
    from app.errors import AppError

    async with open_database(settings) as database, database.sessions() as session:
        try:
            row = await service.revoke(session, key_id, _operator())
        except AppError as exc:
            fail(exc.message)
        await session.commit()
        return row


@cli.command("revoke")
def revoke(key_id: Annotated[int, typer.Argument(min=1, help="The key's id (`rlhf-forge keys list`).")]) -> None:
    """Revoke a key: it stops working at once, for the API and for signed-in pages."""
    row = asyncio.run(_revoke(get_settings(), key_id))
    console.print(f"key {row.id} ({row.name}, {row.prefix}…) revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC", highlight=False)
