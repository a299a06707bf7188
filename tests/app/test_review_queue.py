"""The review queue over real HTTP: order, leases, filters, overlap, and concurrent reviewers."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx

API = "/api/v1"


def as_(name):
    return {"X-Actor": name}


def next_id(http, ds, who, **params):
    r = http.get(f"{API}/datasets/{ds}/review/next", headers=as_(who), params=params)
    assert r.status_code == 200, r.text
    item = r.json()["item"]
    return item and item["prompt"]["id"]


def test_flagged_first_then_oldest_and_a_lease_per_reviewer(http, factory):
    ds = factory.dataset()
    old, _, _ = factory.judged_item(ds, "old", ["a", "b"])
    flagged, _, _ = factory.judged_item(ds, "flagged", ["a", "b"], flag_reasons=["judge_inconsistent"], review_status="needs_review")
    new, _, _ = factory.judged_item(ds, "new", ["a", "b"])

    r = http.get(f"{API}/datasets/{ds}/review/next", headers=as_("ann"))
    item = r.json()["item"]
    assert item["prompt"]["id"] == flagged
    assert item["lease"]["holder"] == "ann" and [c["text"] for c in item["completions"]] == ["a", "b"]
    assert item["judge_ranking"]["flag_reasons"] == ["judge_inconsistent"] and item["my_ranking"] is None
    assert next_id(http, ds, "ann") == flagged  # asking again: the item you hold
    assert next_id(http, ds, "bob") == old
    assert next_id(http, ds, "cy") == new
    assert next_id(http, ds, "dee") is None
    assert factory.rows("SELECT id, lease_holder FROM prompt ORDER BY id") == [(old, "bob"), (flagged, "ann"), (new, "cy")]


def test_expired_and_released_leases_free_the_item(http, factory):
    ds = factory.dataset()
    pid, _, _ = factory.judged_item(ds, "q", ["a", "b"])
    assert next_id(http, ds, "ann") == pid
    assert next_id(http, ds, "bob") is None
    factory.execute("UPDATE prompt SET lease_expires_at = now() - interval '1 second'")
    assert next_id(http, ds, "bob") == pid
    r = http.post(f"{API}/prompts/{pid}/review/release", headers=as_("ann"))
    assert r.status_code == 409 and "bob" in r.json()["error"]["message"]
    r = http.post(f"{API}/prompts/{pid}/review/release", headers=as_("bob"))
    assert r.status_code == 200 and r.json()["lease"] is None
    assert next_id(http, ds, "ann") == pid


def test_someone_elses_lease_blocks_actions(http, factory):
    ds = factory.dataset()
    pid, cids, _ = factory.judged_item(ds, "q", ["a", "b"])
    assert next_id(http, ds, "ann") == pid
    for method, path, body in [
        ("post", f"/prompts/{pid}/review/approve", {}),
        ("post", f"/prompts/{pid}/review/reject", {"reason": "no"}),
        ("post", f"/prompts/{pid}/review/claim", None),
        ("patch", f"/completions/{cids[0]}", {"edited_text": "x"}),
        ("post", f"/prompts/{pid}/completions", {"text": "x"}),
        ("post", f"/prompts/{pid}/rankings", {"completion_ids": cids, "ranks": [2, 1]}),
    ]:
        r = getattr(http, method)(API + path, headers=as_("bob"), **({"json": body} if body is not None else {}))
        assert r.status_code == 409, (path, r.text)
        assert "being reviewed by 'ann'" in r.json()["error"]["message"]
    assert factory.scalar("SELECT count(*) FROM review_event") == 0
    assert factory.scalar("SELECT review_status FROM prompt") == "pending"


def test_filters_and_exclude(http, factory):
    ds = factory.dataset()
    a, _, _ = factory.judged_item(ds, "a", ["x", "y"], prompt_kw={"tags": ["math", "easy"], "source": "imported"})
    b, _, _ = factory.judged_item(ds, "b", ["x", "y"], prompt_kw={"tags": ["code"], "source": "synthetic"})
    c, _, _ = factory.judged_item(ds, "c", ["x", "y"], prompt_kw={"tags": ["math"], "review_status": "approved"})
    empty = factory.prompt(ds, "no answers yet")
    assert next_id(http, ds, "u1", tag=["math", "easy"]) == a
    assert next_id(http, ds, "u2", source="synthetic") == b
    assert next_id(http, ds, "u3", status="approved") == c
    assert next_id(http, ds, "u4", tag="math") is None  # a is leased, c is approved
    assert next_id(http, ds, "u5") is None
    assert next_id(http, ds, "u6", include_empty=True) == empty
    http.post(f"{API}/prompts/{a}/review/release", headers=as_("u1"))
    assert next_id(http, ds, "u7", exclude=[a]) is None
    assert next_id(http, ds, "u7") == a


def test_overlap_hands_an_item_to_n_different_reviewers(http, factory):
    ds = factory.dataset("study", review_overlap=2)
    pid, _, _ = factory.judged_item(ds, "q", ["a", "b"])
    assert next_id(http, ds, "ann") == pid
    assert http.post(f"{API}/prompts/{pid}/review/approve", headers=as_("ann")).status_code == 200
    assert next_id(http, ds, "ann") is None  # already reviewed it
    item = http.get(f"{API}/datasets/{ds}/review/next", headers=as_("bob")).json()["item"]
    assert item["prompt"]["id"] == pid and item["overlap"] == 2 and item["prompt"]["reviewed_by"] == ["ann"]
    assert http.post(f"{API}/prompts/{pid}/review/approve", headers=as_("bob")).status_code == 200
    assert next_id(http, ds, "cy") is None
    assert factory.scalar("SELECT reviewed_by FROM prompt") == ["ann", "bob"]


def test_concurrent_reviewers_never_share_an_item(http, factory, live_server):
    ds = factory.dataset()
    for i in range(12):
        factory.judged_item(ds, f"q{i}", ["a", "b"], **({"flag_reasons": ["low_margin"]} if i % 3 == 0 else {}))

    def grab(who):
        with httpx.Client(base_url=live_server.url, timeout=30) as c:
            got = []
            for _ in range(2):
                item = c.get(f"{API}/datasets/{ds}/review/next", headers=as_(who)).json()["item"]
                if item is None:
                    break
                got.append(item["prompt"]["id"])
                assert c.post(f"{API}/prompts/{item['prompt']['id']}/review/approve", headers=as_(who)).status_code == 200
            return got

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(grab, [f"r{i}" for i in range(8)]))
    handed = [pid for got in results for pid in got]
    assert len(handed) == len(set(handed)) == 12
    assert factory.scalar("SELECT count(*) FROM review_verdict") == 12


def test_a_refused_overlap_setting_leaves_the_reviewers_lease_and_the_queue_as_they_were(http, factory):
    """The claim is all `next` writes and runs as its own transaction: with a setting the service
    refuses (after the claim), the claim must have changed nothing, as no rollback undoes it."""
    ds = factory.dataset("later-bad")
    held, _, _ = factory.judged_item(ds, "held", ["a", "b"])
    other, _, _ = factory.judged_item(ds, "other", ["a", "b"])
    assert next_id(http, ds, "ann") == held
    before = factory.rows("SELECT id, lease_holder, lease_expires_at, updated_at FROM prompt ORDER BY id")
    for bad in (0, 51, "two", 2.5):
        factory.execute("UPDATE dataset SET settings = jsonb_build_object('review_overlap', CAST(:v AS jsonb)) WHERE id = :d",
                        v=json.dumps(bad), d=ds)
        for who in ("ann", "bob"):
            r = http.get(f"{API}/datasets/{ds}/review/next", headers=as_(who))
            assert r.status_code == 422 and "review_overlap" in r.json()["error"]["message"], (bad, r.text)
        assert factory.rows("SELECT id, lease_holder, lease_expires_at, updated_at FROM prompt ORDER BY id") == before, bad
    factory.execute("UPDATE dataset SET settings = '{}' WHERE id = :d", d=ds)
    assert next_id(http, ds, "ann") == held and next_id(http, ds, "bob") == other


def test_bad_overlap_setting_and_bad_queue_params(http, factory):
    ds = factory.dataset("bad", review_overlap="two")
    r = http.get(f"{API}/datasets/{ds}/review/next")
    assert r.status_code == 422 and "review_overlap" in r.json()["error"]["message"]
    ok = factory.dataset("ok")
    for params, where in [({"status": "meh"}, "status"), ({"exclude": "x"}, "exclude"), ({"source": "web"}, "source")]:
        r = http.get(f"{API}/datasets/{ok}/review/next", params=params)
        assert r.status_code == 422 and where in r.json()["error"]["message"], r.text
    assert http.get(f"{API}/datasets/999999/review/next").status_code == 404
    # a value Postgres refuses (the claim runs on the driver directly): 422, as elsewhere
    r = http.get(f"{API}/datasets/{ok}/review/next", params={"tag": "a\x00b"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_value", r.text
    assert http.get(f"{API}/datasets/{ok}/review/next").json() == {"item": None}  # the connection is fine after it
    for path in ("/prompts/999999/review", "/prompts/999999/review/claim", "/prompts/999999/review/release", "/prompts/999999/history"):
        r = http.request("GET" if path.endswith(("review", "history")) else "POST", API + path)
        assert r.status_code == 404 and "prompt 999999" in r.json()["error"]["message"], path


async def test_simultaneous_claims_in_the_database_are_disjoint(engine, factory):
    """16 transactions claim at the same moment, over and over: no item is ever held twice."""
    import asyncio

    from app import db
    from app.review import repository as repo

    ds = factory.dataset()
    ids = {factory.judged_item(ds, f"q{i}", ["a", "b"])[0] for i in range(24)}
    sessions = db.session_factory(engine)
    f = repo.QueueFilter(tags=[], source=None, statuses=[], exclude=[], include_empty=False)
    start = asyncio.Event()

    async def claim(who: str):
        async with sessions() as s:
            await start.wait()
            claim, _ = await repo.claim_and_load(s, ds, who, default_overlap=1, lease_seconds=60, f=f)
            await s.commit()
            return claim.prompt_id

    tasks = [asyncio.create_task(claim(f"r{i}")) for i in range(16)]
    await asyncio.sleep(0.05)
    start.set()
    first = list(await asyncio.gather(*tasks))
    assert None not in first and len(set(first)) == 16
    tasks = [asyncio.create_task(claim(f"s{i}")) for i in range(16)]
    await asyncio.sleep(0)
    second = [pid for pid in await asyncio.gather(*tasks) if pid is not None]
    assert len(second) == len(set(second)) == 8 and not set(second) & set(first)
    assert set(first) | set(second) == ids


async def test_simultaneous_claims_with_overlap_hold_each_item_once(engine, factory):
    """With overlap 2, 12 reviewers claim 6 items at once, twice over (the claim is one statement):
    an item is never leased to two reviewers at the same moment, a reviewer never gets an item
    they reviewed, and a second claim moves the reviewer's lease (one item each at a time)."""
    import asyncio

    from app import db
    from app.review import repository as repo

    ds = factory.dataset(review_overlap=2)
    ids = {factory.judged_item(ds, f"q{i}", ["a", "b"], **({"flag_reasons": ["low_margin"]} if i % 2 else {}))[0] for i in range(6)}
    sessions = db.session_factory(engine)
    f = repo.QueueFilter(tags=[], source=None, statuses=[], exclude=[], include_empty=False)
    start = asyncio.Event()

    async def claim(who: str, exclude: list[int]):
        async with sessions() as s:
            await start.wait()
            claim, _ = await repo.claim_and_load(
                s, ds, who, default_overlap=2, lease_seconds=60, f=repo.QueueFilter(**{**f.__dict__, "exclude": exclude})
            )
            await s.commit()
            return claim.prompt_id

    tasks = [asyncio.create_task(claim(f"r{i}", [])) for i in range(12)]
    await asyncio.sleep(0.05)
    start.set()
    first = await asyncio.gather(*tasks)
    got = [pid for pid in first if pid is not None]
    assert len(got) == len(set(got)) == 6 and set(got) == ids  # 6 leased, each to one reviewer
    holders = dict(factory.rows("SELECT id, lease_holder FROM prompt WHERE lease_holder IS NOT NULL"))
    assert sorted(holders) == sorted(ids) and len(set(holders.values())) == 6
    # the holders claim again passing over their item: none is free, so each lease is released
    start = asyncio.Event()
    by_holder = {who: pid for pid, who in holders.items()}
    tasks = [asyncio.create_task(claim(who, [pid])) for who, pid in by_holder.items()]
    await asyncio.sleep(0.05)
    start.set()
    again = await asyncio.gather(*tasks)
    leased = factory.rows("SELECT id, lease_holder FROM prompt WHERE lease_holder IS NOT NULL")
    assert len(leased) == len({pid for pid, _ in leased}) == len([p for p in again if p is not None])
    assert all(by_holder[who] != pid for pid, who in leased)


