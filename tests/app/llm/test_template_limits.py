"""Issue 10 finding 8: a dataset's judge template cannot freeze the server. On old main,
`range(100000)` loops and huge string products rendered on the event loop; nested loops held
it for minutes."""

from __future__ import annotations

import threading
import time

import httpx

from .conftest import make_dataset


def _template(user: str) -> dict:
    return {"judge_template": {"version": "evil", "system": "Rank.", "user": user}}


def test_loops_and_string_products_are_refused_quickly(api, sql):
    for name, user, reason in (
        ("range", "{% for i in range(100000) %}x{% endfor %}{{ data }}", "range() is limited to 1000"),
        ("product", "{{ 'x' * 1000000000 }}{{ data }}", "limited to 1000000"),
        ("filter", "{{ 'x' | center(1000000000) }}{{ data }}", "MiB"),
        ("recursion", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}{{ data }}", "recurses"),
    ):
        ds, _ = make_dataset(api, sql, name=name, n_prompts=1, **_template(user))
        t0 = time.monotonic()
        r = api.post(f"/datasets/{ds}/runs", json={"kind": "judge", "budget": "1"})
        assert r.status_code == 422 and reason in r.json()["error"]["message"], (name, r.text)
        assert time.monotonic() - t0 < 4


def test_a_template_that_loops_for_ever_is_stopped_while_the_server_keeps_answering(api, sql, forge_server):
    nested = "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}"
    ds, _ = make_dataset(api, sql, n_prompts=1, **_template(nested + "{{ data }}"))
    answer: dict = {}

    def create() -> None:
        t0 = time.monotonic()
        answer["response"] = api.post(f"/datasets/{ds}/runs", json={"kind": "judge", "budget": "1"})
        answer["took"] = time.monotonic() - t0

    worker = threading.Thread(target=create)
    worker.start()
    time.sleep(0.5)
    with httpx.Client(base_url=forge_server.url, timeout=10) as other:
        latencies = []
        while worker.is_alive():
            t0 = time.monotonic()
            assert other.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - t0)
            time.sleep(0.2)
    worker.join()
    r = answer["response"]
    assert r.status_code == 422 and "longer than 5 s" in r.json()["error"]["message"], r.text
    assert answer["took"] < 15 and latencies and max(latencies) < 1.0, (answer["took"], latencies)
