"""/metrics over real HTTP after a real run: LLM calls, tokens, cost, retries, errors by endpoint
and model; request latency by route; run progress, queue depth, review and export figures."""

from __future__ import annotations

import json
import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import ContextFilter, JSONFormatter, request_id, run_id

from .conftest import make_dataset, rows, start, wait_run


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text) for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == str(x) for k, x in labels.items()))


def test_metrics_count_what_a_run_did(api, sql, fake, forge_server):
    before = scrape(forge_server.url)
    dataset_id, _ = make_dataset(api, sql, n_prompts=3)
    fake.add_fault("500", times=1, match="part 0")  # one retry
    fake.add_fault("500", match="part 1")  # one prompt fails every attempt
    run = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 2})["id"])
    assert run["status"] == "succeeded" and run["failed"] == 1
    with sql.begin() as conn:  # a job due tomorrow: waits in the queue
        conn.exec_driver_sql(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at) "
            "VALUES ('exports', 'forge.render_export', '{}', 'todo', now() + interval '1 day')"
        )
    after = scrape(forge_server.url)
    labels = {"endpoint": "default", "model": "default"}  # the endpoint's name: its URL may carry credentials

    def delta(name: str, **kw) -> float:
        return value(after, name, **kw) - value(before, name, **kw)

    assert delta("forge_llm_calls_total", outcome="ok", **labels) == 4
    assert delta("forge_llm_calls_total", outcome="error", **labels) == 2
    assert delta("forge_llm_errors_total", **labels) == 2
    assert delta("forge_llm_retries_total", **labels) == 1 + 2 * 2  # 3 attempts each for the failing prompt
    assert delta("forge_llm_tokens_total", type="prompt", **labels) == run["prompt_tokens"]
    assert delta("forge_llm_tokens_total", type="completion", **labels) == run["completion_tokens"]
    assert abs(delta("forge_llm_cost_usd_total", **labels) - float(run["cost"])) < 1e-6
    assert delta("forge_http_request_duration_seconds_count", route="/api/v1/datasets/{dataset_id}/runs", method="POST", status=201) == 1
    assert value(after, "forge_runs", kind="generate", status="succeeded") == 1
    jobs = rows(sql, "SELECT queue_name, status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1, 2")
    assert value(after, "forge_jobs", queue="exports", status="todo") >= 1
    assert jobs and all(value(after, "forge_jobs", queue=j["queue_name"], status=j["status"]) == j["n"] for j in jobs)
    assert value(after, "forge_run_items", run_id=run["id"]) == 0  # finished runs leave the progress gauge
    # a review decision goes through the audit trail, which the review figures count
    prompt_id = api.get(f"/datasets/{dataset_id}/prompts").json()["data"][0]["id"]
    assert api.patch(f"/prompts/{prompt_id}", json={"review_status": "approved"}).status_code == 200
    assert sum(v for (n, _), v in scrape(forge_server.url).items() if n == "forge_review_events") == 1 + sum(
        v for (n, _), v in after.items() if n == "forge_review_events"
    )


def test_requests_carry_an_id_into_the_logs(api):
    r = api.get("/datasets", headers={"X-Request-ID": "trace-123"})
    assert r.headers["x-request-id"] == "trace-123"
    assert len(api.get("/datasets").headers["x-request-id"]) == 32
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    tokens = request_id.set("req-9"), run_id.set(42)
    try:
        ContextFilter().filter(record)
    finally:
        request_id.reset(tokens[0])
        run_id.reset(tokens[1])
    line = json.loads(JSONFormatter().format(record))
    assert line["request_id"] == "req-9" and line["run_id"] == 42 and line["message"] == "hello world"
