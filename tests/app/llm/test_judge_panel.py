"""A judge's biases, measured and caught: length (the fake's `prefer_long` judge), several judges
that disagree (`model_taste`), and known-answer canaries that stop a judge that gets them wrong."""

from __future__ import annotations

import pytest

from app.judging import canaries
from app.judging.length import length_rank_spearman, matched, winner_much_longer
from app.judging.multi import agreement, combine
from app.judging.ranking import competition_ranks
from tests.fake_llm import data_block, quality

from .conftest import add_prompts, rows, start, wait_run


def _dataset(api, sql, answers: list[list[str]], **settings) -> tuple[int, list[int]]:
    r = api.post("/datasets", json={"name": "panel", "settings": settings})
    assert r.status_code == 201, r.text
    dataset_id = r.json()["id"]
    prompt_ids = add_prompts(sql, dataset_id, [f"Question {i}: explain part {i}." for i in range(len(answers))])
    for pid, texts in zip(prompt_ids, answers, strict=True):
        for t in texts:
            assert api.post(f"/prompts/{pid}/completions", json={"text": t}).status_code == 201
    return dataset_id, prompt_ids


def _varied_lengths(n: int) -> list[list[str]]:
    """Three answers a prompt: short, medium, long (the long one at least twice any other), shuffled by prompt."""
    out = []
    for i in range(n):
        short, medium = f"Short answer {i}.", f"A medium answer {i} with a few more words in it."
        long = f"A long answer {i}: " + " ".join(f"detail{j}" for j in range(30 + i)) + "."
        three = [short, medium, long]
        out.append(three[i % 3 :] + three[: i % 3])
    return out


def _judge(api, dataset_id, **body) -> dict:
    run = wait_run(api, start(api, dataset_id, {"kind": "judge", **body})["id"], timeout=60)
    assert run["status"] == "succeeded", run
    return run


# --- length bias ----------------------------------------------------------------------------------


def test_a_judge_that_prefers_long_answers_shows_in_the_figures_and_flags(api, sql, fake):
    dataset_id, _ = _dataset(api, sql, _varied_lengths(6), judge_length="flag", judge_length_ratio=2.0)
    fake.add_fault("prefer_long")
    run = _judge(api, dataset_id, injection_check="off")
    shown = api.get(f"/runs/{run['id']}").json()["result"]
    assert shown["rankings"] == 6 and shown["length_bias"]["spearman"] == pytest.approx(1.0)
    assert shown["flags"]["length_bias"] == 6
    for r in rows(sql, "SELECT * FROM ranking WHERE run_id = :r", r=run["id"]):
        assert "length_bias" in r["flag_reasons"] and r["review_status"] == "needs_review"
        assert "≥ 2×" in r["details"]["flag_details"]["length_bias"] and len(r["details"]["lengths"]) == 3
    # the agreement figures carry it per judge model and template
    by_judge = api.get(f"/datasets/{dataset_id}/review/agreement").json()["by_judge"]
    assert [(j["judge_model"], j["template_version"], j["rankings"]) for j in by_judge] == [("default", "listwise-v1", 6)]
    assert by_judge[0]["length_rank_spearman"] == pytest.approx(1.0)

    # an unbiased judge on the same answers (another model: the cache holds the biased replies)
    fake.clear()
    run = _judge(api, dataset_id, injection_check="off", llm={"judge": {"model": "unbiased"}}, all=True)
    shown = api.get(f"/runs/{run['id']}").json()["result"]
    assert shown["length_bias"]["spearman"] < 0.9
    assert shown["flags"].get("length_bias", 0) < 6


def test_matched_length_shows_the_judge_candidates_cut_to_one_length(api, sql, fake):
    dataset_id, _ = _dataset(api, sql, _varied_lengths(3), judge_length="match")
    fake.add_fault("prefer_long")
    run = _judge(api, dataset_id, injection_check="off")
    for req in fake.judge_requests():
        data = data_block(req["messages"])
        texts = [c["text"] for c in data["candidates"]]
        shortest = min(len(t) for t in texts)
        assert {len(t.removesuffix(" [truncated]")) for t in texts} == {shortest}
        assert sum(t.endswith(" [truncated]") for t in texts) == 2 and "cut to" in data["note"]
    ranks = rows(sql, "SELECT details FROM ranking WHERE run_id = :r", r=run["id"])
    assert all(r["details"]["matched_length"] > 0 for r in ranks)
    # cut to one length, the longest answer no longer always wins
    assert api.get(f"/runs/{run['id']}").json()["result"]["length_bias"]["spearman"] < 1.0


