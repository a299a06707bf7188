"""Runs never hang or lie (issue 10, finding 5): a 200 reply that is no answer (`{}`, an empty
text, a NUL byte, bytes that are not UTF-8) or that Postgres cannot store is an item failure
with its reason, billed once; a job that exhausts its retries fails its items and the run says
why (tests/app/llm/test_job_retries.py); `resume` works on any run that is not finished, a stuck
`running` one included."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from .conftest import make_dataset, rows, start, wait_run

K = 2


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty_object", "the reply has no choices"),
        ("empty", "the reply is empty"),
        ("nul", "the reply holds a NUL byte"),
        ("bad_utf8", "UnicodeDecodeError"),
    ],
)
def test_a_reply_that_is_no_answer_fails_its_item_once(api, sql, fake, kind, reason):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=4)
    fake.add_fault(kind, match="part 1?")
    run = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": K})["id"])
    assert run["status"] == "succeeded" and (run["done"], run["failed"]) == (3, 1), run
    failed = api.get(f"/runs/{run['id']}/items", params={"status": "failed"}).json()["data"]
    assert [i["prompt_id"] for i in failed] == [prompt_ids[1]]
    assert reason in failed[0]["error"], failed[0]["error"]
    # nothing stored for it, not even an empty text; the other prompts have their K
    got = rows(sql, "SELECT prompt_id, count(*) AS n, min(length(text)) AS shortest FROM completion GROUP BY 1 ORDER BY 1")
    assert [(r["prompt_id"], r["n"]) for r in got] == [(p, K) for i, p in enumerate(prompt_ids) if i != 1]
    assert all(r["shortest"] > 0 for r in got)
    # asked once per sample: no retry of the call, no retry of the job that re-asks (and re-bills)
    assert fake.count("part 1?") == K
    item = rows(sql, "SELECT attempts, prompt_tokens, cost FROM run_item WHERE run_id = :r AND prompt_id = :p",
                r=run["id"], p=prompt_ids[1])[0]
    assert item["attempts"] == 1
    if kind in ("empty", "nul"):  # the reply came back with its usage: the tokens are billed, once
        assert item["prompt_tokens"] > 0 and item["cost"] > 0


def test_a_judge_reply_postgres_cannot_store_fails_its_item_not_the_batch(api, sql, fake):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=4)
    assert wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 3})["id"])["status"] == "succeeded"
    # valid JSON whose rationale holds \u0000: it parses, and only the INSERT finds it unstorable
    fake.add_fault("nul_rationale", match="part 2?")
    run = wait_run(api, start(api, dataset_id, {"kind": "judge", "mode": "listwise"})["id"])
    assert run["status"] == "succeeded" and (run["done"], run["failed"]) == (3, 1), run
    failed = api.get(f"/runs/{run['id']}/items", params={"status": "failed"}).json()["data"]
    assert [i["prompt_id"] for i in failed] == [prompt_ids[2]]
    assert "unstorable reply" in failed[0]["error"] and "\x00" not in failed[0]["error"]
    ranked = rows(sql, "SELECT prompt_id FROM ranking WHERE run_id = :r ORDER BY 1", r=run["id"])
    assert [r["prompt_id"] for r in ranked] == [p for i, p in enumerate(prompt_ids) if i != 2]
    assert float(failed[0]["cost"]) > 0  # what the refused replies cost is on the item


def test_a_run_stuck_running_can_be_resumed(api, sql, fake):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=6)
    run = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": K})["id"])
    assert run["status"] == "succeeded"
    # what a lost job leaves: the run `running`, items pending, no job in the queue for them
    with sql.begin() as conn:
        conn.execute(text("UPDATE run SET status = 'running', finished_at = NULL WHERE id = :r"), {"r": run["id"]})
        conn.execute(text("UPDATE run_item SET status = 'pending' WHERE run_id = :r AND item_index >= 3"), {"r": run["id"]})
        conn.execute(text("DELETE FROM completion WHERE run_id = :r AND prompt_id = ANY(:p)"), {"r": run["id"], "p": prompt_ids[3:]})
        conn.execute(text("DELETE FROM procrastinate_jobs"))
    r = api.post(f"/runs/{run['id']}/resume")
    assert r.status_code == 200, r.text
    run = wait_run(api, run["id"])
    assert (run["status"], run["done"], run["failed"]) == ("succeeded", 6, 0), run
    got = rows(sql, "SELECT prompt_id, count(*) AS n FROM completion WHERE run_id = :r GROUP BY 1 ORDER BY 1", r=run["id"])
    assert [(r["prompt_id"], r["n"]) for r in got] == [(p, K) for p in prompt_ids]
