"""Database wiring: the embedded Postgres, the async engine, the request-owned session."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings, normalize_db_url
from app.errors import SchemaOutdated

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class EmbeddedPostgres:
    """A real Postgres started from the `pgserver` pip package in a data folder.

    pgserver reuses a server already running on that folder (another process of ours) and
    stops it when the last user exits.
    """

    def __init__(self, pg_dir: Path):
        self.pg_dir = pg_dir
        self._server = None

    def start(self) -> str:
        try:
            import pgserver
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded Postgres is not installed: "
                "pip install 'rlhf-forge[embedded]' or set DATABASE_URL=postgresql://..."
            ) from exc
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded Postgres in %s", self.pg_dir)
        self._server = pgserver.get_server(self.pg_dir, cleanup_mode="stop")
        return normalize_db_url(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use, starting the embedded server when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.pg_dir)
    return embedded.start(), embedded


def make_engine(url: str, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        echo=settings.db_echo,
    )


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def head_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config("postgresql+psycopg://x/x")).get_heads())


def current_revisions(url: str) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def check_schema(url: str) -> None:
    """Refuse to run on a database whose schema is not at the migrations' head."""
    current, heads = current_revisions(url), head_revisions()
    if current != heads:
        raise SchemaOutdated(
            f"the database schema is at {sorted(current) or 'nothing'} but this version needs "
            f"{sorted(heads)}: run `rlhf-forge db upgrade`"
        )


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit on success, roll back on any error."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a 2xx always means committed.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