def test_length_functions_by_hand():
    # longest ranked first in both rankings: +1; reversed: -1
    assert length_rank_spearman([([1, 2, 3], [30, 20, 10]), ([2, 1], [5, 50])])["spearman"] == pytest.approx(1.0)
    assert length_rank_spearman([([1, 2, 3], [10, 20, 30])])["spearman"] == pytest.approx(-1.0)
    assert length_rank_spearman([([1, 2], [7, 7])])["spearman"] is None
    assert matched(["abcdef", "abc"]) == (["abc [truncated]", "abc"], 3, True)
    assert winner_much_longer([1, 2, 3], [100, 40, 10], 2.0) is not None
    assert winner_much_longer([1, 2, 3], [100, 60, 10], 2.0) is None
    assert winner_much_longer([1, 1, 3], [100, 10, 10], 2.0) is None  # no single winner


# --- several judges -------------------------------------------------------------------------------

JUDGES = [{"model": "judge-a"}, {"model": "judge-b"}, {"model": "judge-c"}]


def test_several_judges_vote_and_their_disagreement_is_flagged(api, sql, fake):
    dataset_id, _ = _dataset(api, sql, [[f"Answer {n} to {i}: " + "x" * (n + i) for n in range(4)] for i in range(8)])
    fake.add_fault("model_taste")  # each judge's taste depends on its model name
    run = _judge(api, dataset_id, judges=JUDGES, aggregate="borda", injection_check="off")
    assert {r["model"] for r in fake.judge_requests()} == {"judge-a", "judge-b", "judge-c"}
    texts = {r["id"]: r["text"] for r in rows(sql, "SELECT id, text FROM completion")}
    rankings = rows(sql, "SELECT * FROM ranking WHERE run_id = :r", r=run["id"])
    disagreeing = 0
    for r in rankings:
        assert r["judge_model"] == "judge-a+judge-b+judge-c" and r["details"]["aggregate"] == "borda"
        per_judge = [j["ranks"] for j in r["details"]["judges"]]
        # provenance keeps each judge's own ranking, and it is that judge's taste
        for j, spec in zip(r["details"]["judges"], JUDGES, strict=True):
            assert j["model"] == spec["model"] and j["details"]["orders"]
            taste = [quality(f"{spec['model']}:{texts[c]}") for c in r["completion_ids"]]
            assert j["ranks"] == competition_ranks(taste, higher_is_better=True)
        assert r["ranks"] == combine(per_judge, "borda")[0]
        assert r["consistency"] == pytest.approx(agreement(per_judge))
        if r["consistency"] < 0.5:
            disagreeing += 1
            assert "judges_disagree" in r["flag_reasons"] and r["review_status"] == "needs_review"
            assert "3 judges disagree" in r["details"]["flag_details"]["judges_disagree"]
        else:
            assert "judges_disagree" not in r["flag_reasons"]
    assert disagreeing >= 2  # three random tastes over 8 prompts: most disagree

    # judges that share one taste agree: consistency 1, no flag
    fake.clear()
    run = _judge(api, dataset_id, judges=[{"model": "same-a"}, {"model": "same-b"}], injection_check="off")
    for r in rows(sql, "SELECT * FROM ranking WHERE run_id = :r", r=run["id"]):
        assert r["consistency"] == 1.0 and "judges_disagree" not in r["flag_reasons"]
        assert r["details"]["aggregate"] == "mean" and len(r["details"]["judges"]) == 2


def test_aggregation_by_hand():
    # mean: [1.5, 1.5, 3] -> a tie for first; Borda: points 2+1, 1+2, 0+0
    assert combine([[1, 2, 3], [2, 1, 3]], "mean") == ([1, 1, 3], [1.5, 1.5, 3.0])
    assert combine([[1, 2, 3], [2, 1, 3]], "borda") == ([1, 1, 3], [3.0, 3.0, 0.0])
    # they part ways over ties: [1, 1, 3] gives points 1, 1, 0 (one candidate strictly below),
    # [3, 1, 2] gives 0, 2, 1: Borda 1, 3, 1 -> [2, 1, 2]; mean ranks 2, 1, 2.5 -> [2, 1, 3]
    assert combine([[1, 1, 3], [3, 1, 2]], "borda") == ([2, 1, 2], [1.0, 3.0, 1.0])
    assert combine([[1, 1, 3], [3, 1, 2]], "mean") == ([2, 1, 3], [2.0, 1.0, 2.5])
    assert agreement([[1, 2, 3], [3, 2, 1]]) == -1.0 and agreement([[1, 2, 3]]) is None


# --- canaries -------------------------------------------------------------------------------------


def _know(fake, right: bool) -> None:
    for pair in canaries.BUILTIN:
        fake.known[pair.better], fake.known[pair.worse] = (2.0**40, 0.0) if right else (0.0, 2.0**40)


