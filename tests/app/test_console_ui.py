"""The console's pages besides review, in headless Chromium: the datasets table counts what needs
review (rankings included), the dataset overview shows progress per reviewer, the keys page is
there only with a keys API, and every page has labelled controls, named buttons, visible focus
and no horizontal scrolling at 1024 px."""

from __future__ import annotations

import pytest

from tests.app.ui import shot

pytestmark = pytest.mark.browser

PAGES = ["", "/review", "/runs", "/exports", "/agreement"]

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden' && e.type !== 'file' && !e.closest('[hidden]'))
  .filter(e => {
    const named = (e.labels && e.labels.length) || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby');
    const text = e.tagName === 'BUTTON' && e.textContent.trim();
    return !(named || text);
  })
  .map(e => e.outerHTML.slice(0, 120))"""


def test_datasets_table_counts_flagged_rankings_and_links_every_page(reviewers, factory):
    ds = factory.dataset("flagged")
    factory.judged_item(ds, "q1", ["a", "b"], flag_reasons=["judges_disagree"])
    factory.judged_item(ds, "q2", ["a", "b"], flag_reasons=["length_bias"])
    factory.judged_item(ds, "q3", ["a", "b"])
    other = factory.dataset("clean")
    ann = reviewers("ann")
    page = ann.page
    row = page.locator(f"tr[data-dataset-id='{ds}']")
    cells = row.locator("td").all_text_contents()
    assert cells[:4] == ["3", "6", "3", "0"]  # prompts, completions, rankings, reviewed
    assert row.locator("td.needs-review").text_content() == "2 (2 rankings)"  # not "0": the rankings are flagged
    assert page.locator(f"tr[data-dataset-id='{other}'] td.needs-review").text_content() == "0"
    assert page.is_hidden("#nav-keys")  # no roles, no keys API: no keys page in the menu
    shot(page, "console-datasets")
    # the overview and every tab of a dataset
    page.click(f"tr[data-dataset-id='{ds}'] th a")
    page.wait_for_selector("#summary .figure")
    assert "needs review" in page.text_content("#summary") and page.is_visible("#no-reviewers")
    for tab in ["review", "runs", "exports", "agreement", "overview"]:
        page.click(f"nav.tabs a[data-tab='{tab}']")
        page.wait_for_selector(f"nav.tabs a[data-tab='{tab}'][aria-current='page']")
        page.locator("#dataset-name", has_text="flagged").wait_for()


def test_overview_shows_each_reviewers_progress(reviewers, factory):
    ds = factory.dataset("overview")
    factory.judged_item(ds, "q1", ["a", "b"])
    q2, _, _ = factory.judged_item(ds, "q2", ["a", "b"])
    ann = reviewers("ann").open(ds)
    ann.press("2", "a")  # a re-rank, approved
    ann.wait_for_item(q2)
    ann.press("r")
    ann.page.fill("#reject-reason", "vague")
    ann.page.keyboard.press("Enter")
    ann.page.wait_for_selector("#empty:not([hidden])")
    page = ann.page
    page.goto(f"/ui/datasets/{ds}")
    page.wait_for_selector("#reviewers tr[data-reviewer='ann']")
    assert page.locator("#reviewers tr[data-reviewer='ann'] td").all_text_contents() == ["1", "1", "1", "0", "0", "0"]
    assert "2 / 2" in page.text_content("#summary")  # verdicts given / wanted


def test_keys_page_says_when_the_service_has_no_keys_api(reviewers, factory):
    ann = reviewers("ann")
    ann.page.goto("/ui/keys")
    ann.page.wait_for_selector("#no-keys-api:not([hidden])")
    assert ann.page.is_hidden("#keys-panel")
    ann.errors.clear()  # the probe's 404 is logged by the browser


@pytest.mark.parametrize("width", [1280, 1024])
def test_every_page_has_labels_visible_focus_and_fits(reviewers, factory, width):
    ds = factory.dataset("a11y", guidelines="Be kind.")
    factory.judged_item(ds, "q", ["a", "b"])
    ann = reviewers("ann", viewport={"width": width, "height": 800})
    page = ann.page
    for path in ["/ui/", *[f"/ui/datasets/{ds}{p}" for p in PAGES]]:
        name = "index" if path == "/ui/" else (path.rsplit("/", 1)[-1] if path.count("/") > 3 else "overview")
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width, path
        page.keyboard.press("Tab")  # the skip link first, with a visible focus ring
        page.keyboard.press("Tab")
        style = page.evaluate("() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; }")
        assert style[0] != "none" and style[1] != "0px", (path, style)
        if width == 1024:
            shot(page, f"console-1024-{name}")
