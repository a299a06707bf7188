"""Prompt import, list, get and patch over real HTTP against real Postgres."""

import io
import json

import pytest


@pytest.fixture
def ds(http):
    return http.post("/api/v1/datasets", json={"name": "p"}).json()


def _import(http, ds, content, content_type, **params):
    return http.post(
        f"/api/v1/datasets/{ds['id']}/prompts/import", content=content, headers={"content-type": content_type}, params=params
    )


def _all_texts(http, ds):
    texts, cursor = [], None
    while True:
        page = http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        texts += [p["text"] for p in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            return texts


def test_json_array_import_reports_inserted_duplicates_invalid(http, ds):
    body = [
        "What is 2+2?",
        {"prompt": "Explain photosynthesis.", "tags": ["bio"], "split": "test", "meta": {"src": "x"}},
        "what  is 2+2?  ",  # whitespace-normalised duplicate? no: case differs, so it is new
        "What is 2+2?",  # exact duplicate of row 1
        {"text": ""},
        {"prompt": 5},
        {"nope": "x"},
        {"prompt": "ok", "split": "holdout"},
    ]
    r = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", json=body)
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["total"] == 8 and rep["inserted"] == 3 and rep["duplicates"] == 1 and rep["invalid"] == 4
    assert rep["duplicate_lines"] == [4]
    assert [e["line"] for e in rep["errors"]] == [5, 6, 7, 8]
    assert "empty" in rep["errors"][0]["message"]
    assert "must be a string" in rep["errors"][1]["message"]
    assert "missing 'prompt'" in rep["errors"][2]["message"]
    assert "split" in rep["errors"][3]["message"]
    texts = _all_texts(http, ds)
    assert texts == ["What is 2+2?", "Explain photosynthesis.", "what  is 2+2?  "]
    # re-import: everything is a duplicate now, nothing new
    rep2 = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", json=body).json()
    assert rep2["inserted"] == 0 and rep2["duplicates"] == 4


def test_whitespace_only_differences_are_duplicates(http, ds):
    rep = _import(http, ds, "\n".join(json.dumps(t) for t in ["a  b", " a b ", "a\tb"]), "application/x-ndjson").json()
    assert rep["inserted"] == 1 and rep["duplicates"] == 2


def test_jsonl_upload_with_bad_lines_and_unicode(http, ds):
    lines = [
        json.dumps({"prompt": "Привет, как дела? 🚀", "tags": ["ru"]}, ensure_ascii=False),
        "",
        "{not json",
        json.dumps({"prompt": "line\nbreaks\ninside"}),
        json.dumps(["a list"]),
    ]
    files = {"file": ("prompts.jsonl", "\n".join(lines).encode(), "application/octet-stream")}
    r = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", files=files)
    rep = r.json()
    assert r.status_code == 200, r.text
    assert rep["inserted"] == 2 and rep["invalid"] == 2 and rep["total"] == 4
    assert [e["line"] for e in rep["errors"]] == [3, 5]
    assert "invalid JSON" in rep["errors"][0]["message"]
    page = http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"tag": "ru"}).json()
    assert [p["text"] for p in page["data"]] == ["Привет, как дела? 🚀"]


def test_csv_upload_counts_lines_with_quoted_newlines(http, ds):
    csv_text = 'prompt,tags,split\n"multi\nline prompt",a|b,train\nsecond,,\n,,\nthird,x,nope\n'
    files = {"file": ("p.csv", csv_text.encode(), "text/csv")}
    rep = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", files=files).json()
    assert rep["inserted"] == 2
    assert rep["errors"] == [{"line": 6, "message": "'split' must be one of train, validation, test, got 'nope'"}]
    got = http.get(f"/api/v1/datasets/{ds['id']}/prompts").json()["data"]
    assert got[0]["tags"] == ["a", "b"] and got[0]["split"] == "train"


def test_csv_without_prompt_column_is_422(http, ds):
    r = _import(http, ds, b"question\nhi\n", "text/csv")
    assert r.status_code == 422
    assert "'prompt'" in r.json()["error"]["message"]


