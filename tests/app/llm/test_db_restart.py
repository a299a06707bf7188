"""Workers come back (issue 10, finding 6): Postgres restarts in the middle of a run, and the run
still ends with exactly K completions per prompt, for a standalone `rlhf-forge worker` and for
the worker inside `serve`; neither exits, and `/readyz` answers 503 while the database is away.

The Postgres here is the test's own cluster (pgserver's binaries in a temporary folder), never
the shared server: it is stopped as a crash would (`pg_ctl stop -m immediate`) and started again.
The outage lasts past the job queue's connection-pool timeout (30 s): shorter ones a worker
rides out by waiting for a connection; this one used to end procrastinate's worker for good."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from app import db as dbmod
from app.config import normalize_db_url
from tests.conftest import truncate_all

from .conftest import LiveServer, llm_settings, make_dataset, rows, start, wait_run

ROOT = Path(__file__).resolve().parents[3]
K = 2
PROMPTS = 24
OUTAGE_S = 32


class OwnPostgres:
    """A Postgres cluster of this test's own, to crash and start again at will."""

    def __init__(self) -> None:
        import pgserver

        self.server = pgserver.get_server(tempfile.mkdtemp(prefix="forge-restart-pg-"), cleanup_mode="delete")
        self.socket_dir = self.server.get_postmaster_info().socket_dir
        self.url = normalize_db_url(self.server.get_uri())

    def _pg_ctl(self, *args: str) -> None:
        from pgserver import _commands  # the package's own pg_ctl, run as the user it made for the cluster

        _commands.pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user, timeout=30)

    def crash(self) -> None:
        self._pg_ctl("-m", "immediate", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")

    def close(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    try:
        dbmod.upgrade(pg.url)
        yield pg
    finally:
        pg.close()


def _settings(base_settings, fake, url: str, **extra):
    return llm_settings(
        base_settings, fake, database_url=url, worker_restart_max_s=1.0, job_retry_wait_s=0.2, run_chunk_size=4, **extra
    )


def _worker(url: str, fake_url: str, data_dir: Path) -> subprocess.Popen:
    env = {
        **os.environ, "DATABASE_URL": url, "FORGE_DATA_DIR": str(data_dir), "FORGE_LLM_BASE_URL": fake_url,
        "FORGE_LLM_GENERATOR": json.dumps({"concurrency": 8, "params": {"max_tokens": 64}}),
        "FORGE_RUN_CHUNK_SIZE": "4", "FORGE_RUN_STATUS_POLL_S": "0.2", "FORGE_WORKER_HEARTBEAT_S": "0.5",
        "FORGE_WORKER_STALLED_AFTER_S": "2", "FORGE_WORKER_RESTART_MAX_S": "1", "FORGE_JOB_RETRY_WAIT_S": "0.2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--concurrency", "8"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=(data_dir / "worker.log").open("w"),
    )


def _completions(sql) -> int:
    return rows(sql, "SELECT count(*) AS n FROM completion")[0]["n"]


@pytest.mark.parametrize("mode", ["standalone", "in_process"])
def test_postgres_restarts_mid_run_and_the_run_ends_with_k_per_prompt(own_pg, base_settings, fake, tmp_path, mode):
    truncate_all(own_pg.url)
    fake.latency_s = 0.1
    in_process = mode == "in_process"
    sql = create_engine(own_pg.url)
    worker = None if in_process else _worker(own_pg.url, fake.url, tmp_path)
    try:
        with LiveServer(_settings(base_settings, fake, own_pg.url, worker_in_process=in_process)) as server, \
                httpx.Client(base_url=server.url, timeout=30) as http:
            api = httpx.Client(base_url=server.url + "/api/v1", timeout=30)
            dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=PROMPTS)
            run = start(api, dataset_id, {"kind": "generate", "k": K})
            deadline = time.monotonic() + 30
            while _completions(sql) < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            sql.dispose()

            own_pg.crash()
            outage = time.monotonic()
            assert http.get("/readyz").status_code == 503
            time.sleep(OUTAGE_S)
            assert http.get("/readyz").status_code == 503
            own_pg.start()

            # back: the API answers, and (in process) its worker runs again, so /readyz says ready
            while (ready := http.get("/readyz")).status_code != 200:
                assert time.monotonic() - outage < OUTAGE_S + 30, ready.text
                time.sleep(0.1)
            done = wait_run(api, run["id"], timeout=60)
            api.close()
            assert done["status"] == "succeeded" and (done["done"], done["failed"], done["total"]) == (PROMPTS, 0, PROMPTS), done
            got = rows(sql, "SELECT prompt_id, count(*) AS n FROM completion WHERE run_id = :r GROUP BY 1 ORDER BY 1", r=run["id"])
            assert [(r["prompt_id"], r["n"]) for r in got] == [(p, K) for p in prompt_ids]
            assert len(rows(sql, "SELECT DISTINCT prompt_id, sample_index FROM completion")) == PROMPTS * K
            if worker is not None:
                assert worker.poll() is None, "the standalone worker exited on the outage"
            else:
                assert server.app.state.worker.up and server.app.state.worker.restarts >= 1
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            print((tmp_path / "worker.log").read_text()[-6000:])  # shown when the test fails
        sql.dispose()
