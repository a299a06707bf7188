"""What the console reads besides the review item: review progress per dataset and reviewer
(verdicts, rankings and completions, not prompts alone), the datasets' flagged counts, and the
pages' shells and headers."""

from __future__ import annotations

from app.config import Settings

API = "/api/v1"


def as_(name):
    return {"X-Actor": name}


def test_progress_counts_verdicts_rankings_and_completions_per_reviewer(http, factory):
    ds = factory.dataset("progress", review_overlap=2)
    p1, (a1, a2), _ = factory.judged_item(ds, "one", ["a", "b"])
    p2, (_, _, b3), _ = factory.judged_item(ds, "two", ["a", "b", "c"], flag_reasons=["length_bias"])
    factory.prompt(ds, "no answers yet")

    assert http.post(f"{API}/prompts/{p1}/review/claim", headers=as_("ann")).status_code == 200
    r = http.post(f"{API}/prompts/{p1}/rankings", headers=as_("ann"), json={"completion_ids": [a2, a1], "ranks": [1, 1]})
    assert r.status_code == 201, r.text
    assert http.patch(f"{API}/completions/{a1}", headers=as_("ann"), json={"edited_text": "a!"}).status_code == 200
    assert http.post(f"{API}/prompts/{p1}/review/approve", headers=as_("ann"), json={}).status_code == 200
    assert http.post(f"{API}/prompts/{p1}/review/claim", headers=as_("bob")).status_code == 200
    assert http.post(f"{API}/prompts/{p1}/review/reject", headers=as_("bob"), json={"reason": "dup"}).status_code == 200
    assert http.post(f"{API}/prompts/{p2}/review/comments", headers=as_("bob"), json={"text": "hm", "completion_id": b3}).status_code == 201

    p = http.get(f"{API}/datasets/{ds}/review/progress").json()
    assert (p["overlap"], p["items"], p["verdicts_wanted"], p["verdicts_given"]) == (2, 2, 4, 2)
    assert p["prompts_by_status"] == {"rejected": 1, "pending": 2}  # bob's reject came last
    assert p["completions_by_status"] == {"approved": 2, "pending": 3}
    assert p["rankings_by_kind"] == {"judge": 2, "human": 1}
    assert p["rankings_by_status"] == {"approved": 1, "pending": 2}
    assert p["flagged"] == {"prompts": 0, "completions": 0, "rankings": 1}  # the length_bias ranking
    by = {r["reviewer"]: r for r in p["reviewers"]}
    assert by["ann"] == {"reviewer": "ann", "approved": 1, "rejected": 0, "rankings": 1, "edits": 1, "completions_added": 0, "comments": 0}
    assert by["bob"] == {"reviewer": "bob", "approved": 0, "rejected": 1, "rankings": 0, "edits": 0, "completions_added": 0, "comments": 1}

    # the datasets list counts what is flagged, rankings included (it said "needs review 0" before)
    [d] = http.get(f"{API}/datasets").json()["data"]
    assert d["counts"]["flagged"] == {"prompts": 0, "completions": 0, "rankings": 1}
    assert d["counts"]["rankings_by_status"] == {"approved": 1, "pending": 2}
    assert http.get(f"{API}/datasets/{ds}").json()["counts"]["completions_by_status"] == {"approved": 2, "pending": 3}
    assert http.get(f"{API}/datasets/999999/review/progress").status_code == 404
