"""Issue 15: an endpoint configured with `supports_n` (vLLM answers OpenAI's `n`) gets a prompt's
samples that differ only by seed in one call; every other endpoint never sees `n`. Seeds, cache,
cost and exactly-K hold either way. Over real HTTP against the fake LLM, which honours `n`."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from app.config import EndpointConfig
from app.llm.client import _cost_shares, _shares
from tests.conftest import LiveServer

from .conftest import llm_settings, make_dataset, rows, start, wait_run

K = 4
ONE_ENTRY = [{"temperature": 0.9}]  # every sample asked alike but for its seed


@pytest.fixture(scope="module")
def forge_server(base_settings, fake) -> Iterator[LiveServer]:
    """The service with "vllm": the fake again, declared to support `n`."""
    endpoints = {"vllm": EndpointConfig(base_url=fake.url, api_key="sk-test-SECRET-KEY", supports_n=True)}
    with LiveServer(llm_settings(base_settings, fake, llm_endpoints=endpoints)) as server:
        yield server


def _generate(api, dataset_id: int, **body) -> dict:
    return wait_run(api, start(api, dataset_id, {"kind": "generate", "k": K, **body})["id"])


def test_an_endpoint_with_n_is_asked_once_per_prompt_for_k_samples(api, sql, fake):
    ds, prompt_ids = make_dataset(api, sql, n_prompts=3, llm={"generator": {"endpoint": "vllm"}})
    dry = api.post(f"/datasets/{ds}/runs", json={"kind": "generate", "k": K, "plan": ONE_ENTRY, "dry_run": True}).json()
    assert (dry["prompts"], dry["requests"]) == (3, 3)  # a dry run counts the calls as they will be made
    run = _generate(api, ds, plan=ONE_ENTRY, seed=7)
    assert run["status"] == "succeeded" and (run["done"], run["failed"]) == (3, 0), run
    assert len(fake.requests) == 3 and all(r["n"] == K and r["seed"] == 7 for r in fake.requests)
    comps = rows(sql, "SELECT * FROM completion WHERE run_id = :r ORDER BY prompt_id, sample_index", r=run["id"])
    assert [(c["prompt_id"], c["sample_index"]) for c in comps] == [(p, k) for p in prompt_ids for k in range(K)]
    assert len({c["text"] for c in comps}) == 3 * K  # K different answers, not one answer K times
    for c in comps:  # provenance: the call's seed and n, and which of its choices this sample is
        assert (c["params"]["seed"], c["params"]["n"], c["params"]["choice"]) == (7, K, c["sample_index"])
        assert c["params"]["endpoint"] == "vllm" and c["meta"] == {"cached": False, "attempts": 1}
    # the prompt is read (and billed) once per call, not once per sample; cost and tokens add up exactly
    words = sum(len(p["text"].split()) for p in rows(sql, "SELECT text FROM prompt WHERE dataset_id = :d", d=ds))
    assert run["prompt_tokens"] == words == sum(c["prompt_tokens"] for c in comps)
    assert Decimal(str(run["cost"])) == sum(c["cost"] for c in comps) > 0
    asked = len(fake.requests)

    # a re-run is served from the cache, choice by choice: no call, nothing paid, nothing stored twice
    again = _generate(api, ds, plan=ONE_ENTRY, seed=7, all=True)
    assert again["status"] == "succeeded" and len(fake.requests) == asked and Decimal(str(again["cost"])) == 0
    items = rows(sql, "SELECT result FROM run_item WHERE run_id = :r", r=again["id"])
    assert all(len(i["result"]["duplicates"]) == K for i in items)


def test_samples_that_differ_by_more_than_seed_are_separate_calls(api, sql, fake):
    ds, _ = make_dataset(api, sql, n_prompts=2, llm={"generator": {"endpoint": "vllm"}})
    # the default plan: four temperatures, so four calls without `n`; two entries: two calls of n=2
    run = _generate(api, ds)
    assert run["status"] == "succeeded" and len(fake.requests) == 2 * K and not any("n" in r for r in fake.requests)
    fake.requests.clear()
    run = _generate(api, ds, plan=[{"temperature": 0.2}, {"temperature": 1.1}], seed=100)
    assert run["status"] == "succeeded" and run["done"] == 2
    assert sorted((r["n"], r["seed"], r["temperature"]) for r in fake.requests) == [(2, 100, 0.2)] * 2 + [(2, 101, 1.1)] * 2
    comps = rows(sql, "SELECT sample_index, params FROM completion WHERE run_id = :r", r=run["id"])
    assert len(comps) == 2 * K
    for c in comps:  # samples 0, 2 (entry 0) are choices 0, 1 of the call seeded 100; 1, 3 of the one seeded 101
        k = c["sample_index"]
        assert (c["params"]["seed"], c["params"]["choice"], c["params"]["temperature"]) == (100 + k % 2, k // 2, [0.2, 1.1][k % 2])


def test_an_endpoint_without_the_setting_never_gets_n(api, sql, fake):
    # "default": supports_n is off unless configured; an `n` among a run's parameters is not sent
    ds, _ = make_dataset(api, sql, n_prompts=2)
    run = _generate(api, ds, plan=ONE_ENTRY, llm={"generator": {"params": {"n": 3}}})
    assert run["status"] == "succeeded" and len(fake.requests) == 2 * K
    assert not any("n" in r for r in fake.requests) and sorted(r["seed"] for r in fake.requests) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not any("n" in c["params"] or "choice" in c["params"] for c in rows(sql, "SELECT params FROM completion"))


@pytest.mark.parametrize(
    ("fault", "missing", "reason"),
    [("short_n", K - 1, f"the reply has {K - 1} choices of the {K} asked"), ("empty", 0, "the reply is empty")],
)
def test_a_choice_that_is_missing_or_empty_fails_its_sample_and_a_rerun_makes_exactly_k(api, sql, fake, fault, missing, reason):
    ds, prompt_ids = make_dataset(api, sql, n_prompts=3, llm={"generator": {"endpoint": "vllm"}})
    fake.add_fault(fault, match="part 1?")
    run = _generate(api, ds, plan=ONE_ENTRY)
    assert run["status"] == "succeeded" and (run["done"], run["failed"]) == (2, 1), run
    failed = api.get(f"/runs/{run['id']}/items", params={"status": "failed"}).json()["data"]
    assert [i["prompt_id"] for i in failed] == [prompt_ids[1]] and f"sample {missing}: {reason}" in failed[0]["error"]
    made = rows(sql, "SELECT sample_index FROM completion WHERE prompt_id = :p ORDER BY 1", p=prompt_ids[1])
    assert [m["sample_index"] for m in made] == [k for k in range(K) if k != missing]
    # the call's usage is billed once, whole: the item's cost is the call's, shares of the stored samples and of the failed one
    item = rows(sql, "SELECT prompt_tokens, cost FROM run_item WHERE run_id = :r AND prompt_id = :p", r=run["id"], p=prompt_ids[1])[0]
    stored = rows(sql, "SELECT sum(cost) AS c, sum(prompt_tokens) AS t FROM completion WHERE prompt_id = :p", p=prompt_ids[1])[0]
    assert item["prompt_tokens"] == len("Question 1: how do ds things work, part 1?".split()) >= stored["t"]
    assert Decimal(str(run["cost"])) == sum(r["c"] for r in rows(sql, "SELECT sum(cost) AS c FROM run_item WHERE run_id = :r", r=run["id"]))
    assert item["cost"] > stored["c"] if fault == "empty" else item["cost"] >= stored["c"]

    # the next run (what is missing) asks the one sample left, alone: its own seed, no `n`
    fake.clear()
    rerun = _generate(api, ds, plan=ONE_ENTRY)
    assert rerun["status"] == "succeeded" and rerun["done"] == 1
    assert [(r.get("n"), r["seed"]) for r in fake.requests] == [(None, missing)]
    counts = rows(sql, "SELECT prompt_id, count(DISTINCT sample_index) AS n FROM completion GROUP BY 1 ORDER BY 1")
    assert [(c["prompt_id"], c["n"]) for c in counts] == [(p, K) for p in prompt_ids]  # exactly K each


def test_a_calls_usage_splits_into_shares_that_add_up_exactly():
    assert _shares(10, 4) == [4, 2, 2, 2] and _shares(3, 4) == [3, 0, 0, 0] and _shares(7, 1) == [7]
    for cost in (Decimal("0.000007"), Decimal("0.123457"), Decimal(0)):
        parts = _cost_shares(cost, 4)
        assert sum(parts) == cost and all(p >= 0 and p == p.quantize(Decimal("0.000001")) for p in parts)
    assert _cost_shares(None, 3) == [None, None, None]
