"""The review web page in headless Chromium against the live server: keyboard review end to end,
untrusted model text shown as text, and two reviewers in two browser contexts."""

from __future__ import annotations

import pytest

from app.config import Settings

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Reviewer:
    """One browser context (its own session storage) signed in under a name."""

    def __init__(self, browser, base: str, name: str):
        self.context = browser.new_context(base_url=base)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.page.goto("/ui/")
        self.page.fill("#credential", name)
        self.page.click("#sign-in-form button[type=submit]")
        self.page.wait_for_selector("#datasets:not([hidden])")
        assert self.page.text_content("#who") == f"signed in as {name}"

    def open(self, dataset_id: int):
        self.page.click(f"a[href='/ui/datasets/{dataset_id}']")
        self.page.wait_for_selector("#item:not([hidden]), #empty:not([hidden])")
        return self

    def showing(self) -> int | None:
        if self.page.is_visible("#empty"):
            return None
        return int(self.page.get_attribute("#item", "data-prompt-id"))

    def wait_for_item(self, prompt_id: int):
        self.page.wait_for_selector(f"#item[data-prompt-id='{prompt_id}']:not([hidden])")

    def press(self, *keys: str):
        for k in keys:
            self.page.keyboard.press(k)

    def close(self):
        self.context.close()


@pytest.fixture
def reviewers(browser, live_server, clean_db):
    made: list[Reviewer] = []

    def make(name: str) -> Reviewer:
        made.append(Reviewer(browser, live_server.url, name))
        return made[-1]

    yield make
    for r in made:
        assert r.errors == [], r.errors
        r.close()


@pytest.mark.browser
def test_keyboard_review_end_to_end(reviewers, factory):
    ds = factory.dataset("ui-ds")
    p1, (c1, c2, c3), jr = factory.judged_item(ds, "Write a haiku", ["one", "two", "three"], rationale="one scans best")
    p2, _, _ = factory.judged_item(ds, "Second prompt", ["x", "y"])
    ann = reviewers("ann").open(ds)
    page = ann.page
    ann.wait_for_item(p1)
    assert page.text_content("#judge-rationale") == "one scans best"
    assert page.locator("#order li").all_text_contents() == ["#1", "#2", "#3"]

    ann.press("3", "1")  # three best, then one; two last
    assert page.locator("#order li").all_text_contents() == ["#3", "#1", "#2"]
    ann.press("e")  # edits the top-ranked answer
    page.wait_for_selector("#edit-dialog[open]")
    assert page.input_value("#edit-text") == "three"
    page.fill("#edit-text", "three, edited")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(f"article[data-completion-id='{c3}'] .original-text", state="attached")
    assert page.text_content(f"article[data-completion-id='{c3}'] .completion-text") == "three, edited"
    assert page.locator("#order li").all_text_contents() == ["#3", "#1", "#2"]  # the edit kept the new order
    ann.press("a")
    ann.wait_for_item(p2)

    [(hid, ids, ranks, reviewer, status)] = factory.rows(
        "SELECT id, completion_ids, ranks, reviewer, review_status FROM ranking WHERE ranker_kind = 'human'")
    assert (ids, ranks, reviewer, status) == ([c3, c1, c2], [1, 2, 3], "ann", "approved")
    assert factory.rows("SELECT text, edited_text FROM completion WHERE id = :c", c=c3) == [("three", "three, edited")]
    assert factory.scalar("SELECT review_status FROM prompt WHERE id = :p", p=p1) == "approved"
    assert factory.rows("SELECT ranking_id, judge_ranking_id FROM review_verdict") == [(hid, jr)]

    ann.press("s")  # skip the last one: nothing left
    page.wait_for_selector("#empty:not([hidden])")
    ann.press("k")  # back to it
    ann.wait_for_item(p2)
    ann.press("r")
    page.wait_for_selector("#reject-dialog[open]")
    page.fill("#reject-reason", "off topic")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty:not([hidden])")
    assert factory.rows("SELECT review_status FROM prompt ORDER BY id") == [("approved",), ("rejected",)]
    assert factory.scalar("SELECT comment FROM review_event WHERE action = 'reject'") == "off topic"
    page.locator("#progress-text", has_text="2 / 2 reviewed").wait_for()