def test_all_or_nothing_writes_nothing_when_a_row_is_invalid(http, ds):
    body = "\n".join([json.dumps("fine"), json.dumps({"prompt": ""}), json.dumps("also fine")])
    r = _import(http, ds, body, "application/x-ndjson", mode="all_or_nothing")
    assert r.status_code == 422
    err = r.json()["error"]
    assert "line 2" in err["message"] and "nothing was imported" in err["message"]
    assert err["details"]["invalid"] == 1 and err["details"]["committed"] is False
    assert _all_texts(http, ds) == []
    ok = _import(http, ds, "\n".join([json.dumps("fine"), json.dumps("also fine")]), "application/x-ndjson", mode="all_or_nothing")
    assert ok.json()["inserted"] == 2


def test_oversize_text_is_reported_by_line(http, ds, settings):
    big = "x" * (settings.max_text_chars + 1)
    rep = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", json=["ok", big]).json()
    assert rep["inserted"] == 1
    assert rep["errors"][0]["line"] == 2 and "limit" in rep["errors"][0]["message"]


@pytest.mark.parametrize(
    "content, ctype, params, status, fragment",
    [
        (b"{", "application/json", {}, 422, "invalid JSON"),
        (b'{"a": 1}', "application/json", {}, 422, "expected a JSON array"),
        (b"\xff\xfe\x00bad", "application/x-ndjson", {}, 422, "UTF-8"),
        (b"hello", "application/octet-stream", {}, 422, "format"),
        (b"[]", "application/json", {"mode": "sometimes"}, 422, "mode"),
        (b"[]", "application/json", {"format": "xml"}, 422, "format"),
    ],
)
def test_bad_import_input(http, ds, content, ctype, params, status, fragment):
    r = _import(http, ds, content, ctype, **params)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


def test_import_into_unknown_dataset_is_404(http):
    r = http.post("/api/v1/datasets/999/prompts/import", json=["x"])
    assert r.status_code == 404 and "dataset 999" in r.json()["error"]["message"]


def test_multipart_without_file_field(http, ds):
    r = http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", files={"other": ("a.jsonl", b"x")})
    assert r.status_code == 422 and "file" in r.json()["error"]["message"]


def test_large_import_in_one_request(http, ds):
    n = 20_000
    body = "".join(json.dumps({"prompt": f"prompt number {i}", "tags": [f"t{i % 3}"]}) + "\n" for i in range(n))
    rep = _import(http, ds, body.encode(), "application/x-ndjson").json()
    assert rep["inserted"] == n and rep["duplicates"] == 0
    assert http.get(f"/api/v1/datasets/{ds['id']}").json()["counts"]["prompts"] == n
    page = http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"tag": "t1", "limit": 1000}).json()
    assert len(page["data"]) == 1000 and all("t1" in p["tags"] for p in page["data"])


def test_list_filters_and_keyset_pagination(http, ds):
    http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", json=[f"item {i}" for i in range(15)] + ["Needle 100%"])
    texts = _all_texts(http, ds)
    assert len(texts) == 16 and len(set(texts)) == 16
    assert [p["text"] for p in http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"q": "needle 100%"}).json()["data"]] == ["Needle 100%"]
    assert http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"q": "%"}).json()["data"][0]["text"] == "Needle 100%"
    for params, fragment in [({"limit": 0}, "limit"), ({"limit": 100000}, "limit"), ({"cursor": "abc"}, "cursor"), ({"review_status": "maybe"}, "review_status")]:
        r = http.get(f"/api/v1/datasets/{ds['id']}/prompts", params=params)
        assert r.status_code == 422 and fragment in r.json()["error"]["message"]


def test_create_get_patch_with_audit(http, ds, settings):
    r = http.post(f"/api/v1/datasets/{ds['id']}/prompts", json={"text": "Hello?"}, headers={"x-actor": "alice"})
    assert r.status_code == 201
    p = r.json()
    assert p["source"] == "human" and p["review_status"] == "pending"
    assert http.post(f"/api/v1/datasets/{ds['id']}/prompts", json={"text": " Hello? "}).status_code == 409

    r = http.patch(f"/api/v1/prompts/{p['id']}", json={"tags": ["x"], "review_status": "approved"}, headers={"x-actor": "bob"})
    assert r.status_code == 200 and r.json()["tags"] == ["x"] and r.json()["review_status"] == "approved"
    assert http.get(f"/api/v1/prompts/{p['id']}").json()["review_status"] == "approved"

    other = http.post(f"/api/v1/datasets/{ds['id']}/prompts", json={"text": "Other"}).json()
    assert http.patch(f"/api/v1/prompts/{other['id']}", json={"text": "Hello?"}).status_code == 409
    assert http.patch(f"/api/v1/prompts/{other['id']}", json={"text": "y" * (settings.max_text_chars + 1)}).status_code == 422
    assert http.patch(f"/api/v1/prompts/{other['id']}", json={"review_status": None}).status_code == 422
    assert http.patch(f"/api/v1/prompts/{other['id']}", json={"split": "nope"}).status_code == 422
    assert http.get("/api/v1/prompts/424242").status_code == 404


