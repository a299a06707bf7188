"""POST /datasets/{id}/import: formats (ours and TRL's), per-line errors, duplicates, provenance,
pairs merged into rankings, and how imported rows count in exports."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import text

from app.prompts.hashing import content_hash, content_hash_sql


def jsonl(*records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def post(http, ds: int, body: bytes, fmt: str | None = None, *, name: str | None = None, **params):
    if fmt:
        params["format"] = fmt
    if name:
        return http.post(f"/api/v1/datasets/{ds}/import", params=params, files={"file": (name, body)})
    return http.post(f"/api/v1/datasets/{ds}/import", params=params, content=body, headers={"content-type": "application/x-ndjson"})


@pytest.fixture
def ds(http) -> int:
    return http.post("/api/v1/datasets", json={"name": "imports"}).json()["id"]


def rows(factory, sql: str, **params):
    return [tuple(r) for r in factory.rows(sql, **params)]


def rankings(factory) -> list[tuple[str, list[str], list[int]]]:
    """(prompt, completion texts, ranks) of every ranking, in id order."""
    out = []
    for prompt, ids, ranks in factory.rows(
        "SELECT p.text, r.completion_ids, r.ranks FROM ranking r JOIN prompt p ON p.id = r.prompt_id ORDER BY r.id"
    ):
        texts = dict(factory.rows("SELECT id, text FROM completion WHERE id = ANY(:ids)", ids=ids))
        out.append((prompt, [texts[i] for i in ids], list(ranks)))
    return out


def test_rm_lines_become_prompts_completions_and_rankings_with_provenance(http, ds, factory):
    body = jsonl(
        {"prompt": "Why is the sky blue?", "completion": ["Rayleigh scattering.", "Because.", "Magic."], "ranking": [1, 2, 3]},
        {"prompt": "Name a prime", "completion": ["7", "8"], "ranking": [1, 2], "id": "x", "meta": {"a": 1}},
    )
    r = post(http, ds, body, name="mine.jsonl", format="rm", split="test")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["total"] == rep["inserted"] == 2 and rep["invalid"] == rep["duplicates"] == 0
    assert (rep["prompts_created"], rep["completions_created"], rep["rankings_created"]) == (2, 5, 2)
    assert rep["sha256"] == hashlib.sha256(body).hexdigest() and rep["file"] == "mine.jsonl" and rep["split"] == "test"
    assert rankings(factory) == [
        ("Why is the sky blue?", ["Rayleigh scattering.", "Because.", "Magic."], [1, 2, 3]),
        ("Name a prime", ["7", "8"], [1, 2]),
    ]
    prov = {"file": "mine.jsonl", "sha256": rep["sha256"], "format": "rm", "by": "local"}
    assert rows(factory, "SELECT source, split, provenance FROM prompt ORDER BY id") == [
        ("imported", "test", {"import": {**prov, "line": 1}}),
        ("imported", "test", {"import": {**prov, "line": 2}}),
    ]
    assert rows(factory, "SELECT text, source, provenance FROM completion ORDER BY id")[3:] == [
        ("7", "imported", {"import": {**prov, "line": 2}}),
        ("8", "imported", {"import": {**prov, "line": 2}}),
    ]
    assert rows(factory, "SELECT DISTINCT ranker_kind, details FROM ranking WHERE details->'import'->>'line' = '2'") == [
        ("imported", {"import": {**prov, "line": 2}})
    ]
    # and through the API
    listed = http.get(f"/api/v1/datasets/{ds}/completions", params={"source": "imported"}).json()["data"]
    assert len(listed) == 5 and listed[3]["provenance"] == {"import": {**prov, "line": 2}}
    assert {r["ranker_kind"] for r in http.get(f"/api/v1/datasets/{ds}/rankings").json()["data"]} == {"imported"}


def test_bad_lines_are_reported_and_skipped_or_refuse_everything(http, ds, factory):
    body = b"\n".join(
        [
            json.dumps({"prompt": "ok", "completion": ["a", "b"], "ranking": [2, 1]}).encode(),
            b"{not json",
            json.dumps({"prompt": "p", "completion": ["a", "b"]}).encode(),
            json.dumps({"prompt": "p", "completion": ["a", "b"], "ranking": [2, 3]}).encode(),
            json.dumps({"prompt": "p", "completion": ["same  text", "same text"], "ranking": [1, 2]}).encode(),
            json.dumps({"prompt": "   ", "completion": ["a", "b"], "ranking": [1, 2]}).encode(),
            json.dumps({"prompt": "p", "completion": ["a", "x" * 10_001], "ranking": [1, 2]}).encode(),
            json.dumps(["a list"]).encode(),
            b"",
        ]
    )
    r = post(http, ds, body, "rm", mode="all_or_nothing")
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert "7 invalid line(s), first at line 2" in err["message"] and err["details"]["committed"] is False
    assert factory.scalar("SELECT count(*) FROM prompt") == 0

    r = post(http, ds, body, "rm")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert (rep["total"], rep["inserted"], rep["invalid"]) == (8, 1, 7)
    messages = {e["line"]: e["message"] for e in rep["errors"]}
    assert messages[2].startswith("invalid JSON")
    assert "ranking" in messages[3]
    assert "between 1 and 2" in messages[4] or "rank" in messages[4]
    assert messages[5] == "'completion[0]' and 'completion[1]' are the same text"
    assert messages[6] == "'prompt' is empty"
    assert "10001 characters" in messages[7] and "completion[1]" in messages[7]
    assert "object" in messages[8]
    assert rankings(factory) == [("ok", ["a", "b"], [2, 1])]


def test_duplicates_reuse_prompts_and_completions_and_skip_known_rankings(http, ds, factory):
    pid = factory.prompt(ds, "Say hi")
    factory.completion(pid, "Hello   there!")  # a model's answer, spaced differently
    edited = factory.completion(pid, "hey", edited_text="Hey you")
    body = jsonl(
        {"prompt": "Say  hi", "completion": ["Hello there!", "Hey you", "Yo"], "ranking": [1, 2, 3]},
        {"prompt": "Say hi", "completion": ["Yo", "Hello there!", "Hey you"], "ranking": [3, 1, 2]},  # the same ranking
    )
    rep = post(http, ds, body, "rm").json()
    assert (rep["prompts_created"], rep["prompts_reused"]) == (0, 1)
    assert (rep["completions_created"], rep["completions_reused"]) == (1, 2)
    assert rep["rankings_created"] == 1 and rep["duplicates"] == 1 and rep["duplicate_lines"] == [2]
    [(_, ids, _)] = factory.rows("SELECT prompt_id, completion_ids, ranks FROM ranking")
    assert ids[1] == edited
    assert factory.scalar("SELECT count(*) FROM completion") == 3

    again = post(http, ds, body, "rm").json()  # the same file twice stores nothing more
    assert again["inserted"] == 0 and again["duplicates"] == 2 and again["rankings_created"] == 0
    assert factory.scalar("SELECT count(*) FROM ranking") == 1

    sft = post(http, ds, jsonl({"prompt": "Say hi", "completion": "Yo"}, {"prompt": "New", "completion": "Yo"}), "sft").json()
    assert (sft["inserted"], sft["duplicates"], sft["completions_created"]) == (1, 1, 1)


def test_pairs_merge_into_one_ranking_only_when_they_are_one(http, ds, factory):
    body = jsonl(
        # all pairs of a > b > c: one ranking
        {"prompt": "A", "chosen": "a", "rejected": "b"},
        {"prompt": "A", "chosen": "b", "rejected": "c"},
        {"prompt": "A", "chosen": "a", "rejected": "c"},
        {"prompt": "A", "chosen": "a", "rejected": "c"},  # repeated: a duplicate line
        # best against the rest: x > y, x > z (y, z tied)
        {"prompt": "B", "chosen": "x", "rejected": "y"},
        {"prompt": "B", "chosen": "x", "rejected": "z"},
        # unrelated pairs would invent y > z ... : one ranking per pair
        {"prompt": "C", "chosen": "p", "rejected": "q"},
        {"prompt": "C", "chosen": "r", "rejected": "s"},
        # a cycle: one ranking per pair
        {"prompt": "D", "chosen": "1", "rejected": "2"},
        {"prompt": "D", "chosen": "2", "rejected": "1"},
        # a > b, a > c but b vs c missing while c > d: not one ranking
        {"prompt": "E", "chosen": "a", "rejected": "b"},
        {"prompt": "E", "chosen": "b", "rejected": "c"},
    )
    rep = post(http, ds, body, "pairs").json()
    assert rep["invalid"] == 0 and rep["duplicate_lines"] == [4]
    assert rep["unmerged_pair_prompts"] == 3 and rep["rankings_created"] == 2 + 2 + 2 + 2
    assert rankings(factory) == [
        ("A", ["a", "b", "c"], [1, 2, 3]),
        ("B", ["x", "y", "z"], [1, 2, 2]),
        ("C", ["p", "q"], [1, 2]),
        ("C", ["r", "s"], [1, 2]),
        ("D", ["1", "2"], [1, 2]),
        ("D", ["2", "1"], [1, 2]),
        ("E", ["a", "b"], [1, 2]),
        ("E", ["b", "c"], [1, 2]),
    ]
    merged = factory.scalar("SELECT details FROM ranking ORDER BY id LIMIT 1")
    assert merged["import"]["lines"] == [1, 2, 3]


def test_trl_shapes_implicit_prompts_and_conversations(http, ds, factory):
    pairs = jsonl(
        {"chosen": "Q: what is 2+2? A: 4", "rejected": "Q: what is 2+2? A: 5"},
        {"chosen": "no shared start", "rejected": "different"},
    )
    rep = post(http, ds, pairs, "pairs").json()
    assert rep["inserted"] == 1 and "start with the same prompt" in rep["errors"][0]["message"]
    # TRL's rule: the shared prefix, a space before the split point going to the answers
    assert rankings(factory) == [("Q: what is 2+2? A:", [" 4", " 5"], [1, 2])]

    user = {"role": "user", "content": "Capital of France?"}
    chat = jsonl(
        {"chosen": [user, {"role": "assistant", "content": "Paris"}], "rejected": [user, {"role": "assistant", "content": "Lyon"}]},
        {"prompt": [user], "chosen": [{"role": "assistant", "content": "Paris."}], "rejected": [{"role": "assistant", "content": "Nice"}]},
        {"prompt": [{"role": "system", "content": "be brief"}, user], "chosen": [{"role": "assistant", "content": "P"}],
         "rejected": [{"role": "assistant", "content": "L"}]},
    )
    rep = post(http, ds, chat, "pairs_chat").json()
    assert rep["inserted"] == 2 and rep["invalid"] == 1 and "single-turn" in rep["errors"][0]["message"]
    # two unrelated pairs of one prompt: not one ranking (it would invent Paris > Nice)
    assert rankings(factory)[1:] == [("Capital of France?", ["Paris", "Lyon"], [1, 2]), ("Capital of France?", ["Paris.", "Nice"], [1, 2])]
    assert rep["unmerged_pair_prompts"] == 1

    sft = jsonl(
        {"messages": [user, {"role": "assistant", "content": "Paris"}]},
        {"messages": [user, {"role": "assistant", "content": "Paris"}, user, {"role": "assistant", "content": "Still Paris"}]},
    )
    rep = post(http, ds, sft, "sft_chat").json()
    assert rep["duplicates"] == 1 and rep["invalid"] == 1 and "single-turn" in rep["errors"][0]["message"]


def test_format_and_split_from_an_export_file_name_and_clear_4xx(http, ds, factory):
    body = jsonl({"prompt": "p", "completion": "c"})
    rep = post(http, ds, body, name="sft.validation.jsonl").json()
    assert rep["format"] == "sft" and rep["split"] == "validation"
    assert factory.scalar("SELECT split FROM prompt") == "validation"

    r = post(http, ds, body, name="data.jsonl")
    assert r.status_code == 422 and "format" in r.json()["error"]["message"]
    r = post(http, ds, body, "nope")
    assert r.status_code == 422
    r = post(http, ds, b"\xff\xfe bad", "sft")
    assert r.status_code == 422 and "UTF-8" in r.json()["error"]["message"]
    r = post(http, ds, b'[{"prompt": "p2", "completion": "c"}, {"prompt": 3}]', "sft")
    assert r.status_code == 200 and r.json()["inserted"] == 1 and r.json()["errors"][0]["line"] == 2
    r = post(http, ds, b'{"prompt": "p3", "completion": "c"', "sft")
    assert r.json()["invalid"] == 1
    r = post(http, ds, b"[1, 2", "sft")
    assert r.status_code == 422 and "invalid JSON" in r.json()["error"]["message"]
    assert http.post("/api/v1/datasets/999999/import?format=sft", content=body).status_code == 404


async def test_imported_rows_count_like_human_ones_in_exports_unless_rejected(http, ds, factory):
    body = jsonl({"prompt": "p", "completion": ["good", "bad"], "ranking": [1, 2]})
    post(http, ds, body, "rm")
    pid = factory.scalar("SELECT id FROM prompt")
    good, bad = (factory.scalar("SELECT id FROM completion WHERE text = :t", t=t) for t in ("good", "bad"))
    factory.judge_ranking(pid, [good, bad], [2, 1], review_status="approved")  # newer, approved, but a judge's

    def export(fmt):
        r = http.get(f"/api/v1/datasets/{ds}/exports/{fmt}.jsonl")
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.text.split("\n")[:-1]]

    assert [(r["completion"], r["ranking"]) for r in export("rm")] == [(["good", "bad"], [1, 2])]
    assert [r["completion"] for r in export("sft")] == ["good"]  # pending, but imported: like a person's answer
    factory.execute("UPDATE ranking SET review_status = 'rejected' WHERE ranker_kind = 'imported'")
    assert [r["ranking"] for r in export("rm")] == [[2, 1]]
    factory.execute("UPDATE completion SET review_status = 'rejected' WHERE text = 'bad'")
    assert export("rm") == [] and [r["completion"] for r in export("sft")] == ["good"]


async def test_content_hash_sql_equals_the_python_rule(session):
    samples = ["plain", "  lead and trail  ", "tabs\tand\nnewlines\r\n", "nbsp\u00a0and\u2003em\u3000ideo", "\u0085x\u2028y\u2029",
               "\x1c\x1dsep\x1e\x1f", "zero\u200bwidth is not space", "ü", "a  \u00a0 b"]
    conn = await session.connection()
    for s in samples:
        got = (await conn.execute(text(f"SELECT {content_hash_sql(':t')}"), {"t": s})).scalar()
        assert bytes(got) == content_hash(s), repr(s)
