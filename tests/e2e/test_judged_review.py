"""A dataset generated and judged by the pipeline, reviewed in the browser with the keyboard
alone, then exported: the human ranking wins, the agreement figures follow."""

from __future__ import annotations

import json

import pytest

from tests.app.llm.conftest import make_dataset, rows, start, wait_run
from tests.app.ui import Reviewer


@pytest.mark.browser
def test_generate_judge_review_export(api, sql, browser, forge_server):
    dataset_id, prompt_ids = make_dataset(api, sql, name="e2e", n_prompts=2)
    gen = wait_run(api, start(api, dataset_id, {"kind": "generate", "k": 3})["id"])
    judge = wait_run(api, start(api, dataset_id, {"kind": "judge", "source_run_id": gen["id"]})["id"])
    assert gen["status"] == judge["status"] == "succeeded"
    judged = {r["prompt_id"]: r for r in rows(sql, "SELECT * FROM ranking WHERE ranker_kind = 'judge'")}

    ann = Reviewer(browser, forge_server.url, "ann")
    try:
        page = ann.page
        link = f"/ui/datasets/{dataset_id}/review"
        for _ in range(10):  # Tab to the dataset's link and open it: keyboard only from here on
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.getAttribute('href')") == link:
                break
        page.keyboard.press("Enter")
        first, second = prompt_ids
        ann.wait_for_item(first)
        j = judged[first]
        judge_order = [cid for _, cid in sorted(zip(j["ranks"], j["completion_ids"]))]
        ann.press("a")  # the judge was right about the first prompt
        ann.wait_for_item(second)
        cards = [int(x) for x in page.locator("#completions article").evaluate_all("els => els.map(e => e.dataset.completionId)")]
        j = judged[second]
        worst_first = [cid for _, cid in sorted(zip(j["ranks"], j["completion_ids"]), reverse=True)]
        ann.press(*[str(cards.index(cid) + 1) for cid in worst_first[:2]])  # reverse the judge's order
        ann.press("a")
        page.wait_for_selector("#empty:not([hidden])")
        assert ann.errors == []
    finally:
        ann.close()

    assert rows(sql, "SELECT review_status FROM prompt ORDER BY id") == [{"review_status": "approved"}] * 2
    [human] = rows(sql, "SELECT prompt_id, completion_ids, ranks FROM ranking WHERE ranker_kind = 'human'")
    assert human["prompt_id"] == second and human["completion_ids"] == worst_first and human["ranks"] == [1, 2, 3]

    rm = [json.loads(line) for line in api.get(f"/datasets/{dataset_id}/exports/rm.jsonl").text.splitlines()]
    assert len(rm) == 2
    texts = {r["id"]: r["text"] for r in rows(sql, "SELECT id, text FROM completion")}
    by_prompt = {rows(sql, "SELECT id FROM prompt WHERE text = :t", t=r["prompt"])[0]["id"]: r for r in rm}
    exported = by_prompt[second]
    assert [t for _, t in sorted(zip(exported["ranking"], exported["completion"]))] == [texts[c] for c in worst_first]
    exported = by_prompt[first]
    assert [t for _, t in sorted(zip(exported["ranking"], exported["completion"]))] == [texts[c] for c in judge_order]

    report = api.get(f"/datasets/{dataset_id}/review/agreement").json()
    assert report["overall"]["reviewed"] == 2 and report["overall"]["confirmed_unchanged"] == 0.5
    assert report["overall"]["mean_kendall_tau"] == pytest.approx((1 + -1) / 2)
    [by_judge] = report["by_judge"]
    assert by_judge["template_version"] == judged[first]["template_version"]
