"""A worker process killed with SIGKILL mid-run loses nothing: another worker picks up the dead
one's jobs once its heartbeat stops, and the run ends with exactly the rows of an undisturbed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import LiveServer, llm_settings, make_dataset, rows, start, wait_run

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def api_only(base_settings, fake) -> Iterator[LiveServer]:
    """The API without a worker: the jobs are left to the worker processes of the test."""
    with LiveServer(llm_settings(base_settings, fake, worker_in_process=False)) as server:
        yield server


@pytest.fixture
def api(api_only, db_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_only.url + "/api/v1", timeout=30) as client:
        yield client


def worker(database_url: str, fake_url: str, tmp_path: Path, **extra: str) -> subprocess.Popen:
    env = {
        **os.environ, **extra, "DATABASE_URL": database_url, "FORGE_DATA_DIR": str(tmp_path), "FORGE_LLM_BASE_URL": fake_url,
        "FORGE_LLM_GENERATOR": json.dumps({"concurrency": 4, "params": {"max_tokens": 64}}),
        "FORGE_RUN_CHUNK_SIZE": "4", "FORGE_RUN_STATUS_POLL_S": "0.2",
        "FORGE_WORKER_HEARTBEAT_S": "0.5", "FORGE_WORKER_STALLED_AFTER_S": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--concurrency", "4"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def completions(sql, run_id: int) -> list[tuple]:
    return [
        (r["prompt_id"], r["sample_index"], r["text"], r["model"], json.dumps(r["params"], sort_keys=True))
        for r in rows(sql, "SELECT * FROM completion WHERE run_id = :r ORDER BY prompt_id, sample_index", r=run_id)
    ]


def test_a_killed_worker_loses_nothing(api, sql, fake, database_url, tmp_path):
    fake.latency_s = 0.1
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=40)
    first = worker(database_url, fake.url, tmp_path)
    try:
        run = start(api, dataset_id, {"kind": "generate", "k": 2})
        deadline = time.monotonic() + 30
        while rows(sql, "SELECT count(*) AS n FROM completion")[0]["n"] < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    made = rows(sql, "SELECT count(*) AS n FROM completion")[0]["n"]
    assert 12 <= made < 80, "the kill must land mid-run"
    doing = rows(sql, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'doing'")[0]["n"]
    assert doing > 0 and api.get(f"/runs/{run['id']}").json()["status"] == "running"

    # the cache off from here, so the undisturbed run below asks every answer anew
    second = worker(database_url, fake.url, tmp_path, FORGE_LLM_CACHE="false")
    try:
        done = wait_run(api, run["id"], timeout=60)
        assert done["status"] == "succeeded" and (done["done"], done["failed"], done["total"]) == (40, 0, 40)
        killed_rows = completions(sql, run["id"])
        assert [(p, k) for p, k, *_ in killed_rows] == [(p, k) for p in prompt_ids for k in range(2)]
        # what an undisturbed run makes
        fake.latency_s = 0
        asked_before = fake.count()
        calm = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 2, "all": True})["id"])
        assert calm["status"] == "succeeded" and fake.count() == asked_before + 80
        # it answers exactly as the resumed run did: none of its answers is stored twice, each is
        # recorded in its item as a duplicate of the resumed run's completion of that sample
        assert completions(sql, calm["id"]) == []
        made = rows(sql, "SELECT id, prompt_id, sample_index FROM completion WHERE run_id = :r", r=run["id"])
        ids = {(r["prompt_id"], r["sample_index"]): r["id"] for r in made}
        items = rows(sql, "SELECT prompt_id, result FROM run_item WHERE run_id = :r ORDER BY prompt_id", r=calm["id"])
        repeated = [(it["prompt_id"], d["sample_index"], d["duplicate_of"]) for it in items for d in it["result"]["duplicates"]]
        assert repeated == [(p, k, ids[(p, k)]) for p in prompt_ids for k in range(2)]
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(15)
        except subprocess.TimeoutExpired:
            second.kill()
