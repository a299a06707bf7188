"""An export is a job on the one queue: deferred after the commit that made it, carrying its id
only, done by whichever worker takes it; a second execution writes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import httpx

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import db
from app.errors import NotFound
from app.exports import service, tasks
from app.exports.schemas import ExportCreate
from app.llm import LLMPool
from app.models import Export, ExportStatus
from app.worker import Runtime, make_job_app, run_worker

from .conftest import Seeder
from .test_versions import _reviewed


@pytest.fixture
async def lone_database(pg_server_url, base_settings, tmp_path):
    """A database of its own: no other test's worker (the live server's renders exports) is
    listening on it, so a job stays queued until this test starts one."""
    name = f"forge_lone_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    engine = None
    try:
        db.upgrade(url)
        settings = base_settings.model_copy(update={"database_url": url, "data_dir": tmp_path})
        engine = db.make_engine(url, settings)
        yield settings, engine
    finally:
        if engine is not None:
            await engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def test_the_export_waits_in_the_queue_until_a_worker_takes_it(lone_database):
    from app.main import create_app

    settings, engine = lone_database
    database_url = settings.database_url
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        db.session_factory(engine)() as session,
    ):
        await _waits_then_renders(client, session, settings, engine, database_url)


async def _waits_then_renders(client, session, settings, engine, database_url):
    ds = await _reviewed(Seeder(session), n=4)
    r = await client.post(f"/api/v1/datasets/{ds.id}/exports", json={})
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    # this app runs no worker (worker_in_process=False): the job waits, holding the id only
    jobs = (await session.execute(text("SELECT task_name, args, status FROM procrastinate_jobs"))).all()
    assert [tuple(j) for j in jobs] == [("forge.render_export", {"export_id": export_id}, "todo")]
    assert (await client.get(f"/api/v1/datasets/{ds.id}/exports/1")).json()["status"] == "queued"

    job_app = make_job_app(database_url)
    llm = LLMPool(settings, engine)
    async with job_app.open_async():
        worker = asyncio.create_task(run_worker(job_app, Runtime(settings, engine, db.session_factory(engine), llm), concurrency=1))
        try:
            deadline = time.monotonic() + 60
            while (body := (await client.get(f"/api/v1/datasets/{ds.id}/exports/1")).json())["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.05)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            await llm.close()
    assert body["status"] == "succeeded", body
    assert body["manifest"]["counts"]


async def test_a_second_execution_of_the_job_writes_nothing(seed, session, engine, base_settings, tmp_path):
    ds = await _reviewed(seed, n=4)
    export = await service.create(session, ds, ExportCreate(), actor="test")
    await session.commit()
    sessions = db.session_factory(engine)
    settings = base_settings.model_copy(update={"data_dir": tmp_path})

    await tasks.render(export.id, sessions=sessions, settings=settings)
    first = await session.get(Export, export.id, populate_existing=True)
    assert first.status == "succeeded"
    written = {p: p.stat().st_mtime_ns for p in Path(first.path).parent.rglob("*")}
    assert len(written) > 2

    await tasks.render(export.id, sessions=sessions, settings=settings)  # a retried or duplicated job
    second = await session.get(Export, export.id, populate_existing=True)
    assert (second.status, second.finished_at, second.manifest) == ("succeeded", first.finished_at, first.manifest)
    assert {p: p.stat().st_mtime_ns for p in Path(first.path).parent.rglob("*")} == written

    # a version a dead worker left running is written when the re-queued job runs again
    stalled = await service.create(session, ds, ExportCreate(), actor="test")
    await session.commit()
    await service.mark(sessions, stalled, ExportStatus.running)
    await tasks.render(stalled.id, sessions=sessions, settings=settings)
    assert (await session.get(Export, stalled.id, populate_existing=True)).status == "succeeded"

    with pytest.raises(NotFound):
        await tasks.render(10**9, sessions=sessions, settings=settings)