async def test_patch_records_before_and_after(http, ds, session):
    from sqlalchemy import select

    from app.models import ReviewEvent

    p = http.post(f"/api/v1/datasets/{ds['id']}/prompts", json={"text": "Q"}).json()
    http.patch(f"/api/v1/prompts/{p['id']}", json={"tags": ["new"]}, headers={"x-actor": "carol"})
    events = (await session.execute(select(ReviewEvent).order_by(ReviewEvent.id))).scalars().all()
    assert [(e.action, e.actor) for e in events] == [("create", "local"), ("update", "carol")]
    assert events[1].before["tags"] == [] and events[1].after["tags"] == ["new"]


async def test_service_import_is_one_transaction(session, settings):
    """A failure after staging rolls everything back: nothing is half-written."""
    from sqlalchemy import func, select

    from app.datasets.schemas import DatasetCreate
    from app.datasets.service import create as create_dataset
    from app.models import Prompt
    from app.prompts import service
    from app.prompts.schemas import ImportFormat

    ds = await create_dataset(session, DatasetCreate(name="tx"))
    await session.commit()
    rep = await service.import_file(session, ds, io.BytesIO(b'"a"\n"b"\n'), ImportFormat.jsonl, max_chars=100)
    assert rep.inserted == 2
    await session.rollback()
    assert (await session.execute(select(func.count()).select_from(Prompt))).scalar() == 0


def test_date_filters_accept_any_iso_offset(http, ds):
    http.post(f"/api/v1/datasets/{ds['id']}/prompts/import", json=["a", "b"])
    # +19:19 is valid ISO 8601 but past Postgres' +-15:59: normalised to UTC, not a 500
    r = http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"created_after": "2000-01-01T14:00:00+19:19"})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    r = http.get(f"/api/v1/datasets/{ds['id']}/prompts", params={"created_before": "2000-01-01T00:00:00"})
    assert r.status_code == 200 and r.json()["data"] == []


BASE = "Describe how the water cycle moves water between oceans, air and land through evaporation, condensation and rain, in detail."
ORIGINAL = "Explain how photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green plants, step by step."


def _distinct(n: int) -> list[str]:
    import random

    rng = random.Random(7)
    words = [f"w{i}x{rng.randrange(10**6)}" for i in range(400)]
    return [" ".join(rng.sample(words, 9)) for _ in range(n)]


def _big_input() -> tuple[bytes, list[str]]:
    """14 lines: a near-duplicate of a stored prompt (7), an exact repeat across chunks (8), an
    invalid row (9), a near-duplicate of an earlier line (10), an exact repeat inside a chunk
    (14, of 13); returns the texts stored, in order."""
    d = _distinct(10)
    rows = [BASE, *d[:5], ORIGINAL.replace("step by step.", "step by step, please."), d[0], "", BASE + " Please.", *d[5:8], d[7]]
    body = "".join(json.dumps({"prompt": t}) + "\n" for t in rows).encode()
    stored = [t for i, t in enumerate(rows, start=1) if i not in (8, 9, 14)]
    return body, stored


async def _import_big(session, name: str, **kw):
    from sqlalchemy import select

    from app.datasets.schemas import DatasetCreate
    from app.datasets.service import create as create_dataset
    from app.models import Prompt
    from app.prompts import service
    from app.prompts.parsing import READERS
    from app.prompts.schemas import ImportFormat

    ds = await create_dataset(session, DatasetCreate(name=name))
    await service.import_file(session, ds, io.BytesIO(json.dumps(ORIGINAL).encode()), ImportFormat.jsonl, max_chars=1000)
    await session.commit()
    body, _ = _big_input()
    report = await service.import_rows(session, ds, READERS[ImportFormat.jsonl](io.BytesIO(body), 1000), **kw)
    rows = (await session.execute(select(Prompt.id, Prompt.text, Prompt.flag_reasons).where(Prompt.dataset_id == ds.id).order_by(Prompt.id))).all()
    return ds, report, rows


