"""The review page in headless Chromium against the live server: keyboard and mouse review end
to end, tie buckets, rendered markdown that runs nothing, the edit diff, comments, guidelines,
per-item URLs, similar-answer warnings, progress, and the layout at 1280x800 and 1024 px."""

from __future__ import annotations

import pytest

from tests.app.ui import long_answer, shot

pytestmark = pytest.mark.browser


def test_keyboard_review_end_to_end(reviewers, factory):
    ds = factory.dataset("ui-ds")
    p1, (c1, c2, c3), jr = factory.judged_item(ds, "Write a haiku", ["one", "two", "three"], rationale="one scans best")
    p2, _, _ = factory.judged_item(ds, "Second prompt", ["x", "y"])
    ann = reviewers("ann").open(ds)
    page = ann.page
    ann.wait_for_item(p1)
    assert page.text_content("#judge-rationale").strip() == "one scans best"
    assert ann.order() == [["#1"], ["#2"], ["#3"]]
    assert page.url.endswith(f"/ui/datasets/{ds}/items/{p1}")  # the item's own address

    ann.press("3", "1")  # three best, then one; two last
    assert ann.order() == [["#3"], ["#1"], ["#2"]]
    ann.press("e")  # edits the top-ranked answer
    page.wait_for_selector("#edit-dialog[open]")
    assert page.input_value("#edit-text") == "three"
    page.fill("#edit-text", "three, edited")
    page.keyboard.press("Control+Enter")
    card = f"article[data-completion-id='{c3}']"
    page.wait_for_selector(f"{card} .diff-toggle")  # an edited answer shows its word diff against the original
    assert page.text_content(f"{card} .completion-text ins") == ", edited"
    assert ann.order() == [["#3"], ["#1"], ["#2"]]  # the edit kept the new order
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
    page.locator("#my-progress", has_text="you: 1 approved, 1 rejected, 1 rankings, 1 edits, 0 comments").wait_for()


def test_buttons_do_what_the_keys_do(reviewers, factory):
    ds = factory.dataset("mouse")
    p1, _, _ = factory.judged_item(ds, "first", ["a", "b"])
    p2, _, _ = factory.judged_item(ds, "second", ["a", "b"])
    p3, _, _ = factory.judged_item(ds, "third", ["a", "b"])
    ann = reviewers("ann").open(ds)
    page = ann.page
    ann.wait_for_item(p1)
    page.click("#approve")
    ann.wait_for_item(p2)
    page.click("#skip")
    ann.wait_for_item(p3)
    page.click("#reject")
    page.fill("#reject-reason", "not an answer")
    page.click("#reject-save")
    page.wait_for_selector("#empty:not([hidden])")
    page.click("#back")
    ann.wait_for_item(p3)
    page.click("#undo")
    page.locator("#message", has_text="undid reject").wait_for()
    # and the buttons are reachable by keyboard: Tab to Approve, Enter
    page.focus("#reset")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("() => document.activeElement.id") == "approve"
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty:not([hidden])")
    assert factory.rows("SELECT id, review_status FROM prompt ORDER BY id") == [(p1, "approved"), (p2, "pending"), (p3, "approved")]


