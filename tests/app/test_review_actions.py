"""Review actions over real HTTP: approve, reject, re-rank, edit, add, comment, undo, history."""

import pytest

API = "/api/v1"


def as_(name):
    return {"X-Actor": name}


@pytest.fixture
def judged(factory):
    ds = factory.dataset()
    pid, cids, rid = factory.judged_item(ds, "Best fruit?", ["apple", "pear", "plum"], ranks=[1, 2, 3])
    return ds, pid, cids, rid


def statuses(factory, pid):
    return {
        "prompt": factory.scalar("SELECT review_status FROM prompt WHERE id = :p", p=pid),
        "completions": [r[0] for r in factory.rows("SELECT review_status FROM completion WHERE prompt_id = :p ORDER BY id", p=pid)],
        "rankings": [tuple(r) for r in factory.rows("SELECT ranker_kind, review_status FROM ranking WHERE prompt_id = :p ORDER BY id", p=pid)],
    }


def test_approve_as_is_confirms_the_judge(http, factory, judged):
    ds, pid, cids, rid = judged
    http.get(f"{API}/datasets/{ds}/review/next", headers=as_("ann"))
    r = http.post(f"{API}/prompts/{pid}/review/approve", json={"comment": "fine"}, headers=as_("ann"))
    assert r.status_code == 200, r.text
    ev = r.json()
    assert (ev["action"], ev["actor"], ev["target_type"], ev["target_id"], ev["comment"]) == ("approve", "ann", "prompt", pid, "fine")
    assert ev["before"]["review_status"] == "pending" and ev["after"]["review_status"] == "approved"
    assert ev["after"]["related"][f"ranking:{rid}"]["review_status"] == "approved"
    assert statuses(factory, pid) == {"prompt": "approved", "completions": ["approved"] * 3, "rankings": [("judge", "approved")]}
    assert factory.rows("SELECT reviewer, decision, ranking_id, judge_ranking_id FROM review_verdict") == [("ann", "approved", rid, rid)]
    assert factory.rows("SELECT lease_holder, reviewed_by FROM prompt") == [(None, ["ann"])]


def test_rerank_then_approve_stores_the_human_ranking_beside_the_judges(http, factory, judged):
    ds, pid, cids, rid = judged
    item = http.get(f"{API}/datasets/{ds}/review/next", headers=as_("ann")).json()["item"]
    r = http.post(f"{API}/prompts/{pid}/rankings", json={"completion_ids": cids, "ranks": [2, 1, 3]}, headers=as_("ann"))
    assert r.status_code == 201
    hid = r.json()["id"]
    item = http.get(f"{API}/prompts/{pid}/review", headers=as_("ann")).json()
    assert item["my_ranking"]["id"] == hid and item["judge_ranking"]["id"] == rid and item["lease"]["holder"] == "ann"
    assert http.get(f"{API}/prompts/{pid}/review", headers=as_("bob")).json()["my_ranking"] is None
    http.post(f"{API}/prompts/{pid}/review/approve", headers=as_("ann"))
    assert statuses(factory, pid)["rankings"] == [("judge", "pending"), ("human", "approved")]
    assert factory.rows("SELECT ranking_id, judge_ranking_id FROM review_verdict") == [(hid, rid)]


def test_edit_is_kept_beside_the_original(http, factory, judged):
    ds, pid, cids, _ = judged
    http.get(f"{API}/datasets/{ds}/review/next", headers=as_("ann"))
    r = http.patch(f"{API}/completions/{cids[0]}", json={"edited_text": "apple (crisp)"}, headers=as_("ann"))
    assert r.status_code == 200
    assert factory.rows("SELECT text, edited_text FROM completion WHERE id = :c", c=cids[0]) == [("apple", "apple (crisp)")]


def test_an_added_completion_must_be_ranked_before_approval(http, factory, judged):
    ds, pid, cids, _ = judged
    new = http.post(f"{API}/prompts/{pid}/completions", json={"text": "mango"}, headers=as_("ann")).json()["id"]
    r = http.post(f"{API}/prompts/{pid}/review/approve", headers=as_("ann"))
    assert r.status_code == 409 and str(new) in r.json()["error"]["message"] and "re-rank" in r.json()["error"]["message"]
    assert statuses(factory, pid)["prompt"] == "pending"
    r = http.post(f"{API}/prompts/{pid}/rankings", json={"completion_ids": [new, *cids], "ranks": [1, 2, 3, 4]}, headers=as_("ann"))
    assert r.status_code == 201
    assert http.post(f"{API}/prompts/{pid}/review/approve", headers=as_("ann")).status_code == 200
    assert statuses(factory, pid)["completions"] == ["approved"] * 4


def test_reject_needs_a_reason(http, factory, judged):
    _, pid, _, _ = judged
    r = http.post(f"{API}/prompts/{pid}/review/reject", json={}, headers=as_("ann"))
    assert r.status_code == 422 and "reason" in r.json()["error"]["message"]
    r = http.post(f"{API}/prompts/{pid}/review/reject", json={"reason": "prompt is off-topic"}, headers=as_("ann"))
    assert r.status_code == 200 and r.json()["comment"] == "prompt is off-topic"
    assert statuses(factory, pid) == {"prompt": "rejected", "completions": ["pending"] * 3, "rankings": [("judge", "pending")]}
    assert factory.rows("SELECT decision, reason FROM review_verdict") == [("rejected", "prompt is off-topic")]