def test_canaries_report_the_judges_accuracy_and_are_not_stored(api, sql, fake):
    dataset_id, prompt_ids = _dataset(api, sql, _varied_lengths(5))
    _know(fake, right=True)
    mine = {"prompt": "Is water wet?", "better": "Yes, in the everyday sense.", "worse": "No, water is dry."}
    fake.known[mine["better"]], fake.known[mine["worse"]] = 1e12, 0.0
    run = _judge(api, dataset_id, canaries={"items": [mine]}, injection_check="off")
    report = api.get(f"/runs/{run['id']}").json()["result"]["canaries"]
    assert (report["total"], report["correct"], report["accuracy"], report["passed"]) == (7, 7, 1.0, True)
    assert report["items"][-1]["prompt"] == "Is water wet?" and run["done"] == 5
    # what the canaries cost is part of the run's cost (carried by one item), not lost to the budget
    ranking_cost = rows(sql, "SELECT sum(cost) AS c FROM ranking WHERE run_id = :r", r=run["id"])[0]["c"]
    assert float(run["cost"]) == pytest.approx(float(ranking_cost) + float(report["cost"]))
    # asked once for the whole run, though its items came in two chunks (run_chunk_size 4)
    asked = [r for r in fake.judge_requests() if "17 + 25" in str(r["messages"])]
    assert len(asked) == 2  # two orders
    ranked = rows(sql, "SELECT prompt_id, completion_ids FROM ranking WHERE run_id = :r", r=run["id"])
    assert sorted(r["prompt_id"] for r in ranked) == prompt_ids
    assert rows(sql, "SELECT count(*) AS n FROM completion WHERE text = :t", t=mine["better"])[0]["n"] == 0


def test_a_judge_below_the_canary_accuracy_stops_the_run(api, sql, fake):
    dataset_id, _ = _dataset(api, sql, _varied_lengths(5))
    _know(fake, right=False)
    run = wait_run(api, start(api, dataset_id, {"kind": "judge", "canaries": {"min_accuracy": 0.8}})["id"], timeout=60)
    assert run["status"] == "failed" and "canaries" in run["error"] and "accuracy 0.00, at least 0.80 needed" in run["error"]
    report = run["result"]["canaries"]
    assert (report["correct"], report["passed"]) == (0, False)
    assert rows(sql, "SELECT count(*) AS n FROM ranking")[0]["n"] == 0
    assert not [r for r in fake.judge_requests() if "Question" in str(r["messages"])]  # no item was judged
    # a position-biased judge is caught too: each canary is shown in both orders and ties
    fake.clear()
    fake.add_fault("position_bias")
    body = {"kind": "judge", "canaries": {}, "llm": {"judge": {"model": "biased"}}}
    run = wait_run(api, start(api, dataset_id, body)["id"], timeout=60)
    assert run["status"] == "failed" and run["result"]["canaries"]["accuracy"] == 0.0


def test_canary_requests_are_checked(api, sql):
    dataset_id, _ = _dataset(api, sql, [["a", "b"]])
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "judge", "canaries": {"min_accuracy": 2}})
    assert r.status_code == 422
    r = api.post(f"/datasets/{dataset_id}/runs", json={"kind": "judge", "canaries": {"items": [{"prompt": "p", "better": ""}]}})
    assert r.status_code == 422
    r = api.post("/datasets", json={"name": "bad", "settings": {"judge_injection": "ignore"}})
    bad = r.json()["id"]
    r = api.post(f"/datasets/{bad}/runs", json={"kind": "judge"})
    assert r.status_code == 422 and "judge settings" in r.text


def test_with_several_judges_each_must_pass_the_canaries(api, sql, fake):
    """The panel is right on every canary, yet one judge on it gets each wrong: the run stops."""
    dataset_id, _ = _dataset(api, sql, _varied_lengths(2))
    _know(fake, right=True)
    fake.known_for["bad"] = {text: -value for text, value in fake.known.items()}  # `bad` knows it the wrong way round
    judges = [{"model": "good-1"}, {"model": "good-2"}, {"model": "good-3"}, {"model": "bad"}]
    run = wait_run(api, start(api, dataset_id, {"kind": "judge", "judges": judges, "canaries": {}})["id"], timeout=60)
    report = run["result"]["canaries"]
    assert report["accuracy"] == 1.0 and report["by_judge"] == {"good-1": 1.0, "good-2": 1.0, "good-3": 1.0, "bad": 0.0}
    assert run["status"] == "failed" and "below it: bad 0.00" in run["error"]
    assert rows(sql, "SELECT count(*) AS n FROM ranking")[0]["n"] == 0