def test_ties_are_shown_and_entered_with_keys_and_by_drag(reviewers, factory):
    ds = factory.dataset("ties")
    pid, (c1, c2, c3, c4), _ = factory.judged_item(ds, "Tie these", ["w", "x", "y", "z"], ranks=[4, 3, 1, 1])
    p2, (d1, d2, d3), _ = factory.judged_item(ds, "Drag these", ["p", "q", "r"])
    ann = reviewers("ann").open(ds)
    page = ann.page
    ann.wait_for_item(pid)
    assert ann.order() == [["#3", "#4"], ["#2"], ["#1"]]  # the judge's tie is a bucket
    assert page.text_content("#judge-order") == "ranks: #3 = #4 > #2 > #1"
    assert page.text_content(f"article[data-completion-id='{c3}'] .rank") == "rank 1 (tie)"
    assert page.text_content(f"article[data-completion-id='{c2}'] .rank") == "rank 3"
    shot(page, "review-ties")

    ann.press("2", "=", "1", "4")  # 2 and 1 tied best, then 4, then 3
    assert ann.order() == [["#2", "#1"], ["#4"], ["#3"]]
    # a focused chip moves with the arrow keys: #4 left joins the #2 = #1 bucket
    page.focus(f"#order button[data-completion-id='{c4}']")
    page.keyboard.press("ArrowLeft")
    assert ann.order() == [["#2", "#1", "#4"], ["#3"]]
    page.keyboard.press("ArrowRight")  # and back into a place of its own
    assert ann.order() == [["#2", "#1"], ["#4"], ["#3"]]
    page.click("#approve")
    ann.wait_for_item(p2)
    [(ids, ranks)] = factory.rows("SELECT completion_ids, ranks FROM ranking WHERE ranker_kind = 'human'")
    assert dict(zip(ids, ranks)) == {c2: 1, c1: 1, c4: 3, c3: 4}  # equal numbers are ties

    # drag #3 onto #1's bucket: a tie; then drag #2 to the gap in front: a place of its own, first
    page.drag_and_drop(f"#order button[data-completion-id='{d3}']", f"#order button[data-completion-id='{d1}']")
    assert ann.order() == [["#1", "#3"], ["#2"]]
    page.drag_and_drop(f"#order button[data-completion-id='{d2}']", "#order li.gap[data-gap='0']")
    assert ann.order() == [["#2"], ["#1", "#3"]]
    ann.press("a")
    page.wait_for_selector("#empty:not([hidden])")
    ids, ranks = factory.rows("SELECT completion_ids, ranks FROM ranking WHERE ranker_kind = 'human' AND prompt_id = :p", p=p2)[0]
    assert dict(zip(ids, ranks)) == {d2: 1, d1: 2, d3: 2}


XSS_MD = (
    "Here is a table and code.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi')\n```\n\n"
    "<script>window.__pwned = 1</script>\n\n<img src=\"x\" onerror=\"window.__pwned = 2\">\n\n"
    "[click me](javascript:window.__pwned=3) and <a href=\"javascript:window.__pwned=4\">raw link</a> "
    "and ![pixel](/ui/pixel.png) and [a fine link](https://example.org/doc)\n"
)