async def test_a_big_import_goes_through_the_stage_in_chunks_with_the_same_rules(session):
    """Over the within-input bound an import is staged and inserted a chunk at a time (Postgres
    inserts one while the next is parsed): exact repeats across chunks are still duplicates,
    near-duplicates of stored prompts are still flagged, rows stay in input order, and only the
    comparison of the input's rows with each other is left out (the report says so)."""
    _, whole, whole_rows = await _import_big(session, "whole")
    _, chunked, rows = await _import_big(session, "chunked", within_input_max=3, chunk_rows=4)
    _, stored = _big_input()
    assert [t for _, t, _ in rows] == [ORIGINAL, *stored] == [t for _, t, _ in whole_rows]
    assert (chunked.total, chunked.invalid, chunked.duplicates, chunked.inserted) == (14, 1, 2, 11)
    assert (whole.total, whole.invalid, whole.duplicates, whole.inserted) == (14, 1, 2, 11)
    assert chunked.duplicate_lines == whole.duplicate_lines == [8, 14]
    assert [e.line for e in chunked.errors] == [e.line for e in whole.errors] == [9]
    original_id = rows[0][0]
    # the whole-stage import also finds line 10 (a near-copy of line 1); the chunked one does not
    assert [(m.line, m.prompt_id, m.matched_line) for m in whole.near_duplicate_matches] == [
        (7, whole_rows[0][0], None), (10, whole_rows[1][0], 1)]
    assert [(m.line, m.prompt_id, m.matched_line) for m in chunked.near_duplicate_matches] == [(7, original_id, None)]
    assert whole.near_duplicates_within_input and not chunked.near_duplicates_within_input
    assert chunked.near_duplicates == 1
    assert [t for _, t, flags in rows if flags] == [stored[6]]


async def test_a_chunked_import_skips_and_rejects_as_a_whole_one_does(session):
    from sqlalchemy import func, select

    from app.models import Dataset, Prompt
    from app.prompts.schemas import ImportMode, NearDuplicateMode
    from app.prompts.service import ImportRejected

    _, skipped, rows = await _import_big(session, "skip", within_input_max=3, chunk_rows=4, near_duplicates=NearDuplicateMode.skip)
    assert (skipped.inserted, skipped.duplicates, skipped.near_duplicates) == (10, 2, 1)
    assert skipped.duplicate_lines == [8, 14]
    assert len(rows) == 11 and not any(flags for _, _, flags in rows)
    await session.commit()
    with pytest.raises(ImportRejected) as exc:  # the invalid row is in the third chunk, after two were inserted
        await _import_big(session, "all", within_input_max=3, chunk_rows=4, mode=ImportMode.all_or_nothing)
    assert exc.value.details["invalid"] == 1 and exc.value.details["total"] == 14
    await session.rollback()
    stored = select(func.count()).select_from(Prompt).join(Dataset, Dataset.id == Prompt.dataset_id).where(Dataset.name == "all")
    assert (await session.execute(stored)).scalar() == 1  # the prompt stored before it, nothing of the import


async def test_a_chunked_import_that_meets_bad_bytes_fails_whole(session):
    """Invalid UTF-8 after chunks were inserted: the import raises (the API's 422), and the
    rollback leaves nothing of it."""
    from sqlalchemy import func, select

    from app.datasets.schemas import DatasetCreate
    from app.datasets.service import create as create_dataset
    from app.models import Prompt
    from app.prompts import service
    from app.prompts.parsing import READERS, InputError
    from app.prompts.schemas import ImportFormat

    ds = await create_dataset(session, DatasetCreate(name="bytes"))
    await session.commit()
    ds_id = ds.id
    body = "".join(json.dumps({"prompt": t}) + "\n" for t in _distinct(10)).encode() + b'{"prompt": "\xff"}\n'
    with pytest.raises(InputError, match="not valid UTF-8"):
        await service.import_rows(session, ds, READERS[ImportFormat.jsonl](io.BytesIO(body), 1000), within_input_max=3, chunk_rows=4)
    await session.rollback()
    assert (await session.execute(select(func.count()).select_from(Prompt).where(Prompt.dataset_id == ds_id))).scalar() == 0
