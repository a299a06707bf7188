"""Agreement figures: the formulas against hand-computed values, then the endpoint and CLI table
moving as reviewers confirm or change rankings."""

import pytest
from typer.testing import CliRunner

from app.review.agreement import aligned, kendalls_w, tau, top_set

API = "/api/v1"


def as_(name):
    return {"X-Actor": name}


def test_formulas_by_hand():
    assert aligned([7, 5, 9], [1, 2, 3], [9, 5], [1, 2]) == ([2, 3], [2, 1])
    assert top_set([2, 1, 1]) == {1, 2}
    assert tau([1, 2, 3], [1, 2, 3]) == 1.0 and tau([1, 2, 3], [3, 2, 1]) == -1.0
    # one swap among 3: (concordant - discordant) / 3 pairs = (2 - 1) / 3
    assert tau([1, 2, 3], [2, 1, 3]) == pytest.approx(1 / 3)
    assert tau([1], [1]) is None and tau([1, 1], [1, 2]) is None
    # R = [4, 6, 8], S = 8, W = 12 * 8 / (3^2 * (27 - 3)) = 4/9
    assert kendalls_w([[1, 2, 3], [1, 3, 2], [2, 1, 3]]) == pytest.approx(4 / 9)
    assert kendalls_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)
    assert kendalls_w([[1, 2], [1, 2]]) == pytest.approx(1.0)
    # ties: average ranks [1.5, 1.5, 3] and [1, 2, 3]; R = [2.5, 3.5, 6], S = 6.5,
    # T = 2^3 - 2 = 6: W = 12 * 6.5 / (4 * 24 - 2 * 6) = 78 / 84
    assert kendalls_w([[1, 1, 3], [1, 2, 3]]) == pytest.approx(78 / 84)


def test_figures_follow_the_reviewers(http, factory, settings, monkeypatch):
    ds = factory.dataset("study", review_overlap=2)
    p1, c1, _ = factory.judged_item(ds, "q1", ["a", "b", "c"], ranks=[1, 2, 3], judge_model="j1")
    p2, c2, _ = factory.judged_item(ds, "q2", ["a", "b", "c"], ranks=[1, 2, 3], judge_model="j1")
    p3, c3, _ = factory.judged_item(ds, "q3", ["a", "b"], ranks=[1, 2], judge_model="j2", template_version="v2")

    def report():
        r = http.get(f"{API}/datasets/{ds}/review/agreement")
        assert r.status_code == 200, r.text
        return r.json()

    empty = report()
    assert empty["overall"] == {"reviewed": 0, "confirmed_unchanged": None, "top1_agreement": None, "mean_kendall_tau": None}

    http.post(f"{API}/prompts/{p1}/review/approve", headers=as_("ann"))
    assert report()["overall"] == {"reviewed": 1, "confirmed_unchanged": 1.0, "top1_agreement": 1.0, "mean_kendall_tau": 1.0}

    # ann swaps the top two of q2: top-1 changes, tau = 1/3
    http.post(f"{API}/prompts/{p2}/rankings", json={"completion_ids": c2, "ranks": [2, 1, 3]}, headers=as_("ann"))
    http.post(f"{API}/prompts/{p2}/review/approve", headers=as_("ann"))
    # ann reverses q3 (judge j2 / v2): tau = -1
    http.post(f"{API}/prompts/{p3}/rankings", json={"completion_ids": c3, "ranks": [2, 1]}, headers=as_("ann"))
    http.post(f"{API}/prompts/{p3}/review/approve", headers=as_("ann"))
    rep = report()
    assert rep["overall"]["reviewed"] == 3
    assert rep["overall"]["confirmed_unchanged"] == pytest.approx(1 / 3)
    assert rep["overall"]["top1_agreement"] == pytest.approx(1 / 3)
    assert rep["overall"]["mean_kendall_tau"] == pytest.approx((1 + 1 / 3 - 1) / 3)
    j1, j2 = rep["by_judge"]
    assert (j1["judge_model"], j1["reviewed"], j1["confirmed_unchanged"], j1["top1_agreement"]) == ("j1", 2, 0.5, 0.5)
    assert j1["mean_kendall_tau"] == pytest.approx((1 + 1 / 3) / 2)
    assert (j2["judge_model"], j2["template_version"], j2["reviewed"], j2["mean_kendall_tau"]) == ("j2", "v2", 1, -1.0)
    assert rep["inter_annotator"]["items"] == 0

    # bob reviews q1 and agrees with ann; then q2, where he keeps the judge's order (ann did not)
    http.post(f"{API}/prompts/{p1}/review/approve", headers=as_("bob"))
    ia = report()["inter_annotator"]
    assert (ia["items"], ia["reviewers"], ia["krippendorff_alpha"], ia["mean_kendall_w"]) == (1, 2, 1.0, 1.0)
    http.post(f"{API}/prompts/{p2}/review/approve", headers=as_("bob"))
    ia = report()["inter_annotator"]
    # q2: ann [2, 1, 3], bob [1, 2, 3]: R = [3, 3, 6], S = 6, W = 12 * 6 / (4 * 24) = 0.75
    assert ia["items"] == 2 and ia["mean_kendall_w"] == pytest.approx((1.0 + 0.75) / 2)
    assert ia["krippendorff_alpha"] < 1.0

    # undoing ann's approval of q3 takes it out of the figures again
    http.post(f"{API}/prompts/{p3}/review/undo", headers=as_("ann"))
    assert report()["overall"]["reviewed"] == 4

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    from app.cli import cli
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(cli, ["review", "agreement", "study"], env={"COLUMNS": "200"})
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert "j1" in out.output and "0.750" in out.output and "Krippendorff" in out.output  # j1: 3 of 4 unchanged
    bad = CliRunner().invoke(cli, ["review", "agreement", "nope"])
    assert bad.exit_code == 1 and "does not exist" in bad.output
