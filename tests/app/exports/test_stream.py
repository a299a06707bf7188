"""GET /datasets/{id}/exports/{format}.jsonl over real HTTP: formats, rules, filters, splits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from math import comb

import pytest

from app.exports.repository import split_of
from app.exports.schemas import SplitSpec
from trainer import formats as F


def lines(http, ds_id: int, fmt: str, **params) -> list[str]:
    r = http.get(f"/api/v1/datasets/{ds_id}/exports/{fmt}.jsonl", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/jsonl")
    assert r.text == "" or r.text.endswith("\n")
    # split on "\n" only, as JSONL readers do (str.splitlines would also split at U+2028)
    return r.text.split("\n")[:-1]


def records(http, ds_id: int, fmt: str, **params) -> list:
    return [F.parse_record(fmt, json.loads(line)) for line in lines(http, ds_id, fmt, **params)]


async def _mixed(seed):
    ds = await seed.dataset()
    await seed.ranked(ds, "three", ["a", "b", "c"], [2, 1, 3])
    await seed.ranked(ds, "four with a tie", ["w", "x", "y", "z"], [2, 1, 2, 3])
    await seed.ranked(ds, "two tied", ["t1", "t2"], [1, 1])
    p = await seed.prompt(ds, "single")
    await seed.completion(p, "only answer")
    await seed.prompt(ds, "no answers yet")
    await seed.commit()
    return ds


async def test_every_format_round_trips_through_trainer_formats_byte_for_byte(http, seed):
    ds = await _mixed(seed)
    for fmt in ("sft", "rm", "rl", "pairs", "sft_chat", "pairs_chat"):
        for margin in (False, True):
            got = lines(http, ds.id, fmt, margin=margin)
            assert got, fmt
            for line in got:
                assert F.dumps(F.parse_record(fmt, json.loads(line))) == line


def test_line_sql_is_built_from_the_record_definitions():
    from app.exports.repository import record_sql
    from app.exports.schemas import ExportFormat

    # keys in trainer.formats' order whatever order they are given in; a required one missing or an
    # unknown one is refused before any SQL runs
    assert record_sql(ExportFormat.rl, id="b", prompt="a") == """'{"prompt":' || a || ',"id":' || b || '}'"""
    with pytest.raises(ValueError, match=r"missing \['ranking'\]"):
        record_sql(ExportFormat.rm, prompt="p", completion="c")
    with pytest.raises(ValueError, match=r"unknown \['completion'\]"):
        record_sql(ExportFormat.rl, prompt="p", completion="c")


async def test_adapters_in_sql_equal_the_python_adapters(http, seed):
    ds = await _mixed(seed)
    rm = records(http, ds.id, "rm")
    assert [r.prompt for r in rm] == ["three", "four with a tie", "two tied"]
    for mode in ("all", "best_vs_rest"):
        for margin in (False, True):
            expected = [p for r in rm for p in F.rm_to_pairs(r, mode=mode, margin=margin)]
            pairs = records(http, ds.id, "pairs", pairs_mode=mode, margin=margin)
            assert pairs == expected
            assert records(http, ds.id, "pairs_chat", pairs_mode=mode, margin=margin) == [F.pair_to_chat(p) for p in expected]
    sft = records(http, ds.id, "sft")
    assert records(http, ds.id, "sft_chat") == [F.sft_to_chat(r) for r in sft]
    assert [r.prompt for r in records(http, ds.id, "rl")] == ["three", "four with a tie", "two tied", "single", "no answers yet"]


async def test_ranking_direction_ties_and_pair_counts(http, seed):
    ds = await seed.dataset()
    _, cs, _ = await seed.ranked(ds, "q", ["w", "x", "y", "z"], [2, 1, 2, 3])
    await seed.commit()
    (rm,) = records(http, ds.id, "rm")
    assert rm.completion == ["w", "x", "y", "z"] and rm.ranking == [2, 1, 2, 3]  # 1 = best, ties kept
    pairs = records(http, ds.id, "pairs", margin=True)
    assert len(pairs) == comb(4, 2) - 1  # the one tied pair (w, y) is skipped
    rank = dict(zip(rm.completion, rm.ranking))
    for p in pairs:
        assert rank[p.chosen] < rank[p.rejected]
        assert p.margin == rank[p.rejected] - rank[p.chosen]
    assert {(p.chosen, p.rejected) for p in pairs} == {("x", "w"), ("x", "y"), ("x", "z"), ("w", "z"), ("y", "z")}
    best = records(http, ds.id, "pairs", pairs_mode="best_vs_rest")
    assert [(p.chosen, p.rejected) for p in best] == [("x", "w"), ("x", "y"), ("x", "z")]
    (sft,) = records(http, ds.id, "sft")
    assert sft.completion == "x"


async def test_sft_target_edit_then_human_ranking_then_judge(http, seed):
    ds = await seed.dataset()
    p1, (a, b), _ = await seed.ranked(ds, "judge only", ["a", "b"], [2, 1])
    p2, (c, d), _ = await seed.ranked(ds, "human wins", ["c", "d"], [2, 1])
    # what a person did counts as reviewed: the review API stores re-ranks and edits as pending
    await seed.ranking(p2, [c, d], [1, 2], ranker_kind="human", reviewer="ann", review_status="pending")
    p3, (e, f), _ = await seed.ranked(ds, "edited wins", ["e", "f"], [2, 1])
    e.edited_text, e.review_status, e.flag_reasons = "e, improved by a human", "pending", ["edited"]
    p4, (g, h), _ = await seed.ranked(ds, "best is pending", ["g", "h"], [2, 1])
    h.review_status = "pending"
    p5 = await seed.prompt(ds, "written by a person")
    await seed.completion(p5, "human answer", source="human", model=None, review_status="pending")
    p6, (i, j), _ = await seed.ranked(ds, "rejected human ranking", ["i", "j"], [2, 1])
    await seed.ranking(p6, [i, j], [1, 2], ranker_kind="human", review_status="rejected")
    await seed.commit()
    got = {r.prompt: r.completion for r in records(http, ds.id, "sft")}
    assert got == {
        "judge only": "b",
        "human wins": "c",
        "edited wins": "e, improved by a human",
        "best is pending": "g",
        "written by a person": "human answer",
        "rejected human ranking": "j",
    }
    rm = {r.prompt: r.ranking for r in records(http, ds.id, "rm")}
    assert rm["human wins"] == [1, 2]  # the human ranking, not the judge's [2, 1]
    assert rm["rejected human ranking"] == [2, 1]
    # a human edit flagged `edited` leaves when flagged rows are excluded
    assert {r.prompt: r.completion for r in records(http, ds.id, "sft", exclude_flagged=True)}["edited wins"] == "f"
    # judge-only (unreviewed) rows come in on request
    got = {r.prompt: r.completion for r in records(http, ds.id, "sft", status=["approved", "pending"])}
    assert got["best is pending"] == "h"


async def test_review_status_consistency_and_flag_filters(http, seed):
    ds = await seed.dataset()
    await seed.ranked(ds, "approved", ["a1", "a2"], [1, 2], consistency=1.0)
    await seed.ranked(ds, "judge only", ["j1", "j2"], [1, 2], review_status="pending", consistency=0.2)
    await seed.ranked(ds, "inconsistent", ["i1", "i2"], [1, 2], consistency=0.1)
    await seed.ranked(ds, "flagged", ["f1", "f2"], [1, 2], flag_reasons=["tie_at_top"], consistency=1.0)
    p, cs, _ = await seed.ranked(ds, "human low", ["h1", "h2"], [1, 2], consistency=0.0)
    await seed.ranking(p, cs, [2, 1], ranker_kind="human")
    await seed.commit()

    def rm(**params):
        return sorted(r.prompt for r in records(http, ds.id, "rm", **params))

    assert rm() == ["approved", "flagged", "human low", "inconsistent"]
    assert rm(status=["approved", "pending"]) == ["approved", "flagged", "human low", "inconsistent", "judge only"]
    # a human ranking needs no judge consistency
    assert rm(min_consistency=0.5) == ["approved", "flagged", "human low"]
    assert rm(exclude_flags=["tie_at_top"]) == ["approved", "human low", "inconsistent"]
    assert rm(exclude_flags=["other"]) == rm()
    assert rm(exclude_flagged=True) == ["approved", "human low", "inconsistent"]


async def test_prompt_and_model_filters(http, seed, session):
    ds = await seed.dataset()
    old = datetime(2025, 1, 1, tzinfo=UTC)
    p1 = await seed.prompt(ds, "old imported", tags=["math"], created_at=old)
    p2 = await seed.prompt(ds, "new synthetic", source="synthetic", tags=["code", "hard"])
    p3 = await seed.prompt(ds, "rejected prompt", review_status="rejected")
    for p in (p1, p2, p3):
        a = await seed.completion(p, f"{p.text}: A", model="gen-a")
        b = await seed.completion(p, f"{p.text}: B", model="gen-b")
        c = await seed.completion(p, f"{p.text}: C", model="gen-c")
        await seed.ranking(p, [a, b, c], [3, 1, 2])
    await seed.commit()

    def prompts(fmt="sft", **params):
        return [r.prompt for r in records(http, ds.id, fmt, **params)]

    assert prompts() == ["old imported", "new synthetic"]  # a rejected prompt is in nothing
    assert prompts(source=["synthetic"]) == ["new synthetic"]
    assert prompts(source=["imported", "human"]) == ["old imported"]
    assert prompts(tags=["hard", "nope"]) == ["new synthetic"]
    cut = (old + timedelta(days=1)).isoformat()
    assert prompts(created_before=cut) == ["old imported"]
    assert prompts("rl", created_after=cut) == ["new synthetic"]
    # models: other models' completions leave the ranking, which is renumbered
    rm = records(http, ds.id, "rm", models=["gen-a", "gen-c"])
    assert [(r.completion, r.ranking) for r in rm][0] == (["old imported: A", "old imported: C"], [2, 1])
    assert [r.completion for r in records(http, ds.id, "sft", models=["gen-a", "gen-c"])][0] == "old imported: C"
    assert records(http, ds.id, "rm", models=["gen-a"]) == []  # one completion left: no ranking


async def test_splits_are_by_prompt_deterministic_and_stable(http, seed):
    ds = await seed.dataset()
    prompts = []
    for i in range(240):
        p = await seed.prompt(ds, f"prompt {i}")
        await seed.completion(p, f"answer {i}")
        prompts.append(p)
    await seed.commit()
    spec = {"seed": 7, "train": 0.6, "validation": 0.2, "test": 0.2}
    by_split = {s: [r.id for r in records(http, ds.id, "sft", split=s, **spec)] for s in ("train", "validation", "test")}
    seen = [i for ids in by_split.values() for i in ids]
    assert len(seen) == len(set(seen)) == 240  # every prompt in exactly one split
    for name, ids in by_split.items():
        assert 0.1 * 240 < len(ids) < 0.75 * 240
        assert all(split_of(7, int(i), SplitSpec(**spec)) == name for i in ids)
    # RL uses the same split of each prompt
    assert [r.id for r in records(http, ds.id, "rl", split="test", **spec)] == by_split["test"]
    # another seed moves prompts; more data moves none
    assert [r.id for r in records(http, ds.id, "sft", split="test", **{**spec, "seed": 8})] != by_split["test"]
    for i in range(240, 300):
        p = await seed.prompt(ds, f"prompt {i}")
        await seed.completion(p, f"answer {i}")
    await seed.commit()
    again = {s: [r.id for r in records(http, ds.id, "sft", split=s, **spec)] for s in by_split}
    for name in by_split:
        assert set(by_split[name]) <= set(again[name])


async def test_rl_disjoint_keeps_rl_prompts_out_of_sft_and_rm(http, seed):
    ds = await seed.dataset()
    await seed.ranked(ds, "ranked", ["a", "b"], [1, 2])
    p = await seed.prompt(ds, "sft only")
    await seed.completion(p, "answer")
    await seed.prompt(ds, "pool 1")
    await seed.prompt(ds, "pool 2")
    await seed.commit()
    assert len(records(http, ds.id, "rl")) == 4
    rl = [r.prompt for r in records(http, ds.id, "rl", rl_disjoint=True)]
    assert rl == ["pool 1", "pool 2"]
    used = {r.prompt for r in records(http, ds.id, "sft", rl_disjoint=True)} | {
        r.prompt for r in records(http, ds.id, "rm", rl_disjoint=True)
    }
    assert used == {"ranked", "sft only"} and not used & set(rl)


UNICODE = [
    "emoji 🤖🚀 and CJK 漢字 and RTL עברית",
    'quotes "double" \'single\' and back\\slash \\n (not a newline)',
    "line one\nline two\r\nwindows\ttab\x01control\x1f\u2028separator",
    "   leading and trailing whitespace   ",
    "x" * 150_000 + "\n" + "é" * 50_000,
]


async def test_unicode_newlines_and_very_long_texts_survive_exactly(http, seed):
    ds = await seed.dataset()
    for i, t in enumerate(UNICODE):
        p = await seed.prompt(ds, f"{i}: {t}")
        a = await seed.completion(p, t)
        b = await seed.completion(p, t[::-1] + " (worse)")
        await seed.ranking(p, [a, b], [1, 2])
    await seed.commit()
    for fmt in ("sft", "rm", "pairs", "sft_chat", "pairs_chat", "rl"):
        got = lines(http, ds.id, fmt)
        assert len(got) == len(UNICODE), fmt  # one record a line, whatever the text holds
        for line in got:
            assert F.dumps(F.parse_record(fmt, json.loads(line))) == line
    sft = records(http, ds.id, "sft")
    assert [r.completion for r in sft] == UNICODE
    assert [r.prompt for r in sft] == [f"{i}: {t}" for i, t in enumerate(UNICODE)]
    assert [p.rejected for p in records(http, ds.id, "pairs")] == [t[::-1] + " (worse)" for t in UNICODE]


@pytest.mark.parametrize(
    "path, params, status, words",
    [
        ("/exports/parquet.jsonl", {}, 422, ["fmt", "sft"]),
        ("/exports/sft.jsonl", {"train": 0.5, "validation": 0.1, "test": 0.1}, 422, ["sum to 1"]),
        ("/exports/sft.jsonl", {"train": 1.5, "test": 0}, 422, ["train"]),
        ("/exports/sft.jsonl", {"status": "maybe"}, 422, ["status"]),
        ("/exports/sft.jsonl", {"pairs_mode": "some"}, 422, ["pairs_mode"]),
        ("/exports/sft.jsonl", {"min_consistency": 3}, 422, ["min_consistency"]),
        ("/exports/sft.jsonl", {"created_after": "2026-01-02", "created_before": "2026-01-01"}, 422, ["created_after"]),
        ("/exports/sft.jsonl", {"colour": "blue"}, 422, ["colour"]),
        ("/exports/sft.jsonl", {"version": 9}, 404, ["version 9"]),
        ("/exports/sft.jsonl", {"version": 1, "seed": 3}, 422, ["frozen", "seed"]),
        ("/exports/sft.jsonl", {"split": "dev"}, 422, ["split"]),
        ("/exports/9", {}, 404, ["version 9"]),
    ],
)
async def test_bad_requests_are_clear_4xx(http, seed, path, params, status, words):
    ds = await seed.dataset()
    await seed.commit()
    r = http.get(f"/api/v1/datasets/{ds.id}{path}", params=params)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    for word in words:
        assert word in message, message


def test_unknown_dataset_is_404(http):
    for fmt in ("sft", "rm"):
        r = http.get(f"/api/v1/datasets/12345/exports/{fmt}.jsonl")
        assert r.status_code == 404 and "dataset 12345" in r.json()["error"]["message"]
    r = http.post("/api/v1/datasets/12345/exports", json={})
    assert r.status_code == 404


async def test_a_client_that_hangs_up_mid_stream_frees_the_connection(http, seed, session, caplog):
    import time

    from sqlalchemy import text as sql

    ds_id = (await seed.dataset()).id
    await session.execute(sql(
        "INSERT INTO prompt (dataset_id, text, content_hash, review_status) "
        "SELECT :ds, 'p' || g, sha256(convert_to('p' || g, 'UTF8')), 'approved' FROM generate_series(1, 1000) g"
    ), {"ds": ds_id})
    await session.execute(sql(
        "INSERT INTO completion (dataset_id, prompt_id, text, source, review_status) "
        "SELECT :ds, id, repeat('long answer ', 2000), 'model', 'approved' FROM prompt WHERE dataset_id = :ds"
    ), {"ds": ds_id})
    await seed.commit()
    for _ in range(3):  # more hang-ups than one pooled connection could absorb if they leaked
        with http.stream("GET", f"/api/v1/datasets/{ds_id}/exports/sft.jsonl") as r:
            assert r.status_code == 200
            next(r.iter_raw())
    deadline = time.monotonic() + 10
    while True:
        busy = (await session.execute(sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%%' AND state = 'active'"
        ))).scalar()
        await session.rollback()
        if busy == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert busy == 0
    assert len(lines(http, ds_id, "sft")) == 1000
    # the COPY was ended cleanly: no interrupted cancellation, no connection thrown away
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


async def test_date_filters_past_postgres_offsets_are_normalised(http, seed):
    ds = await _mixed(seed)
    url = f"/api/v1/datasets/{ds.id}/exports/sft.jsonl"
    everything = http.get(url).content
    # +19:19 is valid ISO 8601 but past Postgres' +-15:59: normalised to UTC, never a 500
    far = http.get(url, params={"created_after": "2000-01-01T14:00:00+19:19"})
    assert far.status_code == 200, far.text
    assert everything and far.content == everything
    later = http.get(url, params={"created_after": "2999-01-01T00:00:00+19:19"})
    assert later.status_code == 200 and later.content == b""


async def test_a_query_postgres_refuses_is_a_422_not_a_cut_stream():
    import psycopg

    from app.errors import InvalidInput
    from app.exports.service import primed

    closed = []

    async def refused():
        try:
            raise psycopg.DataError("time zone displacement out of range")
            yield b""
        finally:
            closed.append(True)

    with pytest.raises(InvalidInput, match="time zone displacement out of range"):
        await primed(refused())
    assert closed == [True]

    async def rows():
        yield b"a\n"
        yield b"b\n"

    assert [c async for c in await primed(rows())] == [b"a\n", b"b\n"]
