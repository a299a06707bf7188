"""Rows made for a prompt's old text turn stale (kept, visible, out of exports until approved
again, recorded in the audit trail), and a prompt's answers are never duplicated or ranked
against an identical text."""

import json

API = "/api/v1"


def _export(http, ds, fmt):
    r = http.get(f"{API}/datasets/{ds}/exports/{fmt}.jsonl")
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def _approved_item(factory):
    ds = factory.dataset()
    pid, cids, rid = factory.judged_item(ds, "Best fruit for a pie?", ["apple", "pear", "plum"], ranks=[1, 2, 3],
                                         prompt_kw={"review_status": "approved"}, review_status="approved")
    with factory.engine.begin() as c:
        from sqlalchemy import text

        c.execute(text("UPDATE completion SET review_status = 'approved' WHERE prompt_id = :p"), {"p": pid})
    return ds, pid, cids, rid


def test_a_text_change_makes_completions_and_rankings_stale_until_approved_again(http, factory):
    ds, pid, cids, rid = _approved_item(factory)
    assert len(_export(http, ds, "sft")) == 1 and len(_export(http, ds, "rm")) == 1
    # a change that keeps the text (tags) leaves them alone
    assert http.patch(f"{API}/prompts/{pid}", json={"tags": ["fruit"]}).status_code == 200
    assert {r[0] for r in factory.rows("SELECT review_status FROM completion WHERE prompt_id = :p", p=pid)} == {"approved"}

    r = http.patch(f"{API}/prompts/{pid}", json={"text": "Best fruit for a cold soup?"}, headers={"X-Actor": "ed"})
    assert r.status_code == 200, r.text
    prompt = r.json()
    assert prompt["review_status"] == "needs_review" and "text_changed" in prompt["flag_reasons"]
    # kept and visible, marked stale
    shown = http.get(f"{API}/prompts/{pid}/completions").json()["data"]
    assert [c["review_status"] for c in shown] == ["stale"] * 3 and [c["text"] for c in shown] == ["apple", "pear", "plum"]
    assert http.get(f"{API}/rankings/{rid}").json()["review_status"] == "stale"
    assert [c["id"] for c in http.get(f"{API}/datasets/{ds}/completions", params={"review_status": "stale"}).json()["data"]] == cids
    # out of every export, even when stale is asked for
    assert _export(http, ds, "sft") == [] and _export(http, ds, "rm") == [] and _export(http, ds, "pairs") == []
    assert http.get(f"{API}/datasets/{ds}/exports/sft.jsonl", params={"status": ["approved", "stale"]}).text == ""
    # the audit trail: one event with the old and new text and every row it made stale
    (event,) = [e for e in http.get(f"{API}/prompts/{pid}/history").json()["data"] if e["action"] == "update" and e["actor"] == "ed"]
    assert event["before"]["text"] == "Best fruit for a pie?" and event["after"]["text"] == "Best fruit for a cold soup?"
    assert {k: v["review_status"] for k, v in event["after"]["related"].items()} == {
        **{f"completion:{c}": "stale" for c in cids}, f"ranking:{rid}": "stale"}
    assert {v["review_status"] for v in event["before"]["related"].values()} == {"approved"}

    # a reviewer approves the item again: its completions and ranking count again
    r = http.post(f"{API}/prompts/{pid}/review/approve", json={}, headers={"X-Actor": "ann"})
    assert r.status_code == 200, r.text
    assert [x["prompt"] for x in _export(http, ds, "rm")] == ["Best fruit for a cold soup?"]
    assert {r[0] for r in factory.rows("SELECT review_status FROM completion WHERE prompt_id = :p", p=pid)} == {"approved"}


def test_a_person_cannot_add_the_same_completion_twice_and_near_copies_are_flagged(http, factory):
    ds = factory.dataset()
    pid = factory.prompt(ds, "Describe the water cycle.")
    answer = "Water evaporates from the sea, condenses into clouds, falls as rain and flows back to the sea again."
    first = http.post(f"{API}/prompts/{pid}/completions", json={"text": answer})
    assert first.status_code == 201, first.text
    again = http.post(f"{API}/prompts/{pid}/completions", json={"text": answer})
    assert again.status_code == 409
    assert again.json()["error"]["details"]["duplicate_of"] == first.json()["id"]
    near = http.post(f"{API}/prompts/{pid}/completions", json={"text": answer.upper().replace("  ", " ")}).json()
    assert near["flag_reasons"] == ["near_duplicate"]
    assert near["meta"]["flag_details"]["near_duplicate"] == {"completion_id": first.json()["id"], "similarity": 1.0}
    other = http.post(f"{API}/prompts/{pid}/completions", json={"text": "The sun heats water; vapour rises and cools."}).json()
    assert other["flag_reasons"] == []
    assert factory.scalar("SELECT count(*) FROM completion WHERE prompt_id = :p", p=pid) == 3


def test_rm_never_ranks_a_text_against_an_identical_text(http, factory):
    ds = factory.dataset()
    # identical answers written before this rule existed (straight into the table)
    pid, cids, rid = factory.judged_item(ds, "Name a prime.", ["7", "11", "7", "9"], ranks=[2, 1, 3, 4],
                                         prompt_kw={"review_status": "approved"}, review_status="approved")
    with factory.engine.begin() as c:
        from sqlalchemy import text

        c.execute(text("UPDATE completion SET review_status = 'approved'"))
    (row,) = _export(http, ds, "rm")
    assert row["completion"] == ["7", "11", "9"] and row["ranking"] == [2, 1, 3]  # the better-ranked "7" stays
    pairs = _export(http, ds, "pairs")
    assert len(pairs) == 3 and all(p["chosen"] != p["rejected"] for p in pairs)
