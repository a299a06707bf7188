"""Browser helpers shared by the console's tests: headless Chromium (Debian's, driven by
Playwright), a signed-in reviewer per browser context, and screenshots at 1280x800 written to
test-artifacts/screenshots/ (git-ignored) for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def shot(page, name: str) -> Path:
    """A screenshot of what the viewport shows now, as test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("() => window.scrollTo(0, 0)")  # the page as it opens, not where the last click scrolled it
    page.screenshot(path=str(path))
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Reviewer:
    """One browser context (its own session storage) signed in under a name."""

    def __init__(self, browser, base: str, name: str, viewport: dict | None = None):
        self.context = browser.new_context(base_url=base, viewport=viewport or VIEWPORT, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.page.goto("/ui/")
        self.page.fill("#credential", name)
        self.page.click("#sign-in-form button[type=submit]")
        self.page.wait_for_selector("#datasets:not([hidden])")
        assert self.page.text_content("#who") == f"signed in as {name} (admin)"  # no key exists: the local admin

    def open(self, dataset_id: int):
        """From the datasets table to the dataset's review screen."""
        self.page.click(f"tr[data-dataset-id='{dataset_id}'] a[href='/ui/datasets/{dataset_id}/review']")
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

    def order(self) -> list[list[str]]:
        """The ranking on screen as buckets of card labels, best first: [["#3", "#4"], ["#2"], ...]."""
        return self.page.locator("#order li.bucket").evaluate_all(
            "els => els.map(li => [...li.querySelectorAll('.rank-chip')].map(b => b.textContent))")

    def close(self):
        self.context.close()


@pytest.fixture
def reviewers(browser, live_server, clean_db):
    made: list[Reviewer] = []

    def make(name: str, **kw) -> Reviewer:
        made.append(Reviewer(browser, live_server.url, name, **kw))
        return made[-1]

    yield make
    for r in made:
        assert r.errors == [], r.errors
        r.close()


def long_answer(n: int) -> str:
    """A long markdown answer the way models write them: headings, a table, a code fence,
    Japanese prose, long paragraphs."""
    rows = "\n".join(f"| {name} | {n * 10 + i} ms | {'yes' if i % 2 else 'no'} |" for i, name in enumerate(["dict", "list", "set", "tuple", "deque"]))
    para = ("Python の辞書はハッシュテーブルで実装されており、平均的な検索は O(1) です。 " * 4
            + "A list scans every element, so a membership test is O(n); for large collections that difference dominates. " * 3)
    return (
        f"Answer {n}: start here. この回答は {n} 番目です。\n\n"
        f"## Measurements {n}\n\n| structure | lookup | hashable |\n|---|---:|---|\n{rows}\n\n"
        f"{para}\n\n"
        "```python\n"
        f"def lookup_{n}(table: dict[str, int], key: str) -> int | None:\n"
        "    # average O(1): one hash, one probe\n"
        "    return table.get(key)\n"
        "```\n\n"
        + "\n\n".join(f"{i}. Step {i} of answer {n}: {para[:160]}" for i in range(1, 12))
        + "\n\n> 注意: measure before you optimise.\n"
    )
