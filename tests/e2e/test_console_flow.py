"""A new user in the browser alone, against the service with its worker and the fake LLM: from an
empty dataset (created in the page) through import by drag and drop, generate and judge runs
watched live, review, agreement, to a downloaded export. Then a run's failures, cancel and resume."""

from __future__ import annotations

import json
import tarfile

import pytest

from tests.app.llm.conftest import rows
from tests.app.ui import Reviewer, shot

pytestmark = pytest.mark.browser

PROMPTS = [
    {"prompt": "Explain Python's GIL in two paragraphs, with a table of what it blocks.", "tags": ["python"]},
    {"prompt": "日本語で、ハッシュテーブルの仕組みを説明してください。"},
    {"prompt": "Write a bash one-liner that counts lines in all .py files."},
]
JSONL = "\n".join([json.dumps(PROMPTS[0], ensure_ascii=False), '{"prompt": ', json.dumps(PROMPTS[1], ensure_ascii=False),
                   json.dumps(PROMPTS[0]), json.dumps(PROMPTS[2])]) + "\n"


def drop_file(page, selector: str, name: str, content: str) -> None:
    """Drop a file on an element the way a user drags one from the desktop."""
    transfer = page.evaluate_handle(
        "([name, text]) => { const dt = new DataTransfer(); dt.items.add(new File([text], name)); return dt; }", [name, content])
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def wait_run_in_page(page, status: str = "succeeded", timeout: float = 60_000) -> int:
    page.wait_for_selector(f"#run-detail[data-status='{status}']", timeout=timeout)
    return int(page.get_attribute("#run-detail", "data-run-id"))


def test_a_new_user_goes_from_an_empty_dataset_to_a_downloaded_export(browser, forge_server, api, sql, tmp_path):
    ann = Reviewer(browser, forge_server.url, "ann")
    page = ann.page
    event_streams: list[str] = []
    page.on("request", lambda r: "/events" in r.url and event_streams.append(r.url))
    try:
        # an empty console: create the dataset
        page.locator("#no-datasets").wait_for()
        shot(page, "console-datasets-empty")
        page.fill("#new-name", "flow")
        page.fill("#new-description", "the whole flow in a browser")
        page.click("#create-form button[type=submit]")
        page.wait_for_url("**/ui/datasets/*")
        dataset_id = int(page.url.rsplit("/", 1)[1])
        page.locator("#dataset-name", has_text="flow").wait_for()

        # import by drag and drop: the per-line report names the bad line and the duplicate
        drop_file(page, "#drop", "prompts.jsonl", JSONL)
        page.locator("#import-report", has_text="3 imported, 1 duplicates, 1 invalid of 5 rows").wait_for()
        report = page.locator("#import-report table tbody tr").evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        assert [r[:2] for r in report] == [["2", "invalid"], ["4", "duplicate"]]
        assert report[0][2]  # with the parser's reason

        # settings: guidelines (markdown, previewed) and the overlap
        page.fill("#guidelines", "## Guidelines\n\nPrefer **correct** answers; ties are fine.")
        page.locator("#guidelines-preview strong", has_text="correct").wait_for()
        page.fill("#overlap", "1")
        page.click("#settings-form button[type=submit]")
        page.locator("#message", has_text="Settings saved.").wait_for()
        shot(page, "console-dataset")
        settings = api.get(f"/datasets/{dataset_id}").json()["settings"]
        assert settings == {"guidelines": "## Guidelines\n\nPrefer **correct** answers; ties are fine.", "review_overlap": 1}

        # runs: generate, watched live over the event stream, then judge
        page.click("nav.tabs a[data-tab='runs']")
        page.check("input[name=kind][value=generate]")
        page.fill("#gen-k", "3")
        page.locator("#estimate", has_text="no earlier generate run").wait_for()
        page.fill("#run-budget", "100")  # the fake\'s model is priced: a paid run needs a budget
        page.click("#start-form button[type=submit]")
        gen = wait_run_in_page(page)
        assert page.text_content("#detail-figures").count("3 / 3") == 1
        shot(page, "console-run-generate")
        page.check("input[name=kind][value=judge]")
        page.select_option("#judge-source", str(gen))
        page.fill("#run-budget", "100")  # the fake\'s model is priced: a paid run needs a budget
        page.click("#start-form button[type=submit]")
        page.wait_for_selector(f"#run-detail:not([data-run-id='{gen}'])")
        judge = wait_run_in_page(page)
        assert {r["kind"]: r["status"] for r in api.get(f"/datasets/{dataset_id}/runs").json()["data"]} == {
            "generate": "succeeded", "judge": "succeeded"}
        assert any(f"/runs/{gen}/events" in u for u in event_streams) and any(f"/runs/{judge}/events" in u for u in event_streams)
        page.check("input[name=kind][value=generate]")  # an estimate from the run just made
        page.locator("#estimate", has_text=f"from run {gen}").wait_for()
        assert page.locator("#runs tbody tr").count() == 2
        shot(page, "console-runs")

        # review all three with the mouse; the guidelines sit beside
        page.click("nav.tabs a[data-tab='review']")
        page.wait_for_selector("#item:not([hidden])")
        assert page.text_content("#guidelines strong") == "correct"
        for _ in range(3):
            pid = ann.showing()
            page.click("#approve")
            page.wait_for_selector(f"#item:not([data-prompt-id='{pid}']), #empty:not([hidden])")
        page.wait_for_selector("#empty:not([hidden])")
        page.locator("#progress-text", has_text="3 / 3 reviewed").wait_for()

        # agreement, with its chart
        page.click("nav.tabs a[data-tab='agreement']")
        page.wait_for_selector("#chart svg rect.bar")
        assert page.text_content("#overall").startswith("3approvals compared")
        assert page.locator("#by-judge tbody tr").count() == 1
        shot(page, "console-agreement")

        # export: a version, its manifest, the downloads
        page.click("nav.tabs a[data-tab='exports']")
        page.locator("#no-exports").wait_for()
        page.fill("#split-train", "1")
        page.fill("#split-validation", "0")
        page.fill("#split-test", "0")
        page.click("#export-form button[type=submit]")
        page.wait_for_selector("#version-detail[data-status='succeeded']", timeout=60_000)
        shot(page, "console-exports")
        with page.expect_download() as d:
            page.click("#files tr[data-file='sft.train.jsonl'] button")
        sft = tmp_path / "sft.jsonl"
        d.value.save_as(sft)
        assert d.value.suggested_filename == "flow-v1-sft.train.jsonl"
        lines = [json.loads(line) for line in sft.read_text(encoding="utf-8").splitlines()]
        assert sorted(r["prompt"] for r in lines) == sorted(p["prompt"] for p in PROMPTS)
        with page.expect_download() as d:
            page.click("#download-archive")
        archive = tmp_path / "v1.tar.gz"
        d.value.save_as(archive)
        with tarfile.open(archive) as tar:
            names = {n.rsplit("/", 1)[-1] for n in tar.getnames()}
        assert {"manifest.json", "sft.train.jsonl", "rm.train.jsonl"} <= names
        manifest = json.loads(page.text_content("#manifest"))
        assert manifest["files"]["sft.train.jsonl"]["rows"] == 3 and manifest["dataset"] == "flow"
        page.locator("#exports tbody tr[data-version='1']", has_text="succeeded").wait_for()
        assert ann.errors == []
    finally:
        ann.close()
    assert rows(sql, "SELECT count(*) AS n FROM prompt WHERE review_status = 'approved'") == [{"n": 3}]