def test_markdown_is_rendered_sanitised_and_runs_nothing(reviewers, factory):
    ds = factory.dataset("xss")
    pid = factory.prompt(ds, '<img src="y" onerror="window.__pwned = 5">What now?', tags=["<b>t</b>"])
    cid = factory.completion(pid, XSS_MD)
    other = factory.completion(pid, "**plain** answer")
    factory.judge_ranking(pid, [cid, other], [1, 2], rationale="<script>window.__pwned = 6</script>", flag_reasons=["<i>odd</i>"])

    ann = reviewers("ann")
    requests: list[str] = []
    dialogs: list[str] = []
    ann.page.on("request", lambda r: requests.append(r.url))
    ann.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    ann.open(ds)
    ann.wait_for_item(pid)
    page = ann.page
    body = f"article[data-completion-id='{cid}'] .completion-text"
    # rendered: a table, highlighted code, bold text
    assert page.locator(f"{body} table td").all_text_contents() == ["1", "2"]
    assert page.locator(f"{body} pre code .hljs-built_in, {body} pre code .hljs-string").count() >= 1
    assert page.text_content(f"article[data-completion-id='{other}'] .completion-text strong") == "plain"
    # ... and inert: the HTML stays text, javascript: links are not links, no image is fetched
    assert "<script>window.__pwned = 1</script>" in page.text_content(body)
    assert page.locator("main script, main img, main iframe, main [onerror]").count() == 0
    hrefs = page.locator(f"{body} a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
    assert [h for h in hrefs if h] == ["https://example.org/doc"]  # a relative or javascript: address is dropped
    assert page.get_attribute(f"{body} a", "rel") == "noopener noreferrer nofollow"
    for text in ("click me", "raw link"):
        page.get_by_text(text, exact=False).first.click()
    assert page.text_content("#judge-rationale").strip() == "<script>window.__pwned = 6</script>"
    assert page.text_content("#prompt-text").startswith('<img src="y"')
    assert page.locator("main b, main i").count() == 0

    ann.press("m")  # raw: the source as typed
    page.wait_for_selector(f"{body}.raw")
    assert page.text_content(body) == XSS_MD
    assert page.locator(f"{body} table").count() == 0
    ann.press("m")
    page.wait_for_selector(f"{body}.md table")
    ann.press("e")  # the edit box shows it as text too
    page.wait_for_selector("#edit-dialog[open]")
    assert page.input_value("#edit-text") == XSS_MD
    page.click("#edit-cancel")
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == []
    assert not [u for u in requests if u.endswith(("/x", "/y", "/pixel.png"))]
    assert len(ann.context.pages) == 1  # the javascript: texts opened nothing


def test_layout_shows_the_start_of_four_long_answers_at_1280x800(reviewers, factory):
    guidelines = "## How to rank\n\n- Prefer **correct** over long.\n- Ties are fine when two answers are equally good.\n"
    ds = factory.dataset("long", guidelines=guidelines)
    pid, cids, _ = factory.judged_item(ds, "Compare dict and list lookups in Python, with numbers. " * 3,
                                       [long_answer(i) for i in range(1, 5)], ranks=[2, 1, 3, 4],
                                       rationale="Answer 2 measures; 1 is close.", flag_reasons=["length_bias"],
                                       details={"flags": {"length_bias": "the longest answer ranked first in 3 of 4 orders"}})
    ann = reviewers("ann").open(ds)
    page = ann.page
    ann.wait_for_item(pid)
    assert page.viewport_size == {"width": 1280, "height": 800}
    for cid, n in zip(cids, range(1, 5)):
        body = page.locator(f"article[data-completion-id='{cid}'] .completion-text")
        box = body.bounding_box()
        first_line = body.locator(":scope > p").first.bounding_box()
        assert body.locator(":scope > p").first.text_content().startswith(f"Answer {n}: start here")
        # the first lines of every answer are on screen without scrolling
        assert 0 <= box["x"] and box["x"] + box["width"] <= 1280, box
        assert first_line["y"] >= 0 and first_line["y"] + first_line["height"] * 3 <= 800, (n, first_line)
        assert box["height"] >= 150, box
    assert page.evaluate("() => window.scrollY") == 0
    # guidelines rendered beside, the judge's flag with its detail
    assert page.text_content("#guidelines strong") == "correct"
    assert page.text_content("#judge-flags [data-flag='length_bias']") == "length_bias: the longest answer ranked first in 3 of 4 orders"
    assert page.locator("#completions pre code.language-python").count() == 4
    assert "辞書" in page.text_content(f"article[data-completion-id='{cids[0]}'] .completion-text")
    shot(page, "review-k4-long-grid")

    # synchronized scrolling: one pane scrolled to its end takes the others to theirs
    first = f"article[data-completion-id='{cids[0]}'] .completion-text"
    page.eval_on_selector(first, "el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_function(f"() => document.querySelector(\"article[data-completion-id='{cids[3]}'] .completion-text\").scrollTop > 100")
    page.eval_on_selector(first, "el => { el.scrollTop = 0; }")

    page.select_option("#layout", "columns")
    page.wait_for_selector("#completions.layout-columns")
    tops = [page.locator(f"article[data-completion-id='{c}']").bounding_box()["y"] for c in cids]
    assert max(tops) - min(tops) < 2  # one row
    shot(page, "review-k4-long-columns")
    page.select_option("#layout", "tabs")
    page.wait_for_selector("#tabs:not([hidden])")
    assert page.locator("#completions article:not([hidden])").count() == 1
    page.focus("#tab-1")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector(f"article[data-completion-id='{cids[1]}']:not([hidden])")
    shot(page, "review-k4-long-tabs")
    ann.press("g")  # the side panel folds away
    page.wait_for_selector("#side[hidden]", state="attached")
    ann.press("g")
    page.select_option("#layout", "grid")


def test_page_works_at_1024_px(reviewers, factory):
    ds = factory.dataset("narrow", guidelines="Be **brief**.")
    pid, cids, _ = factory.judged_item(ds, "A long prompt " * 40, [long_answer(i) for i in range(1, 5)])
    ann = reviewers("ann", viewport={"width": 1024, "height": 768})
    ann.open(ds)
    ann.wait_for_item(pid)
    page = ann.page
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1024
    for sel in ["#approve", "#reject", "#skip", "#undo", "#side", *[f"article[data-completion-id='{c}'] .completion-text" for c in cids]]:
        box = page.locator(sel).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1024, (sel, box)
    shot(page, "review-1024")


def test_comments_are_shown_and_entered(reviewers, factory):
    ds = factory.dataset("comments")
    pid, (_, c2), _ = factory.judged_item(ds, "Say hi", ["hi", "hello"])
    ann = reviewers("ann").open(ds)
    page = ann.page
    ann.wait_for_item(pid)
    page.locator("#comments", has_text="No comments yet.").wait_for()
    page.click(f"article[data-completion-id='{c2}']")  # pick #2, then c comments on it
    ann.press("c")
    assert page.evaluate("() => document.activeElement.id") == "comment-text"
    assert page.input_value("#comment-target") == str(c2)
    page.fill("#comment-text", "<b>too</b> formal")
    page.click("#comment-form button[type=submit]")
    page.locator("#comments li", has_text="too").wait_for()
    page.select_option("#comment-target", "")
    page.fill("#comment-text", "prompt is ambiguous")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.locator("#comments li", has_text="prompt is ambiguous").wait_for()
    texts = page.locator("#comments .comment-text").all_text_contents()
    metas = page.locator("#comments .comment-meta").all_text_contents()
    assert texts == ["<b>too</b> formal", "prompt is ambiguous"]
    assert "on answer #2" in metas[0] and "on the item" in metas[1] and metas[0].startswith("ann")
    assert page.locator("#comments b").count() == 0
    assert factory.rows("SELECT target_type, target_id, comment FROM review_event WHERE action = 'comment' ORDER BY id") == [
        ("completion", c2, "<b>too</b> formal"), ("prompt", pid, "prompt is ambiguous")]
    page.locator("#my-progress", has_text="you: 0 approved, 0 rejected, 0 rankings, 0 edits, 2 comments").wait_for()


def test_identical_and_near_identical_answers_are_flagged(reviewers, factory):
    ds = factory.dataset("dupes")
    base = "The capital of France is Paris, a city on the Seine with about two million people living in it today."
    pid, cids, _ = factory.judged_item(ds, "Capital?", [base, base, base.replace("today", "now"), "Lyon."])
    ann = reviewers("ann").open(ds)
    page = ann.page
    ann.wait_for_item(pid)
    warning = page.text_content("#similar-warning")
    assert "Answers #1 and #2 are identical." in warning
    assert "#1 and #3 are nearly identical" in warning and "#4" not in warning
    assert page.text_content(f"article[data-completion-id='{cids[0]}'] .similar-chips") == "same as #2, #3"
    assert page.text_content(f"article[data-completion-id='{cids[3]}'] .similar-chips") == ""


def test_item_url_opens_that_item_and_the_edit_diff_is_word_level(reviewers, factory):
    ds = factory.dataset("urls")
    factory.judged_item(ds, "first in the queue", ["a", "b"])
    pid, (c1, _), _ = factory.judged_item(ds, "deep link", ["The quick brown fox jumps.", "A slow dog."])
    ann = reviewers("ann")
    page = ann.page
    page.goto(f"/ui/datasets/{ds}/items/{pid}")
    ann.wait_for_item(pid)
    assert factory.scalar("SELECT lease_holder FROM prompt WHERE id = :p", p=pid) == "ann"
    page.click(f"article[data-completion-id='{c1}'] button:has-text('Edit')")
    page.wait_for_selector("#edit-dialog[open]")
    page.fill("#edit-text", "The quick red fox leaps.")
    page.locator("#edit-diff del", has_text="brown").wait_for()
    assert page.locator("#edit-diff del").all_text_contents() == ["brown", "jumps"]
    assert page.locator("#edit-diff ins").all_text_contents() == ["red", "leaps"]
    page.click("#edit-save")
    card = f"article[data-completion-id='{c1}']"
    page.wait_for_selector(f"{card} .completion-text.diff")
    shot(page, "review-edit-diff")
    page.click(f"{card} .diff-toggle")  # the edited text, rendered
    page.wait_for_selector(f"{card} .completion-text.md")
    assert page.text_content(f"{card} .completion-text").strip() == "The quick red fox leaps."
    # a reload stays on the item
    page.reload()
    ann.wait_for_item(pid)
    # someone else's held item opens read-only with the reason
    other, _, _ = factory.judged_item(ds, "held", ["a", "b"])
    factory.execute("UPDATE prompt SET lease_holder = 'bob', lease_expires_at = now() + interval '1 hour' WHERE id = :p", p=other)
    page.goto(f"/ui/datasets/{ds}/items/{other}")
    ann.wait_for_item(other)
    page.locator("#message", has_text="being reviewed by 'bob'").wait_for()
    ann.errors.clear()  # the refused claim is logged by the browser


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


def test_undo_walks_back(reviewers, factory):
    ds = factory.dataset("undo")
    pid, (c1, c2, c3), _ = factory.judged_item(ds, "Order these", ["first", "second", "third"])
    ann = reviewers("ann").open(ds)
    ann.wait_for_item(pid)
    page = ann.page
    ann.press("3", "1")
    ann.press("a")
    page.wait_for_selector("#empty:not([hidden])")
    assert factory.rows("SELECT completion_ids, ranks FROM ranking WHERE ranker_kind = 'human'") == [([c3, c1, c2], [1, 2, 3])]
    ann.press("k")  # back to it
    ann.wait_for_item(pid)
    ann.press("u")  # and undo the approval
    page.locator("#message", has_text="undid approve").wait_for()
    assert factory.scalar("SELECT review_status FROM prompt") == "pending"
    assert ann.order() == [["#3"], ["#1"], ["#2"]]  # my ranking is still on record


@pytest.fixture
def with_api_keys(live_server):
    """The live server with API keys configured (settings are read per request)."""
    plain = live_server.app.state.settings
    live_server.app.state.settings = plain.model_copy(update={"api_keys": {"key-of-ann": "ann"}})
    yield
    live_server.app.state.settings = plain


def test_sign_in_with_an_api_key(browser, live_server, with_api_keys, factory):
    ds = factory.dataset("keyed")
    pid, _, _ = factory.judged_item(ds, "q", ["a", "b"])
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.goto(f"/ui/datasets/{ds}/review")  # not signed in: sign in first, then back here
        page.wait_for_url("**/ui/?next=*")
        assert page.get_attribute("#credential", "type") == "password"
        page.fill("#credential", "wrong")
        page.click("#sign-in-form button[type=submit]")
        page.locator("#sign-in-error", has_text="not valid").wait_for()
        page.fill("#credential", "key-of-ann")
        page.click("#sign-in-form button[type=submit]")
        page.wait_for_selector(f"#item[data-prompt-id='{pid}']:not([hidden])")
        page.locator("#who", has_text="signed in as ann").wait_for()
        # the key went to the server once: the page keeps an HttpOnly, SameSite=Strict session cookie
        assert "key-of-ann" not in page.evaluate("() => JSON.stringify(sessionStorage) + document.cookie")
        cookie = next(c for c in context.cookies() if c["name"] == "forge_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
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


def test_page_filters_narrow_the_queue(reviewers, factory):
    ds = factory.dataset("filters")
    factory.judged_item(ds, "older, untagged", ["a", "b"])
    math, _, _ = factory.judged_item(ds, "newer, tagged", ["a", "b"], prompt_kw={"tags": ["math"]})
    ann = reviewers("ann")
    ann.page.goto(f"/ui/datasets/{ds}/review?tag=math")
    ann.wait_for_item(math)
    assert ann.page.url.endswith(f"/items/{math}?tag=math")


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
