"""Paid runs that cannot go wrong by accident: Idempotency-Key, runs that cover only what still
needs them, dry runs with a cost estimate, the model checked at creation, FORGE_LLM_MODEL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.config import EndpointConfig, Settings
from app.llm import resolve_endpoint

from tests.fake_llm import MODELS

from .conftest import add_prompts, make_dataset, rows, start, wait_run


def test_the_same_idempotency_key_and_body_return_the_first_run(api, sql, fake):
    dataset_id, _ = make_dataset(api, sql, n_prompts=2)
    body = {"kind": "generate", "k": 2, "budget": "1000"}
    first = api.post(f"/datasets/{dataset_id}/runs", json=body, headers={"Idempotency-Key": "retry-1"})
    again = api.post(f"/datasets/{dataset_id}/runs", json=body, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other = api.post(f"/datasets/{dataset_id}/runs", json={**body, "k": 3}, headers={"Idempotency-Key": "retry-1"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    # another caller's key of the same name is its own
    bob = api.post(f"/datasets/{dataset_id}/runs", json=body, headers={"Idempotency-Key": "retry-1", "X-Actor": "bob"})
    assert bob.status_code == 201 and bob.json()["id"] != first.json()["id"]
    wait_run(api, first.json()["id"])
    wait_run(api, bob.json()["id"])
    assert rows(sql, "SELECT count(*) AS n FROM run")[0]["n"] == 2
    # a failed request frees its key: the corrected one may use it
    bad = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "k": 1}, headers={"Idempotency-Key": "k2"})
    good = api.post(f"/datasets/{dataset_id}/runs", json={**body, "k": 1}, headers={"Idempotency-Key": "k2"})
    assert bad.status_code == 422 and good.status_code == 201
    # exports too
    ex = [api.post(f"/datasets/{dataset_id}/exports", json={}, headers={"Idempotency-Key": "ex"}) for _ in range(2)]
    assert ex[0].status_code == ex[1].status_code and ex[0].status_code < 300
    assert ex[0].json()["id"] == ex[1].json()["id"]
    # imports: without the key the second would report two duplicates
    imp = [api.post(f"/datasets/{dataset_id}/prompts/import", json=["new one?", "new two?"], headers={"Idempotency-Key": "imp"})
           for _ in range(2)]
    assert imp[0].status_code == imp[1].status_code == 200 or imp[0].status_code == imp[1].status_code == 201
    assert imp[0].json() == imp[1].json() and imp[1].json()["inserted"] == 2


def test_runs_cover_only_the_prompts_that_still_need_them(api, sql, fake):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=3)
    first = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 2})["id"])
    assert first["total"] == 3 and fake.count() == 6
    [new] = add_prompts(sql, dataset_id, ["A prompt added later, with nothing generated yet?"])
    with sql.begin() as conn:
        conn.exec_driver_sql(f"UPDATE prompt SET review_status = 'approved' WHERE id = {prompt_ids[0]}")
    # the same plan again: only the new prompt; the approved one never
    again = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 2})["id"])
    assert again["total"] == 1 and fake.count() == 8
    # a larger K: only the missing sample of each open prompt
    more = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 3})["id"])
    assert more["total"] == 3 and fake.count() == 11
    made = rows(sql, "SELECT prompt_id, sample_index FROM completion WHERE run_id = :r ORDER BY 1", r=more["id"])
    assert made == [{"prompt_id": p, "sample_index": 2} for p in [*prompt_ids[1:], new]]
    # a different plan is a different plan
    other = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 1, "seed": 7})["id"])
    assert other["total"] == 3
    # all: every selected prompt, approved included
    everything = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 1, "all": True})["id"])
    assert everything["total"] == 4

    judged = wait_run(api, start(api, dataset_id, {"kind": "judge"})["id"])
    assert judged["status"] == "succeeded" and judged["total"] == 3  # not the approved prompt
    assert wait_run(api, start(api, dataset_id, {"kind": "judge"})["id"])["total"] == 0  # nothing left to judge
    # a new completion makes the ranking stale
    wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 4, "prompts": {"prompt_ids": [new]}})["id"])
    assert wait_run(api, start(api, dataset_id, {"kind": "judge"})["id"])["total"] == 1
    assert wait_run(api, start(api, dataset_id, {"kind": "judge", "all": True})["id"])["total"] == 4


def test_a_dry_run_counts_and_prices_without_starting(api, sql, fake):
    dataset_id, _ = make_dataset(api, sql, n_prompts=3)
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "k": 2, "dry_run": True})
    assert r.status_code == 200, r.text
    est = r.json()
    chars = sum(x["n"] for x in rows(sql, "SELECT length(text) AS n FROM prompt"))
    assert est["dry_run"] is True and (est["prompts"], est["requests"]) == (3, 6)
    assert est["estimated_completion_tokens"] == 6 * 64  # the generator's max_tokens in these settings
    assert abs(est["estimated_prompt_tokens"] - 2 * chars / 4) <= 6
    price = Decimal(est["estimated_prompt_tokens"]) * 1000 / 10**6 + Decimal(est["estimated_completion_tokens"]) * 2000 / 10**6
    assert Decimal(str(est["estimated_cost"])) == price.quantize(Decimal("0.000001"))
    assert rows(sql, "SELECT count(*) AS n FROM run")[0]["n"] == 0 and fake.count() == 0
    gen = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 2})["id"])
    assert api.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "k": 2, "dry_run": True}).json()["requests"] == 0
    judge = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "judge", "dry_run": True, "source_run_id": gen["id"]}).json()
    assert (judge["prompts"], judge["requests"]) == (3, 6)  # two orders each
    pairwise = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "judge", "mode": "pairwise", "dry_run": True}).json()
    assert pairwise["requests"] == 3 * 2  # one pair of two, asked both ways
    unpriced = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "dry_run": True, "llm": {"generator": {"model": "fake"}}})
    assert unpriced.status_code == 200 and unpriced.json()["estimated_cost"] is None


def test_the_model_is_checked_against_the_endpoint(api, sql, fake):
    fake.models = list(MODELS)
    dataset_id, _ = make_dataset(api, sql, n_prompts=1)
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "llm": {"generator": {"model": "gpt-nope"}}})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "gpt-nope" in err["message"] and "default, fake" in err["message"]
    assert err["details"]["served"] == ["default", "fake"] and err["details"]["missing"] == ["gpt-nope"]
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "plan": [{"model": "other"}]})
    assert r.status_code == 422 and "'other'" in r.json()["error"]["message"]
    assert rows(sql, "SELECT count(*) AS n FROM run")[0]["n"] == 0
    fake.models = None  # an endpoint without /v1/models: let through
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "generate", "llm": {"generator": {"model": "gpt-nope"}}})
    assert r.status_code == 201
    wait_run(api, r.json()["id"])


def test_one_setting_names_every_roles_model(monkeypatch, forge_settings):
    monkeypatch.setenv("FORGE_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("FORGE_LLM_JUDGE", '{"model": "gpt-4o"}')
    settings = Settings(_env_file=None)
    assert resolve_endpoint(settings, "generator").model == resolve_endpoint(settings, "synthesizer").model == "gpt-4o-mini"
    assert resolve_endpoint(settings, "judge").model == "gpt-4o"
    assert resolve_endpoint(forge_settings, "generator").model == "default"


def test_the_model_setting_fits_named_endpoints(monkeypatch):
    monkeypatch.setenv("FORGE_LLM_MODEL", "qwen-7b")
    monkeypatch.setenv("FORGE_LLM_ENDPOINTS", '{"vllm": {"base_url": "http://10.0.0.2:8000/v1"}, '
                       '"openai": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini"}}')
    settings = Settings(_env_file=None)
    assert resolve_endpoint(settings, "generator").model == "qwen-7b"  # "default" names no model of its own
    assert resolve_endpoint(settings, "judge", run_llm={"judge": {"endpoint": "vllm"}}).model == "qwen-7b"
    assert resolve_endpoint(settings, "judge", run_llm={"judge": {"endpoint": "openai"}}).model == "gpt-4o-mini"
    assert resolve_endpoint(settings, "judge", run_llm={"judge": {"endpoint": "openai", "model": "gpt-4o"}}).model == "gpt-4o"


async def test_each_named_endpoint_is_asked_for_its_own_models(fake, forge_settings):
    """A run that names another endpoint is checked against that endpoint's /v1/models, and the
    refusal names the endpoint, never its URL."""
    from app.errors import InvalidInput
    from app.llm.catalog import check_models
    from tests.fake_llm import FakeLLM

    with FakeLLM() as second:
        fake.models, second.models = ["default", "fake"], ["local-llama"]
        settings = forge_settings.model_copy(update={"llm_endpoints": {"second": EndpointConfig(base_url=second.url, model="local-llama")}})
        there = resolve_endpoint(settings, "judge", run_llm={"judge": {"endpoint": "second"}})
        await check_models(there, {there.model}, "judge")  # served there, though not by the default endpoint
        with pytest.raises(InvalidInput) as refused:
            await check_models(there, {"fake"}, "judge")
        assert "endpoint 'second'" in refused.value.message and second.url not in refused.value.message
        assert refused.value.details == {"field": "model", "endpoint": "second", "missing": ["fake"], "served": ["local-llama"]}
        here = resolve_endpoint(settings, "judge")
        with pytest.raises(InvalidInput, match="local-llama"):
            await check_models(here, {"local-llama"}, "judge")
        second.models = None  # no /v1/models there: let through
        await check_models(there, {"anything"}, "judge")