async def test_simultaneous_approvals_of_one_item_are_serialised(engine, factory):
    """Two reviewers approve the same item at once (overlap 2): the row lock orders the two
    writes, so both verdicts, both names in reviewed_by and one audit event each survive."""
    import asyncio

    from app import db
    from app.review import service

    ds = factory.dataset(review_overlap=2)
    pid, *_ = factory.judged_item(ds, "q", ["a", "b"])
    sessions = db.session_factory(engine)
    start = asyncio.Event()

    async def approve(who: str):
        async with sessions() as s:
            await start.wait()
            event = await service.approve(s, pid, who, None)
            await s.commit()
            return event

    tasks = [asyncio.create_task(approve(w)) for w in ("ann", "bob")]
    await asyncio.sleep(0.05)
    start.set()
    events = await asyncio.gather(*tasks)
    assert sorted(factory.scalar("SELECT reviewed_by FROM prompt")) == ["ann", "bob"]
    assert factory.rows("SELECT reviewer, decision FROM review_verdict ORDER BY reviewer") == [("ann", "approved"), ("bob", "approved")]
    assert factory.scalar("SELECT count(*) FROM review_event WHERE action = 'approve'") == 2
    # the second writer's event starts from the first one's state
    second = max(events, key=lambda e: e["id"])
    assert len(second["before"]["reviewed_by"]) == 1 and len(second["after"]["reviewed_by"]) == 2