@pytest.mark.browser
def test_model_output_is_shown_as_text_and_runs_nothing(reviewers, factory):
    evil = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
    ds = factory.dataset("xss")
    pid = factory.prompt(ds, '<img src="y" onerror="window.__pwned = 3">What now?', tags=["<b>t</b>"])
    cid = factory.completion(pid, evil)
    other = factory.completion(pid, "**plain** answer")
    factory.judge_ranking(pid, [cid, other], [1, 2], rationale='<script>window.__pwned = 4</script>', flag_reasons=["<i>odd</i>"])

    ann = reviewers("ann")
    requests: list[str] = []
    dialogs: list[str] = []
    ann.page.on("request", lambda r: requests.append(r.url))
    ann.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    ann.open(ds)
    ann.wait_for_item(pid)
    page = ann.page
    assert page.text_content(f"article[data-completion-id='{cid}'] .completion-text") == evil
    assert page.text_content("#prompt-text").startswith('<img src="y"')
    assert page.text_content("#judge-rationale") == "<script>window.__pwned = 4</script>"
    assert page.locator("main img, main script, main b, main i").count() == 0
    ann.press("e")  # the edit box shows it as text too
    page.wait_for_selector("#edit-dialog[open]")
    assert page.input_value("#edit-text") == evil
    page.click("#edit-cancel")
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == []
    assert not [u for u in requests if u.endswith(("/x", "/y"))]


@pytest.mark.browser
def test_two_reviewers_never_get_the_same_item(reviewers, factory):
    ds = factory.dataset("pair")
    p1, _, _ = factory.judged_item(ds, "first", ["a", "b"])
    p2, _, _ = factory.judged_item(ds, "second", ["a", "b"])
    ann = reviewers("ann").open(ds)
    bob = reviewers("bob").open(ds)
    assert {ann.showing(), bob.showing()} == {p1, p2}
    ann_item = ann.showing()
    ann.press("a")
    ann.page.wait_for_selector("#empty:not([hidden])")  # bob still holds the other
    assert bob.showing() != ann_item
    bob.page.reload()
    bob.page.wait_for_selector("#item:not([hidden])")
    assert bob.showing() != ann_item  # a reload hands bob the item he holds
    assert factory.rows("SELECT lease_holder FROM prompt WHERE lease_holder IS NOT NULL") == [("bob",)]


def test_sign_in_mode_and_security_headers(settings: Settings):
    # sync (TestClient runs the app on its own loop): Playwright's sync API holds this thread's loop
    from fastapi.testclient import TestClient

    from app.main import create_app

    for keys, mode in (({}, "name"), ({"k-123": "ann"}, "key")):
        with TestClient(create_app(settings.model_copy(update={"api_keys": keys})), base_url="http://localhost") as c:
            r = c.get("/ui/")
            assert r.status_code == 200 and f'data-auth-mode="{mode}"' in r.text
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert c.get("/ui/static/review.js").headers["content-type"].startswith("text/javascript")
            assert c.get("/ui/static/nope.js").status_code == 404
            assert c.get("/ui/static/..%2Fapp.py").status_code in (404, 422)
            if keys:
                assert c.get("/api/v1/me").status_code == 401
                assert c.get("/api/v1/me", headers={"Authorization": "Bearer k-123"}).json()["actor"] == "ann"


