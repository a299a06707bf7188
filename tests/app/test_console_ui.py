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
    assert page.is_visible("#nav-keys")  # no key exists yet: the local user is the admin, who manages keys
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


def test_keys_page_makes_shows_once_and_revokes_a_key(browser, live_server, factory):
    ds = factory.dataset("granted")
    plain = live_server.app.state.settings  # an admin key from FORGE_API_KEYS signs the page in
    live_server.app.state.settings = plain.model_copy(update={"api_keys": {"key-of-root": "root"}})
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto("/ui/keys")
        page.wait_for_url("**/ui/?next=*")
        page.fill("#credential", "key-of-root")
        page.click("#sign-in-form button[type=submit]")
        page.wait_for_selector("#keys-panel:not([hidden])")
        page.fill("#key-name", "bob")
        page.select_option("#key-role", "annotator")
        page.fill("#key-datasets", str(ds))
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#new-key:not([hidden])")
        key = page.text_content("#new-key-value")
        assert key.startswith("rf_") and len(key) > 40  # shown this once; only its hash is stored
        assert factory.rows("SELECT name, role, created_by FROM api_key") == [("bob", "annotator", "root")]
        row = page.locator("#keys tbody tr", has_text="bob")
        assert "annotator" in row.text_content() and str(ds) in row.text_content()
        shot(page, "console-keys")
        row.locator("button", has_text="Revoke").click()
        page.locator("#keys tbody tr", has_text="revoked").wait_for()
        assert factory.rows("SELECT count(*) FROM api_key WHERE revoked_at IS NOT NULL") == [(1,)]
    finally:
        context.close()
        live_server.app.state.settings = plain


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
