"""Exports are durable and atomic, and streamed ones cannot starve the service (issue 10,
finding 7): a worker killed while writing a version leaves no partial files under the version's
name, and the version does not stay `running`: its job is re-queued and written; forty
streamed exports whose clients never read hold only the streaming pool, and a normal route
still answers; a dataset's export files go with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

import trainer.formats as F
from app.config import Settings
from tests.conftest import LiveServer

from .conftest import wait_for_export

ROOT = Path(__file__).resolve().parents[3]


def _bulk_dataset(url: str, name: str, n: int, width: int) -> int:
    """n approved prompts, each with 3 approved answers of about `width` characters and an approved ranking."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            d = conn.execute(text("INSERT INTO dataset (name) VALUES (:n) RETURNING id"), {"n": name}).scalar_one()
            conn.execute(text("""
                INSERT INTO prompt (dataset_id, text, content_hash, review_status)
                SELECT :d, 'prompt ' || i, sha256(convert_to('prompt ' || i, 'UTF8')), 'approved'
                FROM generate_series(1, :n) i"""), {"d": d, "n": n})
            conn.execute(text("""
                INSERT INTO completion (dataset_id, prompt_id, text, source, model, review_status)
                SELECT :d, p.id, 'answer ' || k || ' to ' || p.text || ' ' || repeat(md5(p.text || k), :w / 32), 'model', 'gen-a', 'approved'
                FROM prompt p, generate_series(1, 3) k WHERE p.dataset_id = :d"""), {"d": d, "w": width})
            conn.execute(text("""
                INSERT INTO ranking (dataset_id, prompt_id, completion_ids, ranks, ranker_kind, review_status)
                SELECT :d, prompt_id, array_agg(id ORDER BY id), ARRAY[1, 2, 3], 'judge', 'approved'
                FROM completion WHERE dataset_id = :d GROUP BY prompt_id"""), {"d": d})
        return d
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def own_settings(base_settings, tmp_path_factory) -> Settings:
    """A data folder of this module's own: exports of earlier modules lie in the session's, under
    the same dataset ids (the tables restart their ids), and `v1` must not exist before the job."""
    return base_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("durable-data")})


@pytest.fixture(scope="module")
def api_only(own_settings) -> Iterator[LiveServer]:
    """The API without a worker (the session's `live_server` runs one): the test's workers do the jobs."""
    with LiveServer(own_settings.model_copy(update={"worker_in_process": False})) as server:
        yield server


@pytest.fixture
def http(api_only, clean_db) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_only.url, timeout=60) as c:
        yield c


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _worker(settings, tmp_path: Path) -> subprocess.Popen:
    env = {
        **os.environ, "DATABASE_URL": settings.database_url, "FORGE_DATA_DIR": str(settings.data_dir),
        "FORGE_WORKER_HEARTBEAT_S": "0.5", "FORGE_WORKER_STALLED_AFTER_S": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--concurrency", "2"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=(tmp_path / f"worker-{time.monotonic_ns()}.log").open("w"),
    )


def test_a_worker_killed_mid_export_leaves_no_partial_files_and_the_version_is_written(http, own_settings, clean_db, tmp_path):
    base_settings = own_settings
    dataset_id = _bulk_dataset(clean_db, "big", n=8000, width=1500)  # a few seconds of writing: the kill lands mid-write
    folder = base_settings.data_dir / "exports" / str(dataset_id)
    r = http.post(f"/api/v1/datasets/{dataset_id}/exports", json={"formats": ["sft", "rm", "rl", "pairs"], "archive": True})
    assert r.status_code == 202, r.text
    first = _worker(base_settings, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not any(folder.glob(".v1.part-*/*.jsonl")):  # mid-write: files in the staging folder
            assert time.monotonic() < deadline and first.poll() is None, "the export never started writing"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    body = http.get(f"/api/v1/datasets/{dataset_id}/exports/1").json()
    assert body["status"] == "running"
    assert not (folder / "v1").exists() and not (folder / "v1.tar.gz").exists()  # nothing half-written under its name
    r = http.get(f"/api/v1/datasets/{dataset_id}/exports/1/files/manifest.json")
    assert r.status_code == 409

    second = _worker(base_settings, tmp_path)  # re-queues the dead worker's job once its heartbeat is stale
    try:
        done = wait_for_export(http, dataset_id, 1, timeout=90)
    finally:
        _stop(second)
    assert done["status"] == "succeeded", done
    assert sorted(p.name for p in folder.iterdir()) == ["v1", "v1.tar.gz"]  # the killed attempt's leftovers are gone
    manifest = F.Manifest(**done["manifest"])
    assert manifest.verify(folder / "v1") == [] and manifest.counts["sft"]["train"] > 0
    assert "path" not in done and str(base_settings.data_dir) not in r.text

    # the dataset goes, and its files with it
    assert http.delete(f"/api/v1/datasets/{dataset_id}").status_code == 204
    assert not folder.exists()


@pytest.fixture
def small_stream_pool(own_settings, clean_db):
    settings = own_settings.model_copy(update={
        "worker_in_process": False, "export_stream_pool": 2, "export_stream_wait_s": 1.0, "export_stream_send_timeout_s": 3.0, "db_pool_size": 4,
    })
    with LiveServer(settings) as server:
        yield server


def _stuck_reader(port: int, path: str) -> socket.socket:
    """A client that asks for a streamed export and never reads a byte of it."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return s


def test_streamed_exports_whose_readers_never_read_do_not_starve_other_routes(small_stream_pool, clean_db):
    dataset_id = _bulk_dataset(clean_db, "wide", n=1500, width=3000)  # each stream is megabytes: it fills every buffer
    port = small_stream_pool.port
    readers = [_stuck_reader(port, f"/api/v1/datasets/{dataset_id}/exports/sft.jsonl") for _ in range(40)]
    try:
        time.sleep(1.5)  # let them all take what they can
        with httpx.Client(base_url=small_stream_pool.url, timeout=30) as http:
            started = time.monotonic()
            r = http.get("/api/v1/datasets")
            assert r.status_code == 200 and len(r.json()["data"]) == 1
            r = http.get(f"/api/v1/datasets/{dataset_id}/prompts", params={"limit": 5})
            assert r.status_code == 200
            assert time.monotonic() - started < 20  # generous: on the shared pool this waited out its 30 s timeout
            engine = create_engine(clean_db)
            try:
                with engine.connect() as conn:
                    streaming = conn.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rlhf-forge-stream'"
                    )).scalar()
            finally:
                engine.dispose()
            assert streaming <= 2  # the streams hold their own small pool, nothing more
            # the readers that never read are dropped after the send timeout, and their connections come back
            deadline = time.monotonic() + 30
            while True:
                r = http.get(f"/api/v1/datasets/{dataset_id}/exports/rl.jsonl")
                if r.status_code == 200:
                    break
                assert r.status_code == 503 and r.headers["retry-after"], r.text
                assert time.monotonic() < deadline, "the stuck streams never gave their connections back"
                time.sleep(0.5)
    finally:
        for s in readers:
            s.close()
