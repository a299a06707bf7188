"""The runs API over real HTTP, with the worker in the server process and the fake LLM."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx

from .conftest import make_dataset, rows, start, wait_run

KEY = "sk-test-SECRET-KEY"


def test_generate_writes_k_completions_with_provenance(api, sql, fake):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=5)
    run = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 4})["id"])
    assert run["status"] == "succeeded" and (run["total"], run["done"], run["failed"]) == (5, 5, 0)
    comps = rows(sql, "SELECT * FROM completion WHERE run_id = :r ORDER BY prompt_id, sample_index", r=run["id"])
    assert [(c["prompt_id"], c["sample_index"]) for c in comps] == [(p, k) for p in prompt_ids for k in range(4)]
    for c in comps:
        assert c["source"] == "model" and c["model"] == "default" and c["template_version"] == "generate-v1"
        assert c["params"]["temperature"] == [0.3, 0.7, 1.0, 1.2][c["sample_index"]]
        assert c["params"]["seed"] == c["sample_index"] and c["params"]["endpoint"] == "default"
        assert "base_url" not in c["params"]  # provenance names the endpoint, never its URL
        assert c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 and c["cost"] > 0 and c["latency_ms"] is not None
    assert len({c["text"] for c in comps}) == 20  # the K answers differ
    assert run["prompt_tokens"] == sum(c["prompt_tokens"] for c in comps)
    assert Decimal(str(run["cost"])) == sum(c["cost"] for c in comps)
    assert run["progress"]["pending"] == 0 and run["progress"]["fraction"] == 1.0
    assert fake.count() == 20


def test_a_rerun_pays_nothing_for_what_is_cached(api, sql, fake):
    dataset_id, _ = make_dataset(api, sql, n_prompts=3)
    body = {"kind": "generate", "k": 2, "plan": [{"temperature": 0.5, "system_prompt": "Be brief."}]}
    first = wait_run(api, start(api, dataset_id, body)["id"])
    calls = fake.count()
    second = wait_run(api, start(api, dataset_id, {**body, "all": True})["id"])
    assert first["status"] == second["status"] == "succeeded"
    assert fake.count() == calls == 6  # the second run asked nothing
    assert Decimal(str(second["cost"])) == 0 < Decimal(str(first["cost"]))
    a = rows(sql, "SELECT id, prompt_id, sample_index, meta FROM completion WHERE run_id = :r ORDER BY 2, 3", r=first["id"])
    assert len(a) == 6 and not any(x["meta"]["cached"] for x in a)
    # the same seed answers the same: the second run stores none of its answers again, each is
    # recorded in its item as a duplicate of the first run's, with its cost (0: from the cache)
    assert rows(sql, "SELECT count(*) AS n FROM completion WHERE run_id = :r", r=second["id"])[0]["n"] == 0
    first_ids = {(x["prompt_id"], x["sample_index"]): x["id"] for x in a}
    items = rows(sql, "SELECT prompt_id, result FROM run_item WHERE run_id = :r ORDER BY prompt_id", r=second["id"])
    assert len(items) == 3
    for it in items:
        dups = it["result"]["duplicates"]
        assert [(d["sample_index"], d["duplicate_of"]) for d in dups] == [(k, first_ids[(it["prompt_id"], k)]) for k in (0, 1)]
        assert all(Decimal(d["cost"]) == 0 for d in dups) and it["result"]["completions"] == 0
    assert rows(sql, "SELECT params FROM completion LIMIT 1")[0]["params"]["system_prompt"] == "Be brief."


def test_judge_ranks_every_prompt_in_two_orders(api, sql, fake):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=3)
    gen = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 4})["id"])
    judge = wait_run(api, start(api, dataset_id, {"kind": "judge", "source_run_id": gen["id"]})["id"])
    assert judge["status"] == "succeeded" and judge["done"] == 3
    ranks = rows(sql, "SELECT * FROM ranking WHERE run_id = :r ORDER BY prompt_id", r=judge["id"])
    assert [r["prompt_id"] for r in ranks] == prompt_ids
    for r in ranks:
        assert sorted(r["ranks"]) == [1, 2, 3, 4] and len(r["completion_ids"]) == 4
        assert r["consistency"] == 1.0 and r["review_status"] == "pending" and r["flag_reasons"] == []
        assert r["template_version"] == "listwise-v1" and r["ranker_kind"] == "judge" and r["cost"] > 0
        assert [o["order"] for o in r["details"]["orders"]] == [[0, 1, 2, 3], [3, 2, 1, 0]]
    assert len(fake.judge_requests()) == 3 * 2
    assert fake.count() == 12 + 3 * 2 + 12  # + one check per candidate: does it address the judge?


def test_bad_requests_say_what_is_wrong(api, sql):
    dataset_id, _ = make_dataset(api, sql, n_prompts=1)
    other_id, _ = make_dataset(api, sql, name="other", n_prompts=1)
    cases = [
        ({"kind": "translate"}, "kind"),
        ({"kind": "generate", "k": 0}, "k"),
        ({"kind": "generate", "plan": [{"temperature": 9}]}, "temperature"),
        ({"kind": "generate", "colour": "red"}, "colour"),
        ({"kind": "judge", "llm": {"judge": {"api_key": KEY}}}, "api_key"),
        ({"kind": "synth", "num_prompts": -1}, "num_prompts"),
    ]
    for body, where in cases:
        r = api.post(f"/datasets/{dataset_id}/runs", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["code"] == "invalid_input" and where in r.text
    gen = start(api, other_id, {"kind": "generate", "k": 1})
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "judge", "source_run_id": gen["id"]})
    assert r.status_code == 422 and "source_run_id" in r.json()["error"]["message"]
    api.patch(f"/datasets/{dataset_id}", json={"settings": {"judge_template": {"system": "x", "user": "no data"}}})
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "judge"})
    assert r.status_code == 422 and "{{ data }}" in r.json()["error"]["message"]
    assert api.post("/datasets/999/runs", json={"kind": "generate"}).status_code == 404
    assert api.get("/runs/999").json()["error"]["code"] == "not_found"
    finished = wait_run(api, gen["id"])
    r = api.post(f"/runs/{finished['id']}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert rows(sql, "SELECT count(*) AS n FROM run")[0]["n"] == 1  # nothing half-written


def test_cancel_mid_run_then_resume_fills_only_what_is_missing(api, sql, fake):
    fake.latency_s = 0.2
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=24)
    run = start(api, dataset_id, {"kind": "generate", "k": 2})
    deadline = time.monotonic() + 20
    while api.get(f"/runs/{run['id']}").json()["done"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    cancelled = api.post(f"/runs/{run['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    time.sleep(1.0)  # in-flight calls end, nothing new starts
    made = rows(sql, "SELECT count(*) AS n FROM completion WHERE run_id = :r", r=run["id"])[0]["n"]
    asked = fake.count()
    time.sleep(0.6)
    assert fake.count() == asked and 0 < made < 48
    assert rows(sql, "SELECT count(*) AS n FROM completion WHERE run_id = :r", r=run["id"])[0]["n"] == made
    fake.latency_s = 0
    resumed = api.post(f"/runs/{run['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    done = wait_run(api, run["id"])
    assert done["status"] == "succeeded" and done["done"] == 24
    pairs = rows(sql, "SELECT prompt_id, sample_index FROM completion WHERE run_id = :r ORDER BY 1, 2", r=run["id"])
    assert [(p["prompt_id"], p["sample_index"]) for p in pairs] == [(p, k) for p in prompt_ids for k in range(2)]
    assert fake.count() == asked + 48 - made  # the resume asked only for what was missing


def test_budget_stops_the_run_and_a_higher_budget_resumes_it(api, sql, fake):
    fake.latency_s = 0.05
    dataset_id, _ = make_dataset(api, sql, n_prompts=40)
    run = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 2, "budget": "0.3"})["id"])
    assert run["status"] == "budget_exhausted", run
    assert Decimal(str(run["cost"])) >= Decimal("0.3") and run["done"] < 40
    # calls already in flight still land, and the run's sums catch up with them
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        spent = rows(sql, "SELECT sum(cost) AS c FROM completion WHERE run_id = :r", r=run["id"])[0]["c"]
        run = api.get(f"/runs/{run['id']}").json()
        if spent == Decimal(str(run["cost"])):
            break
        time.sleep(0.1)
    assert spent == Decimal(str(run["cost"])) and run["status"] == "budget_exhausted"
    # stopped soon after the budget: what was in flight (8 calls at a time) and no more
    made = rows(sql, "SELECT count(*) AS n FROM completion WHERE run_id = :r", r=run["id"])[0]["n"]
    assert made <= 32 < 80
    again = api.post(f"/runs/{run['id']}/resume")
    assert again.status_code == 409 and "budget" in again.json()["error"]["message"]
    fake.latency_s = 0
    assert api.post(f"/runs/{run['id']}/resume", json={"budget": 100}).status_code == 200
    done = wait_run(api, run["id"])
    assert done["status"] == "succeeded" and done["done"] == 40
    assert rows(sql, "SELECT count(*) AS n FROM completion WHERE run_id = :r", r=run["id"])[0]["n"] == 80


def test_progress_streams_as_server_sent_events(api, sql, fake, forge_server):
    fake.latency_s = 0.05
    dataset_id, _ = make_dataset(api, sql, n_prompts=8)
    run = start(api, dataset_id, {"kind": "generate", "k": 2})
    events = []
    with httpx.stream("GET", f"{forge_server.url}/api/v1/runs/{run['id']}/events", params={"interval": 0.1}, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    assert events[-1] == ("end", {"status": "succeeded"})
    progress = [e for n, e in events if n == "progress"]
    assert progress[-1]["done"] == 8 and progress[-1]["progress"]["pending"] == 0
    assert all({"cost", "prompt_tokens", "progress"} <= set(p) for p in progress)
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)


def test_runs_list_and_items_and_no_key_in_any_answer(api, sql):
    dataset_id, _ = make_dataset(api, sql, n_prompts=2)
    run = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 1})["id"])
    listed = api.get(f"/datasets/{dataset_id}/runs")
    assert listed.json() == {"data": [listed.json()["data"][0]], "next_cursor": None} and listed.json()["data"][0]["id"] == run["id"]
    assert api.get(f"/datasets/{dataset_id}/runs", params={"kind": "judge"}).json()["data"] == []
    items = api.get(f"/runs/{run['id']}/items")
    assert [i["status"] for i in items.json()["data"]] == ["done", "done"]
    # keyset pages: newest run first, items in order
    second = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 1, "seed": 9})["id"])
    first_page = api.get(f"/datasets/{dataset_id}/runs", params={"limit": 1}).json()
    assert [r["id"] for r in first_page["data"]] == [second["id"]] and first_page["next_cursor"] == str(second["id"])
    rest = api.get(f"/datasets/{dataset_id}/runs", params={"limit": 1, "cursor": first_page["next_cursor"]}).json()
    assert [r["id"] for r in rest["data"]] == [run["id"]]
    page = api.get(f"/runs/{run['id']}/items", params={"limit": 1}).json()
    assert [i["item_index"] for i in page["data"]] == [0] and page["next_cursor"] == "0"
    assert [i["item_index"] for i in api.get(f"/runs/{run['id']}/items", params={"cursor": "0"}).json()["data"]] == [1]
    for text in (listed.text, items.text, api.get(f"/runs/{run['id']}").text):
        assert KEY not in text


async def test_a_group_commit_stores_each_sample_once_and_flags_near_copies_of_its_own_samples(api, sql, database_url, forge_settings):
    """A batch's samples are stored together (one insert per duplicate wave): an exact repeat of
    a sample of the same batch is not stored but marked with what it repeats; a near copy of one
    is stored flagged with the id that sample got in the same transaction (so after it)."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from app import db
    from app.generation.handler import REPEATS, _store_samples

    dataset_id, (prompt_id,) = make_dataset(api, sql, n_prompts=1)
    first = "Apples grow on trees in the orchard every single autumn season"

    def sample(k: int, text: str) -> dict:
        return {"dataset_id": dataset_id, "prompt_id": prompt_id, "text": text, "source": "model", "model": "m",
                "params": {"seed": k}, "template_version": "t", "prompt_tokens": 1, "completion_tokens": 2,
                "cost": Decimal("0.5"), "latency_ms": 3, "finish_reason": "stop", "run_id": None, "sample_index": k,
                "meta": {"cached": False}, "flag_reasons": []}

    batch = [sample(0, first), sample(1, first), sample(2, first.upper()), sample(3, "Something else entirely.")]
    engine = db.make_engine(database_url, forge_settings)
    try:
        async with AsyncSession(engine) as session, session.begin():
            await _store_samples(session, batch)
    finally:
        await engine.dispose()
    stored = rows(sql, "SELECT id, sample_index, flag_reasons, meta FROM completion WHERE prompt_id = :p ORDER BY sample_index", p=prompt_id)
    assert [s["sample_index"] for s in stored] == [0, 2, 3]
    assert batch[1][REPEATS] == stored[0]["id"] and all(REPEATS not in b for b in (batch[0], batch[2], batch[3]))
    assert stored[1]["flag_reasons"] == ["near_duplicate"]
    assert stored[1]["meta"]["flag_details"]["near_duplicate"] == {"completion_id": stored[0]["id"], "similarity": 1.0}
    assert stored[0]["flag_reasons"] == stored[2]["flag_reasons"] == [] and stored[2]["meta"] == {"cached": False}
    assert stored[0]["id"] < stored[2]["id"] < stored[1]["id"]
