"""Fixtures for the LLM pipeline: the fake OpenAI-compatible server, settings pointing at it,
a live API server with a worker in process, and helpers to seed data and follow runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.config import LLMRole, Settings
from app.prompts.hashing import content_hash
from tests.conftest import LiveServer, truncate_all
from tests.fake_llm import FakeLLM

# USD per million tokens, for every model name the tests ask the fake for (judge panels included)
PRICES = {
    model: {"prompt": Decimal(1000), "completion": Decimal(2000)}
    for model in ("default", "biased", "unbiased", "judge-a", "judge-b", "judge-c", "same-a", "same-b",
                  "good-1", "good-2", "good-3", "bad")
}
TERMINAL = {"succeeded", "failed", "cancelled", "budget_exhausted"}


@pytest.fixture(scope="package")
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(request) -> Iterator[None]:
    if "fake" in request.fixturenames:
        server = request.getfixturevalue("fake")
        server.clear()
        server.latency_s = 0
    yield


def llm_settings(base: Settings, fake: FakeLLM, **overrides) -> Settings:
    values = dict(
        database_url=base.database_url, data_dir=base.data_dir, max_text_chars=base.max_text_chars,
        llm_base_url=fake.url, llm_api_key="sk-test-SECRET-KEY", llm_backoff_initial_s=0.01, llm_backoff_max_s=0.3,
        llm_max_attempts=3, llm_timeout_s=5.0, llm_prices=PRICES, worker_in_process=True, worker_concurrency=8,
        run_chunk_size=4, run_status_poll_s=0.2, worker_heartbeat_s=0.5, worker_stalled_after_s=2.0,
        llm_generator=LLMRole(concurrency=8, params={"max_tokens": 64}),
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="package")
def forge_settings(base_settings: Settings, fake: FakeLLM) -> Settings:
    return llm_settings(base_settings, fake)


@pytest.fixture(scope="module")
def forge_server(forge_settings: Settings) -> Iterator[LiveServer]:
    """The service over real HTTP with a job worker inside, talking to the fake LLM (the only
    worker on the test database while it runs)."""
    with LiveServer.alone(), LiveServer(forge_settings) as server:
        yield server


def _settle(url: str, timeout: float = 10) -> None:
    """Stop what a test left running, and wait until no job is mid-flight."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE run SET status = 'cancelled' WHERE status IN ('queued', 'running')"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if not conn.execute(text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")).scalar():
                    return
            time.sleep(0.05)
    finally:
        engine.dispose()


@pytest.fixture
def db_url(database_url: str) -> Iterator[str]:
    yield database_url
    _settle(database_url)
    truncate_all(database_url)


@pytest.fixture
def api(forge_server: LiveServer, db_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=forge_server.url + "/api/v1", timeout=30) as client:
        yield client


@pytest.fixture
def sql(db_url: str):
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


def add_prompts(sql, dataset_id: int, texts: list[str], **cols) -> list[int]:
    with sql.begin() as conn:
        return [
            conn.execute(
                text("INSERT INTO prompt (dataset_id, text, content_hash) VALUES (:d, :t, :h) RETURNING id"),
                {"d": dataset_id, "t": t, "h": content_hash(t)},
            ).scalar_one()
            for t in texts
        ]


def make_dataset(api: httpx.Client, sql, name: str = "ds", n_prompts: int = 5, **settings) -> tuple[int, list[int]]:
    r = api.post("/datasets", json={"name": name, "settings": settings})
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    ids = add_prompts(sql, dataset_id, [f"Question {i}: how do {name} things work, part {i}?" for i in range(n_prompts)])
    return dataset_id, ids


def start(api: httpx.Client, dataset_id: int, body: dict) -> dict:
    body = {"budget": "1000", **body}  # the fake's model has a price (PRICES): a paid run needs a budget
    r = api.post(f"/datasets/{dataset_id}/runs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def wait_run(api: httpx.Client, run_id: int, timeout: float = 30, until=TERMINAL) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/runs/{run_id}").json()
        if run["status"] in until or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def rows(sql, query: str, **params) -> list[dict]:
    with sql.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(query), params)]
