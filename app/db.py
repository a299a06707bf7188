"""Database wiring: the one way in (`database_url`, `open_database`), the embedded Postgres, the
async engine, the request-owned session."""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import psycopg
from fastapi import Depends, Request
from psycopg.rows import dict_row
from sqlalchemy import TextClause, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings, normalize_db_url
from app.errors import SchemaOutdated

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseUnavailable(RuntimeError):
    """No DATABASE_URL and no embedded Postgres to start."""


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
            raise DatabaseUnavailable(
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


class Database(NamedTuple):
    """An open database: its URL (for Alembic and the job queue), the engine, and sessions on it."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]


@contextlib.contextmanager
def database_url(settings: Settings, *, check: bool = True) -> Iterator[str]:
    """The URL to use, with the embedded Postgres started for the block (and stopped after) when
    no DATABASE_URL is set. With `check`, raise SchemaOutdated unless the schema is at head.

    Code that starts other processes or a second `open_database` inside the block hands them
    `settings.model_copy(update={"database_url": url})`, so the embedded server is started once."""
    url, embedded = resolve_database_url(settings)
    try:
        if check:
            check_schema(url)
        yield url
    finally:
        if embedded is not None:
            embedded.stop()


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, check: bool = True) -> AsyncIterator[Database]:
    """The one way into the database for the app, the worker and every command: `database_url`,
    then an engine for the block, disposed of on the way out."""
    with database_url(settings, check=check) as url:
        engine = make_engine(url, settings)
        try:
            yield Database(url, engine, session_factory(engine))
        finally:
            await engine.dispose()


def make_engine(url: str, settings: Settings) -> AsyncEngine:
    """Up to 2 x db_pool_size connections, all kept open: with an overflow above the pool, busy
    moments closed the overflow connections as they came back and opened new ones a moment later
    (32 reviewers: a connection, and a Postgres backend, per ~9 requests).

    No pre-ping: it was a round trip on every checkout, i.e. every request. A connection the
    database dropped (a restart) fails the one statement that meets it; SQLAlchemy then throws
    away every connection of the pool made before, and the next request connects afresh."""
    return create_async_engine(
        url,
        pool_size=2 * settings.db_pool_size,
        max_overflow=0,
        echo=settings.db_echo,
    )


@contextlib.asynccontextmanager
async def stream_engine(url: str, settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The small pool of its own that streamed exports read through: a reader that never reads
    holds one of these connections (until the send timeout), never one the other routes need.
    Its queries stop at `export_stream_statement_timeout_s`."""
    timeout_ms = int(settings.export_stream_statement_timeout_s * 1000)
    engine = create_async_engine(
        url,
        pool_size=settings.export_stream_pool,
        max_overflow=0,
        pool_timeout=settings.export_stream_wait_s,
        pool_pre_ping=True,
        connect_args={"options": f"-c statement_timeout={timeout_ms}", "application_name": "rlhf-forge-stream"},
    )
    try:
        yield engine
    finally:
        await engine.dispose()


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


def stamp(url: str, revision: str) -> None:
    """Record `revision` without running migrations; `purge` first empties the version table, whose
    ids may be of an older numbering (0.1's)."""
    from alembic import command

    command.stamp(alembic_config(url), revision, purge=True)


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


# per statement object, for as long as it lives (statements built per shape by an lru_cache
# leave with it)
_DRIVER_SQL: weakref.WeakKeyDictionary[TextClause, tuple[bytes, tuple[str, ...]]] = weakref.WeakKeyDictionary()
_PARAM = re.compile(r"%\((\w+)\)s|%%")


def _driver_sql(stmt: TextClause, dialect) -> tuple[bytes, tuple[str, ...]]:
    """A text statement as the server takes it: `$n` placeholders, and the parameter names in
    their order. Compiled and converted once per statement: psycopg converts `%(name)s` on every
    execute, and does not cache statements over 4 KB (the claim), which it then re-parsed each time."""
    got = _DRIVER_SQL.get(stmt)
    if got is None:
        names: list[str] = []

        def placeholder(m: re.Match) -> str:
            if m[1] is None:
                return "%"
            if m[1] not in names:
                names.append(m[1])
            return f"${names.index(m[1]) + 1}"

        sql = _PARAM.sub(placeholder, str(stmt.compile(dialect=dialect)))
        got = _DRIVER_SQL[stmt] = (sql.encode(), tuple(names))
    return got


async def driver_rows(
    session: AsyncSession, *statements: tuple[TextClause, dict[str, Any]], alone: bool = False
) -> list[list[dict[str, Any]]]:
    """Run text statements in the session's transaction on the driver directly: each rows as
    dicts of the driver's values (jsonb as dicts, timestamps as datetimes). Statements run in
    order, each seeing what those before it wrote; an error raises, and the request's rollback
    follows as for any statement. For hot paths, whose statements are module-level text()
    (untyped parameters: the driver adapts them), compiled once.

    Plain statements, not psycopg's pipeline mode: pipelining BEGIN with the statements saved a
    round trip but cost more CPU than it saved, and more time too (per transaction of BEGIN, one
    statement and COMMIT on this machine: 320 us of client CPU and 510 us in all pipelined, 230
    and 410 us as three plain round trips).

    `alone`: the one statement is all the request writes (and atomic by itself, even when the
    request fails after it). When the session's connection holds no transaction yet, it runs as
    its own (autocommit: no BEGIN and COMMIT round trips, two of the three the statement would
    take; the request's commit and rollback then find nothing to do); else in the transaction."""
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    out = []
    auto = alone and len(statements) == 1 and raw.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if auto:
        await raw.set_autocommit(True)
    try:
        async with psycopg.AsyncRawCursor(raw, row_factory=dict_row) as cursor:
            for stmt, params in statements:
                sql, names = _driver_sql(stmt, conn.dialect)
                await cursor.execute(sql, [params[n] for n in names])
                out.append(await cursor.fetchall())
    except psycopg.Error as exc:
        # as SQLAlchemy's own execute would: a dropped connection leaves the pool, and the error is
        # SQLAlchemy's (a DataError, e.g. a NUL in a text, is the app's 422 like any other)
        invalidated = conn.dialect.is_disconnect(exc, raw, None)
        if invalidated:
            await conn.invalidate(exc)
        raise DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=invalidated) from exc
    finally:
        if auto and not raw.closed:
            await raw.set_autocommit(False)
    return out


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
