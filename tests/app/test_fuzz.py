"""Fuzzing (issue 10, deliverable 8): schemathesis generates requests for every operation of the
OpenAPI spec and sends them over real HTTP, with an admin key, to the service on a seeded
database; no response may be a 5xx, and every response must match the schema the spec declares
for its status. Examples per operation are bounded (FUZZ_EXAMPLES) so the suite stays quick."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import create_engine, text

from tests.conftest import LiveServer

ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))


def _seed(url: str) -> None:
    """Rows for generated ids to find (ids start at 1): a dataset with prompts, answers, a
    ranking and a finished run, so requests reach past the 404s."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO dataset (name) VALUES ('fuzz')"))
            conn.execute(text("""
                INSERT INTO prompt (dataset_id, text, content_hash, review_status)
                SELECT 1, 'prompt ' || i, sha256(convert_to('prompt ' || i, 'UTF8')), 'pending' FROM generate_series(1, 3) i"""))
            conn.execute(text("""
                INSERT INTO completion (dataset_id, prompt_id, text, source, model)
                SELECT 1, p.id, 'answer ' || k || ' to ' || p.text, 'model', 'gen-a' FROM prompt p, generate_series(1, 2) k"""))
            conn.execute(text("""
                INSERT INTO ranking (dataset_id, prompt_id, completion_ids, ranks, ranker_kind)
                SELECT 1, prompt_id, array_agg(id ORDER BY id), ARRAY[1, 2], 'judge' FROM completion GROUP BY prompt_id"""))
            conn.execute(text("""
                INSERT INTO run (dataset_id, kind, status, params, total, done) VALUES (1, 'generate', 'succeeded', '{"k": 2}', 3, 3)"""))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def fuzz_server(base_settings, database_url) -> Iterator[LiveServer]:
    with LiveServer(base_settings.model_copy(update={"api_keys": {ADMIN_KEY: "fuzzer"}})) as server:
        yield server


def _fuzz(operation, base_url: str) -> None:
    """Up to EXAMPLES generated requests for one operation; hypothesis shrinks a failure to its simplest."""

    @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        case.call_and_validate(
            base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30,
            checks=[not_a_server_error, response_schema_conformance],
        )

    check()


def test_no_5xx_and_every_response_matches_its_schema(fuzz_server, clean_db):
    _seed(clean_db)
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    failures, tried = [], 0
    order = {"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4}  # deletions last: the seeded rows serve the rest
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda op: order.get(op.method.upper(), 5))
    for operation in operations:
        if operation.path.endswith("/events"):  # a run's event stream lasts until the run ends
            continue
        tried += 1
        try:
            _fuzz(operation, fuzz_server.url)
        except Exception as exc:  # every operation is tried; the failures are reported together
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert tried > 30
    assert not failures, "\n\n".join(failures)