@pytest.mark.browser
def test_drag_reorders_and_undo_walks_back(reviewers, factory):
    ds = factory.dataset("drag")
    pid, (c1, c2, c3), _ = factory.judged_item(ds, "Order these", ["first", "second", "third"])
    ann = reviewers("ann").open(ds)
    ann.wait_for_item(pid)
    page = ann.page
    page.drag_and_drop(f"#order li[data-completion-id='{c3}']", f"#order li[data-completion-id='{c1}']")
    assert page.locator("#order li").all_text_contents() == ["#3", "#1", "#2"]
    assert page.text_content(f"article[data-completion-id='{c3}'] .rank") == "rank 1"
    ann.press("a")
    page.wait_for_selector("#empty:not([hidden])")
    assert factory.rows("SELECT completion_ids, ranks FROM ranking WHERE ranker_kind = 'human'") == [([c3, c1, c2], [1, 2, 3])]
    ann.press("k")  # back to it
    ann.wait_for_item(pid)
    ann.press("u")  # and undo the approval
    page.locator("#message", has_text="undid approve").wait_for()
    assert factory.scalar("SELECT review_status FROM prompt") == "pending"
    assert page.locator("#order li").all_text_contents() == ["#3", "#1", "#2"]  # my ranking is still on record


@pytest.fixture
def with_api_keys(live_server):
    """The live server with API keys configured (settings are read per request)."""
    plain = live_server.app.state.settings
    live_server.app.state.settings = plain.model_copy(update={"api_keys": {"key-of-ann": "ann"}})
    yield
    live_server.app.state.settings = plain


@pytest.mark.browser
def test_sign_in_with_an_api_key(browser, live_server, with_api_keys, factory):
    ds = factory.dataset("keyed")
    pid, _, _ = factory.judged_item(ds, "q", ["a", "b"])
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.goto("/ui/")
        assert page.get_attribute("#credential", "type") == "password"
        page.fill("#credential", "wrong")
        page.click("#sign-in-form button[type=submit]")
        page.locator("#sign-in-error", has_text="not valid").wait_for()
        page.fill("#credential", "key-of-ann")
        page.click("#sign-in-form button[type=submit]")
        page.locator("#who", has_text="signed in as ann").wait_for()
        # the key went to the server once: the page keeps an HttpOnly, SameSite=Strict session cookie
        assert "key-of-ann" not in page.evaluate("() => JSON.stringify(sessionStorage) + document.cookie")
        cookie = next(c for c in context.cookies() if c["name"] == "forge_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.click(f"a[href='/ui/datasets/{ds}']")
        page.wait_for_selector(f"#item[data-prompt-id='{pid}']:not([hidden])")
        page.keyboard.press("a")  # a write: it carries the session's CSRF token
        page.wait_for_selector("#empty:not([hidden])")
        other = context.new_page()  # a new tab is still signed in, and signs out
        other.goto("/ui/")
        other.locator("#who", has_text="signed in as ann").wait_for()
        other.click("#sign-out")
        other.wait_for_selector("#sign-in:not([hidden])")
        assert not [c for c in context.cookies() if c["name"] == "forge_session" and c["value"] != "null"]
    finally:
        context.close()
    assert factory.rows("SELECT actor, action FROM review_event") == [("ann", "approve")]


@pytest.mark.browser
def test_page_filters_narrow_the_queue(reviewers, factory):
    ds = factory.dataset("filters")
    factory.judged_item(ds, "older, untagged", ["a", "b"])
    math, _, _ = factory.judged_item(ds, "newer, tagged", ["a", "b"], prompt_kw={"tags": ["math"]})
    ann = reviewers("ann")
    ann.page.goto(f"/ui/datasets/{ds}?tag=math")
    ann.wait_for_item(math)


@pytest.mark.browser
def test_a_lost_lease_moves_on(reviewers, factory):
    ds = factory.dataset("lost")
    first, _, _ = factory.judged_item(ds, "first", ["a", "b"])
    second, _, _ = factory.judged_item(ds, "second", ["a", "b"])
    ann = reviewers("ann").open(ds)
    ann.wait_for_item(first)
    # ann's lease runs out and bob takes the item
    factory.execute("UPDATE prompt SET lease_holder = 'bob', lease_expires_at = now() + interval '1 hour' WHERE id = :p", p=first)
    ann.press("a")
    ann.wait_for_item(second)
    assert "being reviewed by 'bob'" in ann.page.text_content("#message")
    assert factory.scalar("SELECT review_status FROM prompt WHERE id = :p", p=first) == "pending"
    ann.errors.clear()  # the refused request is logged by the browser