def test_runs_page_shows_failures_and_cancels_and_resumes(browser, forge_server, api, sql, fake):
    r = api.post("/datasets", json={"name": "faults"})
    dataset_id = r.json()["id"]
    texts = [f"Question {i}: what is {i} squared?" for i in range(12)] + ["broken prompt: please fail"]
    assert api.post(f"/datasets/{dataset_id}/prompts/import", json=texts).json()["inserted"] == 13
    fake.add_fault("500", match="broken prompt")
    ann = Reviewer(browser, forge_server.url, "ann")
    page = ann.page
    try:
        page.goto(f"/ui/datasets/{dataset_id}/runs")
        page.fill("#gen-k", "1")
        page.fill("#run-budget", "100")  # the fake\'s model is priced: a paid run needs a budget
        page.click("#start-form button[type=submit]")
        run_id = wait_run_in_page(page)
        page.locator("#failed-items tbody tr").first.wait_for()
        [reason] = page.locator("#failed-items td.reason").all_text_contents()
        assert "HTTP 500" in reason and "after 3 attempts" in reason
        assert page.url.endswith(f"/ui/datasets/{dataset_id}/runs/{run_id}")
        shot(page, "console-run-failed-items")
        ann.errors.clear()

        # a slow run cancelled from the page, then resumed once the endpoint is well
        fake.clear()
        fake.latency_s = 0.4
        page.check("input[name=kind][value=judge]")
        page.check("input[name=kind][value=generate]")
        page.fill("#gen-k", "2")
        page.fill("#run-budget", "100")  # the fake\'s model is priced: a paid run needs a budget
        page.click("#start-form button[type=submit]")
        page.wait_for_selector(f"#run-detail:not([data-run-id='{run_id}'])")
        slow = int(page.get_attribute("#run-detail", "data-run-id"))
        page.wait_for_selector("#run-detail[data-status='running']")
        page.click("#cancel-run")
        wait_run_in_page(page, "cancelled")
        fake.latency_s = 0
        page.click("#resume-run")
        page.locator("#message", has_text=f"Resumed run #{slow}").wait_for()
        wait_run_in_page(page, "succeeded")
        run = api.get(f"/runs/{slow}").json()
        assert (run["done"], run["failed"]) == (13, 0)

        # a synth run from the page: new prompts on the topics given
        page.check("input[name=kind][value=synth]")
        page.fill("#synth-n", "4")
        page.fill("#synth-topics", "sorting algorithms\nunicode")
        page.fill("#run-budget", "100")  # the fake\'s model is priced: a paid run needs a budget
        page.click("#start-form button[type=submit]")
        page.wait_for_selector(f"#run-detail:not([data-run-id='{slow}'])")
        synth = wait_run_in_page(page)
        assert api.get(f"/runs/{synth}").json()["params"]["topics"] == ["sorting algorithms", "unicode"]
        assert rows(sql, "SELECT count(*) AS n FROM prompt WHERE source = 'synthetic'")[0]["n"] >= 1
        shot(page, "console-run-synth")
        assert ann.errors == []
    finally:
        ann.close()
