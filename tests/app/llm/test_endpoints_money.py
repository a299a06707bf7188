"""Issue 10 finding 1 (endpoints are configuration, chosen by name; dataset settings changes and
deletions audited, the trail outliving the dataset) and issue 11's money rules, over real HTTP
against the fake LLM."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from app.config import EndpointConfig, ModelPrice
from app.llm.prices import PRICES_AS_OF, builtin_price, price_of
from tests.conftest import LiveServer

from .conftest import TERMINAL, llm_settings, make_dataset, rows, wait_run

NAMED = "configure a named endpoint in FORGE_LLM_ENDPOINTS"


@pytest.fixture(scope="module")
def forge_server(base_settings, fake) -> Iterator[LiveServer]:
    """The service with three endpoints on the fake: "default" (priced by FORGE_LLM_PRICES), "local"
    (declares itself free) and "mystery" (a model priced nowhere)."""
    endpoints = {
        "local": EndpointConfig(base_url=fake.url, api_key="sk-local", model="local-model", prices={"*": ModelPrice()}),
        "mystery": EndpointConfig(base_url=fake.url, model="mystery-model"),
    }
    settings = llm_settings(base_settings, fake, llm_endpoints=endpoints, run_max_prompts=50)
    with LiveServer(settings) as server:
        yield server


def test_a_dataset_or_run_names_no_url_and_no_key(api, sql):
    """Finding 1: on old main this PATCH was taken, and the next run sent the key and prompts there."""
    ds, _ = make_dataset(api, sql, n_prompts=1)
    for bad in (
        {"base_url": "http://attacker.invalid/v1"},
        {"base_url": "http://attacker.invalid/v1", "api_key_env": "FORGE_LLM_KEY_PROD"},
        {"api_key": "sk-inline"},
    ):
        r = api.patch(f"/datasets/{ds}", json={"settings": {"llm": {"generator": bad}}})
        assert r.status_code == 422 and NAMED in r.json()["error"]["message"], r.text
        r = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "budget": "1", "llm": {"generator": bad}})
        assert r.status_code == 422 and NAMED in r.json()["error"]["message"], r.text
    r = api.patch(f"/datasets/{ds}", json={"settings": {"llm": {"judge": {"endpoint": "elsewhere"}}}})
    assert r.status_code == 422
    assert "no LLM endpoint named 'elsewhere'" in r.json()["error"]["message"] and "local" in r.json()["error"]["message"]
    assert api.get(f"/datasets/{ds}").json()["settings"] == {}


def test_a_run_on_a_named_endpoint_records_the_name_never_the_url(api, sql, fake):
    ds, _ = make_dataset(api, sql, n_prompts=3, llm={"generator": {"endpoint": "local"}})
    run = wait_run(api, api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 2}).json()["id"])
    assert run["status"] == "succeeded" and Decimal(str(run["cost"])) == 0  # declared free: known zero, no budget needed
    assert {r["model"] for r in fake.requests} == {"local-model"}
    comps = rows(sql, "SELECT params, cost FROM completion WHERE run_id = :r", r=run["id"])
    assert len(comps) == 6 and all(c["params"]["endpoint"] == "local" and c["cost"] == 0 for c in comps)
    stored = str(rows(sql, "SELECT params FROM run")) + str([c["params"] for c in comps])
    assert fake.url not in stored and "base_url" not in stored


def test_settings_changes_and_deletion_are_audited_and_the_trail_outlives_the_dataset(api, sql):
    ds, _ = make_dataset(api, sql, n_prompts=2)
    changed = {"settings": {"llm": {"judge": {"endpoint": "local"}}, "budget": 5}}
    r = api.patch(f"/datasets/{ds}", json=changed, headers={"x-actor": "alice"})
    assert r.status_code == 200 and r.json()["settings"]["budget"] == "5"
    assert api.delete(f"/datasets/{ds}", headers={"x-actor": "bob"}).status_code == 204
    assert api.get(f"/datasets/{ds}").status_code == 404 and api.get("/datasets").json()["data"] == []
    trail = api.get(f"/datasets/{ds}/audit").json()["data"]
    update, delete = [e for e in trail if e["target_type"] == "dataset"]
    assert (update["actor"], update["action"]) == ("alice", "update")
    assert update["before"]["settings"] == {} and update["after"]["settings"]["llm"]["judge"]["endpoint"] == "local"
    assert (delete["actor"], delete["action"], delete["after"]) == ("bob", "delete", None)
    assert delete["before"]["name"] == "ds" and delete["before"]["counts"]["prompts"] == 2
    assert api.get("/datasets/999/audit").status_code == 404


def test_an_unpriced_model_costs_unknown_and_cannot_carry_a_budget(api, sql):
    ds, _ = make_dataset(api, sql, n_prompts=2)
    mystery = {"generator": {"endpoint": "mystery"}}
    r = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 1, "budget": "1", "llm": mystery})
    assert r.status_code == 422 and "'mystery-model' on endpoint 'mystery' has no price" in r.json()["error"]["message"]
    run = wait_run(api, api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 1, "llm": mystery}).json()["id"])
    assert run["status"] == "succeeded" and run["cost"] is None and run["prompt_tokens"] > 0
    items = api.get(f"/runs/{run['id']}/items").json()["data"]
    assert len(items) == 2 and all(i["cost"] is None for i in items)
    r = api.post(f"/runs/{run['id']}/resume", json={"budget": "1"})
    assert r.status_code == 422 and "without a price" in r.json()["error"]["message"]
    assert [c["cost"] for c in rows(sql, "SELECT cost FROM completion WHERE run_id = :r", r=run["id"])] == [None, None]
    # a plan entry naming an unpriced model on a priced endpoint is refused the same way
    r = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "budget": "1", "plan": [{"model": "nobody-prices-me"}]})
    assert r.status_code == 422 and "nobody-prices-me" in r.json()["error"]["message"]


def test_a_paid_run_needs_a_budget_or_a_dataset_cap(api, sql):
    ds, _ = make_dataset(api, sql, n_prompts=1)
    r = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 1})
    message = r.json()["error"]["message"]
    assert r.status_code == 422 and "costs money" in message and "settings.budget" in message
    capped, _ = make_dataset(api, sql, name="capped", n_prompts=1, budget="10")
    r = api.post(f"/datasets/{capped}/runs", json={"kind": "generate", "k": 1})
    assert r.status_code == 201, r.text
    assert api.patch(f"/datasets/{ds}", json={"settings": {"budget": -1}}).status_code == 422
    wait_run(api, r.json()["id"])


def test_the_dataset_cap_stops_every_run_of_the_dataset(api, sql, fake):
    fake.latency_s = 0.05
    ds, _ = make_dataset(api, sql, n_prompts=40, budget="0.3")
    started = []

    def start() -> None:
        started.append(api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 2}).json())

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = [wait_run(api, r["id"]) for r in started]
    assert all(r["status"] == "budget_exhausted" for r in runs), runs
    assert any("spend cap" in (r["error"] or "") for r in runs)
    spent = sum(Decimal(str(r["cost"])) for r in runs)
    assert Decimal("0.3") <= spent < Decimal("0.3") + Decimal("2.5")  # what was in flight, no more
    assert sum(r["done"] for r in runs) < 80
    r = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 2})
    assert r.status_code == 409 and "spend cap" in r.json()["error"]["message"]
    assert api.post(f"/runs/{runs[0]['id']}/resume", json={"budget": "100"}).status_code == 409
    fake.latency_s = 0
    assert all(wait_run(api, r["id"])["status"] in TERMINAL for r in runs)


def test_every_run_bounds_its_prompt_count(api, sql):
    ds, _ = make_dataset(api, sql, n_prompts=55, llm={"generator": {"endpoint": "local"}})
    r = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 1, "prompts": {"limit": 51}})
    assert r.status_code == 422 and "at most 50 prompts per run" in r.json()["error"]["message"]
    run = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": 1}).json()
    assert run["params"]["prompts"]["limit"] == 50
    assert wait_run(api, run["id"])["total"] == 50
    r = api.post(f"/datasets/{ds}/runs", json={"kind": "synth", "num_prompts": 51, "llm": {"synthesizer": {"endpoint": "local"}}})
    assert r.status_code == 422 and "num_prompts: at most 50" in r.json()["error"]["message"]


def test_prices_come_from_the_endpoint_then_the_settings_then_the_table(forge_settings):
    assert PRICES_AS_OF and builtin_price("gpt-4o").prompt == Decimal("2.50")
    assert builtin_price("gpt-4o-2024-08-06") == builtin_price("gpt-4o") != builtin_price("gpt-4o-mini")
    assert builtin_price("claude-3-5-sonnet-20241022").completion == Decimal(15)
    assert builtin_price("openai/gpt-4.1-mini") == builtin_price("gpt-4.1-mini")
    assert builtin_price("my-finetune") is None
    free = EndpointConfig(base_url="http://127.0.0.1:1/v1", prices={"*": ModelPrice()})
    assert price_of(forge_settings, free, "gpt-4o") == ModelPrice()  # a local server serving "gpt-4o" is free
    assert price_of(forge_settings, None, "default").prompt == 1000  # FORGE_LLM_PRICES
    assert price_of(forge_settings, None, "unheard-of") is None
