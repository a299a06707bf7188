"""Completions over real HTTP: add, list, page, get, edit keeping the original, review status,
the audit trail, and bad input for every route."""

import pytest

API = "/api/v1"


@pytest.fixture
def item(factory):
    ds = factory.dataset()
    pid = factory.prompt(ds, "What is 2+2?")
    cid = factory.completion(pid, "4", model="gen-a")
    return ds, pid, cid


def events(factory, **where):
    cond = " AND ".join(f"{k} = :{k}" for k in where) or "true"
    return factory.rows(f"SELECT actor, action, target_type, target_id, before, after, prompt_id FROM review_event WHERE {cond} ORDER BY id", **where)


def test_add_human_completion_records_author_and_event(http, factory, item):
    ds, pid, _ = item
    r = http.post(f"{API}/prompts/{pid}/completions", json={"text": "Four."}, headers={"X-Actor": "ann"})
    assert r.status_code == 201, r.text
    c = r.json()
    assert (c["source"], c["author"], c["prompt_id"], c["dataset_id"], c["review_status"]) == ("human", "ann", pid, ds, "pending")
    [ev] = events(factory, target_id=c["id"], target_type="completion")
    assert (ev.actor, ev.action, ev.before, ev.prompt_id) == ("ann", "add_completion", None, pid)
    assert ev.after["text"] == "Four."

    listed = http.get(f"{API}/prompts/{pid}/completions").json()
    assert len(listed["data"]) == 2 and listed["next_cursor"] is None and [x["text"] for x in listed["data"]] == ["4", "Four."]
    assert http.get(f"{API}/completions/{c['id']}").json()["text"] == "Four."


def test_edit_keeps_the_original_and_can_be_dropped(http, factory, item):
    _, pid, cid = item
    r = http.patch(f"{API}/completions/{cid}", json={"edited_text": "2 + 2 = 4"}, headers={"X-Actor": "bob"})
    assert r.status_code == 200, r.text
    assert (r.json()["text"], r.json()["edited_text"], r.json()["flag_reasons"]) == ("4", "2 + 2 = 4", ["edited"])
    assert factory.scalar("SELECT text FROM completion WHERE id = :i", i=cid) == "4"
    [ev] = events(factory, action="edit")
    assert ev.before["edited_text"] is None and ev.after["edited_text"] == "2 + 2 = 4" and ev.actor == "bob"

    r = http.patch(f"{API}/completions/{cid}", json={"edited_text": None})
    assert r.json()["edited_text"] is None and r.json()["flag_reasons"] == []


def test_set_review_status_with_flags(http, factory, item):
    _, _, cid = item
    r = http.put(f"{API}/completions/{cid}/review", json={"review_status": "needs_review", "flag_reasons": ["reported"], "comment": "odd"})
    assert r.status_code == 200, r.text
    assert (r.json()["review_status"], r.json()["flag_reasons"]) == ("needs_review", ["reported"])
    r = http.put(f"{API}/completions/{cid}/review", json={"review_status": "approved"})
    assert (r.json()["review_status"], r.json()["flag_reasons"]) == ("approved", ["reported"])
    evs = events(factory, action="set_status")
    assert [(e.before["review_status"], e.after["review_status"]) for e in evs] == [("pending", "needs_review"), ("needs_review", "approved")]


def test_dataset_list_filters_and_keyset_pages(http, factory):
    ds = factory.dataset()
    other = factory.dataset("other")
    factory.completion(factory.prompt(other, "elsewhere"), "not mine")
    ids = []
    for i in range(5):
        pid = factory.prompt(ds, f"p{i}")
        ids.append(factory.completion(pid, f"a{i}", model="gen-a" if i % 2 else "gen-b"))
    http.put(f"{API}/completions/{ids[3]}/review", json={"review_status": "rejected"})

    seen, cursor = [], None
    while True:
        page = http.get(f"{API}/datasets/{ds}/completions", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [c["id"] for c in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    by_model = http.get(f"{API}/datasets/{ds}/completions", params={"model": "gen-a"}).json()["data"]
    assert [c["id"] for c in by_model] == [ids[1], ids[3]]
    rejected = http.get(f"{API}/datasets/{ds}/completions", params={"review_status": "rejected"}).json()["data"]
    assert [c["id"] for c in rejected] == [ids[3]]
    assert http.get(f"{API}/datasets/{ds}/completions", params={"source": "human"}).json()["data"] == []


def test_oversize_text_is_refused_and_nothing_written(http, factory, item, settings):
    _, pid, cid = item
    big = "x" * (settings.max_text_chars + 1)
    r = http.post(f"{API}/prompts/{pid}/completions", json={"text": big})
    assert r.status_code == 422 and "limit" in r.json()["error"]["message"] and r.json()["error"]["details"]["field"] == "text"
    r = http.patch(f"{API}/completions/{cid}", json={"edited_text": big})
    assert r.status_code == 422 and "edited_text" in r.json()["error"]["message"]
    assert factory.scalar("SELECT count(*) FROM completion") == 1
    assert factory.scalar("SELECT count(*) FROM review_event") == 0


@pytest.mark.parametrize(
    "method, path, body, status, where",
    [
        ("post", "/prompts/999999/completions", {"text": "x"}, 404, "prompt 999999"),
        ("get", "/prompts/999999/completions", None, 404, "prompt 999999"),
        ("get", "/completions/999999", None, 404, "completion 999999"),
        ("patch", "/completions/999999", {"edited_text": "x"}, 404, "completion 999999"),
        ("put", "/completions/999999/review", {"review_status": "approved"}, 404, "completion 999999"),
        ("get", "/datasets/999999/completions", None, 404, "dataset 999999"),
        ("get", "/completions/abc", None, 422, "completion_id"),
        ("get", "/completions/0", None, 422, "completion_id"),
        ("post", "/prompts/{pid}/completions", {}, 422, "text"),
        ("post", "/prompts/{pid}/completions", {"text": 5}, 422, "text"),
        ("post", "/prompts/{pid}/completions", {"text": "   "}, 422, "text"),
        ("post", "/prompts/{pid}/completions", {"text": "x", "source": "model"}, 422, "source"),
        ("patch", "/completions/{cid}", {}, 422, "edited_text"),
        ("patch", "/completions/{cid}", {"edited_text": ["x"]}, 422, "edited_text"),
        ("put", "/completions/{cid}/review", {"review_status": "great"}, 422, "review_status"),
        ("put", "/completions/{cid}/review", {"review_status": "approved", "flag_reasons": ["because"]}, 422, "flag_reasons"),
        ("get", "/datasets/{ds}/completions?limit=0", None, 422, "limit"),
        ("get", "/datasets/{ds}/completions?limit=100000", None, 422, "limit"),
        ("get", "/datasets/{ds}/completions?cursor=zz", None, 422, "cursor"),
        ("get", "/datasets/{ds}/completions?review_status=meh", None, 422, "review_status"),
    ],
)
def test_bad_input_is_a_4xx_naming_what_is_wrong(http, factory, item, method, path, body, status, where):
    ds, pid, cid = item
    url = API + path.format(ds=ds, pid=pid, cid=cid)
    r = getattr(http, method)(url, **({"json": body} if body is not None else {}))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] in ("not_found", "invalid_input") and where in err["message"]
    assert factory.scalar("SELECT count(*) FROM review_event") == 0


def test_malformed_json_body(http, item):
    _, pid, _ = item
    r = http.post(f"{API}/prompts/{pid}/completions", content=b'{"text": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
