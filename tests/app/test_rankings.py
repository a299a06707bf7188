"""Rankings over real HTTP: a human ranking must cover exactly its prompt's completions with
ranks 1..K (ties allowed); it sits beside the judge's; list / get / review status; bad input."""

import pytest

API = "/api/v1"


@pytest.fixture
def judged(factory):
    ds = factory.dataset()
    pid, cids, rid = factory.judged_item(ds, "Name a colour", ["red", "blue", "green"], ranks=[2, 1, 3])
    return ds, pid, cids, rid


def test_record_a_human_ranking_beside_the_judges(http, factory, judged):
    ds, pid, cids, rid = judged
    body = {"completion_ids": [cids[2], cids[0], cids[1]], "ranks": [1, 2, 2], "rationale": "green wins, tie below"}
    r = http.post(f"{API}/prompts/{pid}/rankings", json=body, headers={"X-Actor": "ann"})
    assert r.status_code == 201, r.text
    h = r.json()
    assert (h["ranker_kind"], h["reviewer"], h["ranks"], h["completion_ids"]) == ("human", "ann", [1, 2, 2], body["completion_ids"])
    [ev] = factory.rows("SELECT action, target_type, target_id, before, after FROM review_event")
    assert (ev.action, ev.target_type, ev.target_id, ev.before) == ("rank", "ranking", h["id"], None)
    assert ev.after["ranks"] == [1, 2, 2]

    listed = http.get(f"{API}/prompts/{pid}/rankings").json()
    assert [(x["id"], x["ranker_kind"]) for x in listed["data"]] == [(rid, "judge"), (h["id"], "human")]
    judge = http.get(f"{API}/rankings/{rid}").json()
    assert (judge["judge_model"], judge["ranks"]) == ("judge-a", [2, 1, 3])


def test_dataset_rankings_filters_and_pages(http, factory):
    ds = factory.dataset()
    rids = []
    for i in range(3):
        pid, cids, rid = factory.judged_item(ds, f"q{i}", ["a", "b"], judge_model="j1" if i else "j2")
        rids.append(rid)
    h = http.post(f"{API}/prompts/{factory.scalar('SELECT min(id) FROM prompt')}/rankings",
                  json={"completion_ids": factory.scalar("SELECT completion_ids FROM ranking WHERE id = :i", i=rids[0]), "ranks": [1, 1]}).json()
    first = http.get(f"{API}/datasets/{ds}/rankings", params={"limit": 2}).json()
    second = http.get(f"{API}/datasets/{ds}/rankings", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [x["id"] for x in first["data"] + second["data"]] == rids + [h["id"]]
    assert http.get(f"{API}/datasets/{ds}/rankings", params={"limit": 2, "cursor": second["next_cursor"]}).json()["data"] == []
    assert [x["id"] for x in http.get(f"{API}/datasets/{ds}/rankings", params={"ranker_kind": "human"}).json()["data"]] == [h["id"]]
    assert [x["id"] for x in http.get(f"{API}/datasets/{ds}/rankings", params={"judge_model": "j1"}).json()["data"]] == rids[1:]


def test_set_ranking_review_status(http, factory, judged):
    _, _, _, rid = judged
    r = http.put(f"{API}/rankings/{rid}/review", json={"review_status": "needs_review", "flag_reasons": ["low_margin", "top_tie"]})
    assert r.status_code == 200, r.text
    assert factory.rows("SELECT review_status, flag_reasons FROM ranking WHERE id = :i", i=rid)[0] == ("needs_review", ["low_margin", "top_tie"])


@pytest.mark.parametrize(
    "make_body, where",
    [
        (lambda c, o: {"completion_ids": [c[0], c[1]], "ranks": [1, 2]}, "missing"),
        (lambda c, o: {"completion_ids": [c[0], c[1], c[2], o], "ranks": [1, 2, 3, 4]}, "not completions of prompt"),
        (lambda c, o: {"completion_ids": [c[0], c[0], c[1], c[2]], "ranks": [1, 2, 3, 4]}, "more than once"),
        (lambda c, o: {"completion_ids": c, "ranks": [1, 2]}, "ranks: has 2 entries"),
        (lambda c, o: {"completion_ids": c, "ranks": [1, 2, 4]}, "between 1 and 3"),
        (lambda c, o: {"completion_ids": c, "ranks": [0, 1, 2]}, "between 1 and 3"),
        (lambda c, o: {"completion_ids": c, "ranks": [2, 2, 3]}, "ranked 1"),
        (lambda c, o: {"completion_ids": c, "ranks": ["a", 2, 3]}, "ranks"),
        (lambda c, o: {"completion_ids": c}, "ranks"),
        (lambda c, o: {"completion_ids": "all", "ranks": [1, 2, 3]}, "completion_ids"),
        (lambda c, o: {"completion_ids": c, "ranks": [1, 2, 3], "reviewer": "me"}, "reviewer"),
    ],
)
def test_bad_rankings_are_422_and_write_nothing(http, factory, judged, make_body, where):
    ds, pid, cids, _ = judged
    other_pid, other_cids, _ = factory.judged_item(ds, "another", ["x", "y"])
    r = http.post(f"{API}/prompts/{pid}/rankings", json=make_body(cids, other_cids[0]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input" and where in r.json()["error"]["message"]
    assert factory.scalar("SELECT count(*) FROM ranking WHERE ranker_kind = 'human'") == 0
    assert factory.scalar("SELECT count(*) FROM review_event") == 0


@pytest.mark.parametrize(
    "method, path, body, status, where",
    [
        ("post", "/prompts/999999/rankings", {"completion_ids": [1, 2], "ranks": [1, 2]}, 404, "prompt 999999"),
        ("get", "/prompts/999999/rankings", None, 404, "prompt 999999"),
        ("get", "/rankings/999999", None, 404, "ranking 999999"),
        ("put", "/rankings/999999/review", {"review_status": "approved"}, 404, "ranking 999999"),
        ("get", "/datasets/999999/rankings", None, 404, "dataset 999999"),
        ("get", "/rankings/x", None, 422, "ranking_id"),
        ("put", "/rankings/{rid}/review", {"review_status": "approved", "flag_reasons": "edited"}, 422, "flag_reasons"),
        ("get", "/datasets/{ds}/rankings?ranker_kind=robot", None, 422, "ranker_kind"),
        ("get", "/datasets/{ds}/rankings?cursor=-1", None, 422, "cursor"),
    ],
)
def test_bad_input_on_other_routes(http, factory, judged, method, path, body, status, where):
    ds, _, _, rid = judged
    r = getattr(http, method)(API + path.format(ds=ds, rid=rid), **({"json": body} if body is not None else {}))
    assert r.status_code == status, r.text
    assert where in r.json()["error"]["message"]
