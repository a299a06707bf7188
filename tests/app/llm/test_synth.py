"""Prompt synthesis: self-instruct from seeds, topics and documents through the exact and
near-duplicate filters; evol-instruct rewriting."""

from __future__ import annotations

from app.synth.dedup import NearDupIndex
from tests.fake_llm import data_block


def json_topic(request: dict) -> str:
    return data_block(request["messages"])["topic"]

from .conftest import make_dataset, rows, start, wait_run


def test_self_instruct_adds_new_prompts_and_drops_duplicates(api, sql, fake):
    dataset_id, seeds = make_dataset(api, sql, n_prompts=3)
    body = {"kind": "synth", "num_prompts": 12, "per_call": 4, "topics": ["baking", "sailing"], "documents": ["A" * 5000]}
    run = wait_run(api, start(api, dataset_id, body)["id"])
    assert run["status"] == "succeeded" and run["total"] == 3 and run["done"] == 3
    items = api.get(f"/runs/{run['id']}/items").json()["data"]
    # each call's reply holds a copy of a seed and a near-copy: both filtered, the rest kept
    assert [(i["result"]["added"], i["result"]["exact_duplicates"], i["result"]["near_duplicates"]) for i in items] == [(2, 1, 1)] * 3
    new = rows(sql, "SELECT * FROM prompt WHERE source = 'synthetic' ORDER BY id")
    assert len(new) == 6 and all(p["run_id"] == run["id"] for p in new)
    assert len({p["content_hash"] for p in rows(sql, "SELECT content_hash FROM prompt")}) == 9
    prov = new[0]["provenance"]
    assert prov["template_version"] == "self-instruct-v1" and prov["model"] == "default"
    assert {p["provenance"]["topic"] for p in new} == {"baking", "sailing"}
    assert {p["provenance"]["document"]["chunk"] for p in new} == {0, 1}  # 5000 characters: two excerpts
    assert len(prov["examples"]) == 3 and prov["prompt_tokens"] > 0 and prov["params"]["seed"] in (0, 1, 2)
    asked = [r for r in fake.requests if r["response_format"]["json_schema"]["name"] == "synthesized_prompts"]
    assert len(asked) == 3
    assert sorted(json_topic(r) for r in asked) == ["baking", "baking", "sailing"]
    # again, now drawing on the synthetic prompts too: still no duplicate gets in
    again = wait_run(api, start(api, dataset_id, body)["id"])
    assert again["status"] == "succeeded"
    counts = rows(sql, "SELECT count(*) AS n, count(DISTINCT content_hash) AS d FROM prompt")[0]
    assert counts["n"] == counts["d"] > 9


def test_evol_instruct_rewrites_existing_prompts(api, sql, fake):
    dataset_id, seeds = make_dataset(api, sql, n_prompts=3)
    run = wait_run(api, start(api, dataset_id, {"kind": "synth", "mode": "evol", "evol_operations": ["deepen", "concretize"]})["id"])
    assert run["status"] == "succeeded" and run["done"] == 3
    new = rows(sql, "SELECT text, provenance FROM prompt WHERE source = 'synthetic' ORDER BY provenance->'parent_prompt_id'")
    assert [p["provenance"]["parent_prompt_id"] for p in new] == seeds
    assert [p["provenance"]["operation"] for p in new] == ["deepen", "concretize", "deepen"]
    assert all(p["provenance"]["template_version"] == "evol-instruct-v1" for p in new)


def test_near_duplicate_index():
    index = NearDupIndex(0.7)
    index.add(1, "How do I bake sourdough bread at home with a starter?")
    kept, exact, near = index.filter_new([
        "How do I bake sourdough bread at home with a starter?",  # exact
        "how do I bake  sourdough bread at home with a starter ?",  # same words: near
        "How do I bake sourdough bread at home with a starter? Please",  # near
        "What is the capital of Australia and why was it chosen?",  # new
        "What is the capital of Australia and why was it chosen",  # near the new one
    ])
    assert (kept, exact, near) == (["What is the capital of Australia and why was it chosen?"], 1, 3)
