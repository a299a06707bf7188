"""Shared fixtures: a real Postgres, a database built by running the migrations, the app
in-process and over real HTTP.

- Postgres: TEST_DATABASE_URL when set (a server URL; each test session makes its own
  database on it and drops it at the end), otherwise an embedded Postgres from `pgserver`.
- Isolation: every table is truncated after each test that touched the database.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import ClassVar

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import db as dbmod
from app.config import Settings, normalize_db_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A URL of a Postgres server we may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield normalize_db_url(url)
        return
    import pgserver

    tmp = tempfile.mkdtemp(prefix="forge-test-pg-")
    server = pgserver.get_server(tmp, cleanup_mode="delete")
    try:
        yield normalize_db_url(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, built by `alembic upgrade head`."""
    name = f"forge_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        dbmod.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def truncate_all(url: str) -> None:
    """Empty every table but the schema version and the job workers' registry (a live
    in-process worker keeps its own row across tests)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(
                text(
                    "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename NOT IN ('alembic_version', 'procrastinate_workers')"
                )
            ).scalars().all()
            if tables:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """The test database, emptied after the test."""
    yield database_url
    truncate_all(database_url)


@pytest.fixture(scope="session")
def base_settings(database_url: str, tmp_path_factory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("forge-data"),
        max_text_chars=10_000,
        worker_in_process=False,
    )


@pytest.fixture
def settings(base_settings: Settings, clean_db: str) -> Settings:
    return base_settings


@pytest.fixture(scope="session")
async def engine(database_url: str):
    eng = dbmod.make_engine(database_url, Settings(database_url=database_url))
    yield eng
    await eng.dispose()


@pytest.fixture
async def session(engine, clean_db):
    async with dbmod.session_factory(engine)() as s:
        yield s


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (ASGI), lifespan included."""
    from app.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving create_app(settings) on 127.0.0.1 in a thread: real HTTP."""

    running: ClassVar[list[LiveServer]] = []

    def __init__(self, settings: Settings):
        from app.main import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        self._new_server()

    def _new_server(self) -> None:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @classmethod
    @contextmanager
    def alone(cls) -> Iterator[None]:
        """Stop the other live servers while this block runs, then start them again: their
        in-process job workers share the test database and would take jobs meant for another
        server's settings (e.g. an LLM run sent to the default endpoint instead of the fake)."""
        paused = [s for s in cls.running if s.app.state.settings.worker_in_process]
        for s in paused:
            s.__exit__()
        try:
            yield
        finally:
            for s in paused:
                s._new_server()
                s.__enter__()

    def __enter__(self) -> LiveServer:
        LiveServer.running.append(self)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        LiveServer.running.remove(self)


@pytest.fixture(scope="module")
def live_server(base_settings: Settings) -> Iterator[LiveServer]:
    """The service as `serve` runs it, with a job worker inside that renders exports. It takes no
    run jobs: tests that run the pipeline start their own worker against their fake LLM. Its
    heartbeat is as frequent as theirs: a starting worker prunes the workers it thinks stalled."""
    live = {"worker_in_process": True, "worker_queues": ["exports"], "worker_heartbeat_s": 0.5}
    with LiveServer(base_settings.model_copy(update=live)) as server:
        yield server


@pytest.fixture
def http(live_server: LiveServer, clean_db: str) -> Iterator[httpx.Client]:
    """A real HTTP client against the live server; the database is emptied afterwards."""
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        yield c
