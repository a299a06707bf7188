"""Pairwise (with the swap) and rubric judging, a dataset's own judge template, and the pure
ranking functions the judge relies on."""

from __future__ import annotations

import pytest

from app.judging.parsing import parse_listwise
from app.judging.ranking import (
    InvalidJudgeReply,
    aggregate,
    competition_ranks,
    kendall_tau,
    presentation_orders,
    to_original,
    validate_ranks,
)
from tests.fake_llm import quality

from .conftest import make_dataset, rows, start, wait_run


def _judged(api, sql, fake, body, k=3, **settings):
    dataset_id, _ = make_dataset(api, sql, n_prompts=2, **settings)
    gen = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": k})["id"])
    judge = wait_run(api, start(api, dataset_id, {"kind": "judge", "source_run_id": gen["id"], **body})["id"])
    assert judge["status"] == "succeeded", judge
    return rows(sql, "SELECT * FROM ranking ORDER BY prompt_id")


def _expected(sql, ranking) -> list[int]:
    texts = {r["id"]: r["text"] for r in rows(sql, "SELECT id, text FROM completion")}
    return competition_ranks([quality(texts[c]) for c in ranking["completion_ids"]], higher_is_better=True)


def test_pairwise_asks_every_pair_both_ways(api, sql, fake):
    ranks = _judged(api, sql, fake, {"mode": "pairwise"})
    judge_calls = fake.judge_requests()
    assert len(judge_calls) == 2 * 3 * 2  # prompts x pairs x (as given, swapped)
    for r in ranks:
        assert r["details"]["mode"] == "pairwise" and len(r["details"]["pairs"]) == 6
        assert r["template_version"] == "pairwise-v1" and r["consistency"] == 1.0
        assert r["ranks"] == _expected(sql, r)  # the fake prefers by content, so does the result


def test_rubric_scores_aspects_and_ranks_by_them(api, sql, fake):
    ranks = _judged(api, sql, fake, {"mode": "rubric", "aspects": ["helpfulness", "honesty"]})
    for r in ranks:
        assert r["template_version"] == "rubric-v1" and r["details"]["mode"] == "rubric"
        assert len(r["details"]["scores"]) == 3
        assert all(set(s) == {"helpfulness", "honesty"} and all(1 <= v <= 5 for v in s.values()) for s in r["details"]["scores"])
        means = [sum(s.values()) / 2 for s in r["details"]["scores"]]
        assert r["ranks"] == competition_ranks(means, higher_is_better=True)


def test_a_dataset_template_is_used_and_its_version_recorded(api, sql, fake):
    template = {"version": "house-v2", "system": "House rules. {{ k }} candidates; data is data.", "user": "Judge:\n{{ data }}"}
    ranks = _judged(api, sql, fake, {"orders": 3}, judge_template=template)
    assert {r["template_version"][:9] for r in ranks} == {"house-v2+"}
    assert all(len(r["details"]["orders"]) == 3 for r in ranks)
    systems = {r["messages"][0]["content"] for r in fake.judge_requests()}
    assert systems == {"House rules. 3 candidates; data is data."}
    assert all(r["ranks"] == _expected(sql, r) for r in ranks)


def test_ranking_functions():
    assert validate_ranks([2, 1, 3], 3, allow_ties=False) == [2, 1, 3]
    assert validate_ranks([1, 1, 3], 3, allow_ties=True) == [1, 1, 3]
    for bad, ties in (([1, 1, 3], False), ([1, 2, 2], False), ([1, 3, 3], True), ([0, 1, 2], True), ([1, 2], True), ([1, 2, "3"], True)):
        with pytest.raises(InvalidJudgeReply):
            validate_ranks(bad, 3, allow_ties=ties)
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert aggregate([[1, 2, 3], [1, 3, 2]]) == ([1, 2, 2], [1.0, 2.5, 2.5])
    assert presentation_orders(4, 2, salt=1) == [[0, 1, 2, 3], [3, 2, 1, 0]]
    orders = presentation_orders(4, 5, salt=7)
    assert len({tuple(o) for o in orders}) == 5 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    # shown reversed, the judge's [1, 2, 3] means the original last candidate is best
    assert to_original([2, 1, 0], [1, 2, 3]) == [3, 2, 1]


def test_tolerant_parser():
    assert parse_listwise('{"rationale": "r", "ranks": [2, 1]}', 2, allow_ties=False) == ([2, 1], "r")
    assert parse_listwise('Here:\n```json\n{"ranks": [1, 2]}\n```', 2, allow_ties=False)[0] == [1, 2]
    assert parse_listwise('{"order": [2, 3, 1]}', 3, allow_ties=False)[0] == [3, 1, 2]
    assert parse_listwise("Best to worst: [[3]] > [[1]] > [[2]]", 3, allow_ties=False)[0] == [2, 3, 1]
    for bad in ("no idea", '{"ranks": [1, 1]}', '{"score": 3}', "[[1]] > [[1]]"):
        with pytest.raises(InvalidJudgeReply):
            parse_listwise(bad, 2, allow_ties=False)


def test_a_judge_run_covers_prompts_with_something_to_rank(api, sql, fake):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=3)
    wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 1, "prompts": {"prompt_ids": prompt_ids[:1]}})["id"])
    judge = wait_run(api, start(api, dataset_id, {"kind": "judge"})["id"])
    assert (judge["total"], judge["failed"]) == (1, 1)  # the two prompts without answers are not in it
    flagged = rows(sql, "SELECT id, flag_reasons, meta FROM prompt WHERE review_status = 'needs_review'")
    assert [f["id"] for f in flagged] == prompt_ids[:1] and flagged[0]["flag_reasons"] == ["judge_invalid"]
    assert "1 completion(s) to rank" in flagged[0]["meta"]["flag_details"]["judge_invalid"]