def test_comments(http, factory, judged):
    ds, pid, cids, _ = judged
    other, other_cids, _ = factory.judged_item(ds, "other", ["x", "y"])
    r = http.post(f"{API}/prompts/{pid}/review/comments", json={"text": "check pear", "completion_id": cids[1]}, headers=as_("ann"))
    assert r.status_code == 201 and (r.json()["target_type"], r.json()["target_id"]) == ("completion", cids[1])
    r = http.post(f"{API}/prompts/{pid}/review/comments", json={"text": "x", "completion_id": other_cids[0]})
    assert r.status_code == 422 and "not a completion of prompt" in r.json()["error"]["message"]
    for body in ({}, {"text": ""}, {"text": "x", "completion_id": "one"}):
        assert http.post(f"{API}/prompts/{pid}/review/comments", json=body).status_code == 422


def test_undo_walks_back_one_action_at_a_time(http, factory, judged):
    ds, pid, cids, rid = judged
    http.get(f"{API}/datasets/{ds}/review/next", headers=as_("ann"))
    added = http.post(f"{API}/prompts/{pid}/completions", json={"text": "fig"}, headers=as_("ann")).json()["id"]
    http.patch(f"{API}/completions/{cids[1]}", json={"edited_text": "pear!"}, headers=as_("ann"))
    http.post(f"{API}/prompts/{pid}/rankings", json={"completion_ids": [*cids, added], "ranks": [4, 1, 2, 3]}, headers=as_("ann"))
    http.post(f"{API}/prompts/{pid}/review/comments", json={"text": "note"}, headers=as_("ann"))
    assert http.post(f"{API}/prompts/{pid}/review/approve", headers=as_("ann")).status_code == 200
    approved = statuses(factory, pid)

    def undo():
        r = http.post(f"{API}/prompts/{pid}/review/undo", headers=as_("ann"))
        assert r.status_code == 200, r.text
        return r.json()

    assert undo()["comment"].startswith("undid approve")
    assert statuses(factory, pid) == {"prompt": "pending", "completions": ["pending"] * 4, "rankings": [("judge", "pending"), ("human", "pending")]}
    assert factory.scalar("SELECT count(*) FROM review_verdict") == 0 and factory.scalar("SELECT reviewed_by FROM prompt") == []
    assert undo()["comment"].startswith("undid rank")  # the comment is skipped: it changed nothing
    assert factory.scalar("SELECT count(*) FROM ranking WHERE ranker_kind = 'human'") == 0
    assert undo()["comment"].startswith("undid edit")
    assert factory.scalar("SELECT edited_text FROM completion WHERE id = :c", c=cids[1]) is None
    assert undo()["comment"].startswith("undid add_completion")
    assert factory.scalar("SELECT count(*) FROM completion") == 3
    r = http.post(f"{API}/prompts/{pid}/review/undo", headers=as_("ann"))
    assert r.status_code == 409 and "nothing" in r.json()["error"]["message"]

    history = http.get(f"{API}/prompts/{pid}/history").json()
    assert [e["action"] for e in history["data"]] == [
        "add_completion", "edit", "rank", "comment", "approve", "undo", "undo", "undo", "undo"
    ]
    undone = {e["undoes_event_id"] for e in history["data"] if e["action"] == "undo"}
    assert undone == {e["id"] for e in history["data"] if e["action"] in ("add_completion", "edit", "rank", "approve")}
    assert approved["prompt"] == "approved"


def test_undo_refuses_when_someone_changed_the_row_since(http, factory, judged):
    _, pid, cids, _ = judged
    http.patch(f"{API}/completions/{cids[0]}", json={"edited_text": "ann's"}, headers=as_("ann"))
    http.patch(f"{API}/completions/{cids[0]}", json={"edited_text": "bob's"}, headers=as_("bob"))
    r = http.post(f"{API}/prompts/{pid}/review/undo", headers=as_("ann"))
    assert r.status_code == 409 and "changed since" in r.json()["error"]["message"]
    assert factory.scalar("SELECT edited_text FROM completion WHERE id = :c", c=cids[0]) == "bob's"
    assert http.post(f"{API}/prompts/{pid}/review/undo", headers=as_("bob")).status_code == 200
    assert factory.scalar("SELECT edited_text FROM completion WHERE id = :c", c=cids[0]) == "ann's"


def test_history_is_per_item_and_keeps_before_and_after(http, factory, judged):
    ds, pid, cids, rid = judged
    other, other_cids, _ = factory.judged_item(ds, "other", ["x", "y"])
    http.put(f"{API}/rankings/{rid}/review", json={"review_status": "needs_review", "flag_reasons": ["reported"]}, headers=as_("ann"))
    http.patch(f"{API}/completions/{other_cids[0]}", json={"edited_text": "z"})
    http.patch(f"{API}/prompts/{pid}", json={"tags": ["fruit"]}, headers=as_("bob"))
    ev, tagged = http.get(f"{API}/prompts/{pid}/history").json()["data"]
    assert (tagged["actor"], tagged["action"], tagged["after"]["tags"]) == ("bob", "update", ["fruit"])
    assert (ev["actor"], ev["action"], ev["target_type"], ev["target_id"]) == ("ann", "set_status", "ranking", rid)
    assert (ev["before"]["flag_reasons"], ev["after"]["flag_reasons"]) == ([], ["reported"])
    assert ev["created_at"]
