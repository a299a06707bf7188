"""Issue 10 finding 4, over real HTTP: bodies are bounded while they stream in (before any
parsing or auth), imports have their own larger bound, nesting is a row's error, and each key
has a request rate."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer

KEY = "k" * 32
AUTH = {"authorization": f"Bearer {KEY}"}
BODY_LIMIT, IMPORT_LIMIT = 64 * 1024, 256 * 1024


@pytest.fixture(scope="module")
def server(base_settings) -> Iterator[LiveServer]:
    settings = base_settings.model_copy(
        update={"api_keys": {KEY: "alice"}, "max_body_bytes": BODY_LIMIT, "max_import_bytes": IMPORT_LIMIT}
    )
    with LiveServer(settings) as s:
        yield s


@pytest.fixture
def api(server, clean_db) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as c:
        yield c


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_21_mb_body_without_a_key_is_refused_before_it_is_read(server, api):
    """On old main the server read all 21 MB (and grew by about 500 MB parsing it) before its 401."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
        s.sendall(b"Content-Length: 22020096\r\n\r\n[")
        answer = s.recv(65536).decode()  # no body sent: an answer now means nothing was waited for
    assert answer.startswith("HTTP/1.1 413"), answer
    assert json.loads(answer.split("\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # 21 MB of JSON, sent chunked (no Content-Length to refuse up front)
        yield b'{"name": "x", "description": "'
        for _ in range(21 * 16):
            yield b"a" * 65536
        yield b'"}'

    before = rss_kib()
    r = api.post("/datasets", content=chunks(), headers={"content-type": "application/json"})
    grown = rss_kib() - before
    print(f"\n21 MB chunked body, no key: HTTP {r.status_code}, server+client RSS {before} -> {before + grown} KiB")
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert grown < 10 * 1024


def test_imports_have_a_larger_limit_enforced_while_streaming(api):
    ds = api.post("/datasets", json={"name": "d"}, headers=AUTH).json()["id"]
    # ~150 KiB: over the body limit, under the import one
    rows = [{"prompt": f"prompt number {i} " + "x" * 80} for i in range(1500)]
    body = json.dumps(rows).encode()
    assert BODY_LIMIT < len(body) < IMPORT_LIMIT
    assert api.post("/datasets", content=body, headers={**AUTH, "content-type": "application/json"}).status_code == 413
    r = api.post(f"/datasets/{ds}/prompts/import", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 200 and r.json()["inserted"] == 1500, r.text
    big = b"\n".join(json.dumps({"prompt": f"another {i} " + "y" * 80}).encode() for i in range(3000))  # ~300 KiB
    r = api.post(f"/datasets/{ds}/prompts/import", files={"file": ("big.jsonl", big)}, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
    r = api.post(
        f"/datasets/{ds}/prompts/import", content=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
        headers={**AUTH, "content-type": "application/x-ndjson"},
    )
    assert r.status_code == 413
    assert api.get(f"/datasets/{ds}", headers=AUTH).json()["counts"]["prompts"] == 1500


def test_a_row_nested_5000_deep_is_that_rows_error(api):
    """On old main this answered 500 and lost the import."""
    ds = api.post("/datasets", json={"name": "d"}, headers=AUTH).json()["id"]
    deep = "[" * 5000 + "]" * 5000
    array = '["first", {"prompt": "second", "meta": {"x": ' + deep + '}}, "third"]'
    r = api.post(f"/datasets/{ds}/prompts/import", content=array, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["inserted"], report["invalid"]) == (2, 1) and report["errors"][0]["line"] == 2
    assert "nested deeper than 64" in report["errors"][0]["message"]
    lines = '{"prompt": "a"}\n{"prompt": "b", "meta": ' + deep + "}\n" + '{"prompt": "c", "meta": "' + "[" * 3000 + '"}\n'
    r = api.post(f"/datasets/{ds}/prompts/import", content=lines, headers={**AUTH, "content-type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json()["invalid"] == 2 and r.json()["inserted"] == 1, r.text
    as_json = {**AUTH, "content-type": "application/json"}
    r = api.post(f"/datasets/{ds}/prompts/import", content='[1, {"prompt": ', headers=as_json)
    assert r.status_code == 422 and "invalid JSON" in r.json()["error"]["message"]
    # one prompt or a dataset's settings nested too deep: 422, not a 500 when they are stored
    nested = '{"a": ' + "[" * 900 + "]" * 900 + "}"
    r = api.post(f"/datasets/{ds}/prompts", content='{"text": "q", "meta": ' + nested + "}", headers=as_json)
    assert r.status_code == 422 and "nested deeper than 64" in r.json()["error"]["message"], r.text
    r = api.patch(f"/datasets/{ds}", content='{"settings": ' + nested + "}", headers=as_json)
    assert r.status_code == 422 and "nested deeper than 64" in r.json()["error"]["message"], r.text


@pytest.fixture
def limited(base_settings, clean_db) -> Iterator[LiveServer]:
    keys = {KEY: "alice", "o" * 32: "bob"}
    with LiveServer(base_settings.model_copy(update={"api_keys": keys, "rate_limit": "5/minute"})) as s:
        yield s


def test_each_key_has_a_request_rate(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as c:
        assert [c.get("/api/v1/datasets", headers=AUTH).status_code for _ in range(5)] == [200] * 5
        r = c.get("/api/v1/datasets", headers=AUTH)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert c.get("/api/v1/datasets", headers={"authorization": "Bearer " + "o" * 32}).status_code == 200
        assert c.get("/healthz").status_code == 200  # only the API is limited
        t0 = time.monotonic()
        assert c.post("/api/v1/datasets", content=b"x" * 10, headers={**AUTH, "content-type": "application/json"}).status_code == 429
        assert time.monotonic() - t0 < 5
