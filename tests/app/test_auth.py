"""Keys, sessions and the doors around them: hashed keys that expire and are revoked, the review
page's session cookie with its CSRF token, X-Actor only without keys, writes that must say JSON,
cross-site writes and foreign Host headers refused."""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings

ADMIN_KEY = "admin-" + "k" * 40
API = "/api/v1"
ROOT = {"Authorization": f"Bearer {ADMIN_KEY}"}


@asynccontextmanager
async def serving(settings: Settings, base_url: str = "http://localhost", client=("127.0.0.1", 50000)):
    from app.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            yield c


@pytest.fixture
async def keyed(base_settings, clean_db):
    async with serving(base_settings.model_copy(update={"api_keys": {ADMIN_KEY: "root"}})) as c:
        yield c


@pytest.fixture
async def open_(base_settings, clean_db):
    """No key anywhere: the local single-user mode."""
    async with serving(base_settings) as c:
        yield c


async def _key(c, role="annotator", datasets=(), **extra) -> dict:
    r = await c.post(f"{API}/keys", json={"name": f"{role}-1", "role": role, "datasets": list(datasets), **extra}, headers=ROOT)
    assert r.status_code == 201, r.text
    return r.json()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


async def test_missing_and_unknown_keys_are_401(keyed):
    r = await keyed.post(f"{API}/datasets", json={"name": "x"})
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
    r = await keyed.post(f"{API}/datasets/1/prompts", json={"text": "x"}, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "unknown API key"
    r = await keyed.get(f"{API}/datasets", headers={"authorization": f"Basic {ADMIN_KEY}"})
    assert r.status_code == 401


async def test_key_names_the_actor_and_x_actor_is_ignored(keyed, factory):
    h = {**ROOT, "x-actor": "mallory"}
    ds = (await keyed.post(f"{API}/datasets", json={"name": "x"}, headers=h)).json()
    r = await keyed.post(f"{API}/datasets/{ds['id']}/prompts", json={"text": "q"}, headers=h)
    assert r.status_code == 201
    assert factory.rows("SELECT actor FROM review_event") == [("root",)]


async def test_a_key_is_random_shown_once_and_stored_as_its_sha256(keyed, factory):
    ds = factory.dataset("d")
    made = await _key(keyed, "viewer", [ds])
    key = made["key"]
    assert key.startswith("rf_") and len(key) >= 40 and made["prefix"] == key[:10]
    assert made["datasets"] == [ds] and made["created_by"] == "root" and made["revoked_at"] is None
    assert (await _key(keyed, "viewer", [ds]))["key"] != key
    stored = factory.rows("SELECT key_hash, prefix FROM api_key WHERE id = :i", i=made["id"])
    assert stored == [(hashlib.sha256(key.encode()).hexdigest(), key[:10])]
    listed = (await keyed.get(f"{API}/keys", headers=ROOT)).json()
    assert len(listed["data"]) == 2 and listed["next_cursor"] is None and key not in str(listed) and "key" not in listed["data"][0]
    assert (await keyed.get(f"{API}/me", headers=bearer(key))).json()["role"] == "viewer"


async def test_key_rules(keyed, factory):
    ds = factory.dataset("d")
    for body, fragment in (
        ({"name": "a", "role": "admin", "datasets": [ds]}, "admin keys see every dataset"),
        ({"name": "a", "role": "viewer"}, "needs at least one dataset"),
        ({"name": "a", "role": "viewer", "datasets": [ds + 99]}, f"dataset {ds + 99} does not exist"),
        ({"name": "a", "role": "owner", "datasets": [ds]}, "role"),
        ({"name": "", "role": "admin"}, "name"),
        ({"name": "a", "role": "admin", "expires_in_days": 0}, "expires_in_days"),
    ):
        r = await keyed.post(f"{API}/keys", json=body, headers=ROOT)
        assert r.status_code in (404, 422) and fragment in r.json()["error"]["message"], (body, r.text)
    assert factory.scalar("SELECT count(*) FROM api_key") == 0


async def test_revoked_and_expired_keys_are_401(keyed, factory):
    ds = factory.dataset("d")
    revoked, expired = await _key(keyed, "annotator", [ds]), await _key(keyed, "viewer", [ds], expires_in_days=1)
    for k in (revoked, expired):
        assert (await keyed.get(f"{API}/datasets", headers=bearer(k["key"]))).status_code == 200
    r = await keyed.post(f"{API}/keys/{revoked['id']}/revoke", json={}, headers=ROOT)
    assert r.status_code == 200 and r.json()["revoked_at"] and r.json()["revoked_by"] == "root"
    assert (await keyed.post(f"{API}/keys/{revoked['id']}/revoke", json={}, headers=ROOT)).json()["revoked_at"] == r.json()["revoked_at"]
    r = await keyed.get(f"{API}/datasets", headers=bearer(revoked["key"]))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    factory.execute("UPDATE api_key SET expires_at = now() - interval '1 second' WHERE id = :i", i=expired["id"])
    r = await keyed.get(f"{API}/datasets", headers=bearer(expired["key"]))
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    assert (await keyed.post(f"{API}/keys/999/revoke", json={}, headers=ROOT)).status_code == 404


async def test_keys_are_the_admins_business(keyed, factory):
    ds = factory.dataset("d")
    annotator = await _key(keyed, "annotator", [ds])
    for method, path in (("GET", "/keys"), ("POST", "/keys"), ("POST", f"/keys/{annotator['id']}/revoke")):
        r = await keyed.request(method, API + path, json={} if method == "POST" else None, headers=bearer(annotator["key"]))
        assert r.status_code == 403, (method, path)
    admin = await _key(keyed, "admin")
    assert (await keyed.get(f"{API}/keys", headers=bearer(admin["key"]))).status_code == 200


async def test_patch_prompt_is_the_admins_and_respects_a_reviewers_lease(keyed, factory):
    """Finding 2: PATCH /prompts/{id} set review_status and any flag string while another
    reviewer held the lease."""
    ds = factory.dataset("d")
    pid, _, _ = factory.judged_item(ds, "q", ["a", "b"])
    annotator = await _key(keyed, "annotator", [ds])
    r = await keyed.patch(f"{API}/prompts/{pid}", json={"review_status": "approved"}, headers=bearer(annotator["key"]))
    assert r.status_code == 403
    assert (await keyed.get(f"{API}/datasets/{ds}/review/next", headers=bearer(annotator["key"]))).json()["item"]
    r = await keyed.patch(f"{API}/prompts/{pid}", json={"review_status": "approved"}, headers=ROOT)
    assert r.status_code == 409 and "annotator-1" in r.json()["error"]["message"]
    r = await keyed.patch(f"{API}/prompts/{pid}", json={"flag_reasons": ["<script>"]}, headers=ROOT)
    assert r.status_code == 422
    assert factory.scalar("SELECT review_status FROM prompt WHERE id = :p", p=pid) == "pending"


# --- the review page's session ------------------------------------------------------------------


async def test_session_cookie_is_httponly_strict_and_writes_need_the_csrf_token(keyed, factory):
    ds = factory.dataset("d")
    pid, _, _ = factory.judged_item(ds, "q", ["a", "b"])
    annotator = await _key(keyed, "annotator", [ds])
    assert (await keyed.post(f"{API}/session", json={"key": "rf_wrong"})).status_code == 401
    r = await keyed.post(f"{API}/session", json={"key": annotator["key"]})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("forge_session=") and "httponly" in cookie and "samesite=strict" in cookie
    assert annotator["key"] not in r.headers["set-cookie"]
    token = r.json()["csrf_token"]
    assert r.json()["actor"] == "annotator-1" and token
    me = (await keyed.get(f"{API}/me")).json()  # the cookie alone signs reads in
    assert me["actor"] == "annotator-1" and me["csrf_token"] == token
    await keyed.get(f"{API}/datasets/{ds}/review/next")
    r = await keyed.post(f"{API}/prompts/{pid}/review/comments", json={"text": "hi"})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]["message"]
    r = await keyed.post(f"{API}/prompts/{pid}/review/comments", json={"text": "hi"}, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = await keyed.post(f"{API}/prompts/{pid}/review/comments", json={"text": "hi"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201 and r.json()["actor"] == "annotator-1"
    # revoking the key ends its sessions at once
    await keyed.post(f"{API}/keys/{annotator['id']}/revoke", json={}, headers=ROOT)
    r = await keyed.get(f"{API}/me")
    assert r.status_code == 401 and "forge_session=null" in r.headers.get("set-cookie", "")


async def test_a_forged_or_signed_out_session_is_no_session(keyed, factory):
    admin = await _key(keyed, "admin")
    assert (await keyed.post(f"{API}/session", json={"key": admin["key"]})).status_code == 200
    assert (await keyed.get(f"{API}/me")).status_code == 200
    assert (await keyed.delete(f"{API}/session")).status_code == 204
    assert (await keyed.get(f"{API}/me")).status_code == 401
    keyed.cookies.set("forge_session", "eyJrZXkiOiAiYWJjIn0=.forged.signature")
    assert (await keyed.get(f"{API}/me")).status_code == 401


async def test_environment_keys_sign_in_too(keyed):
    r = await keyed.post(f"{API}/session", json={"key": ADMIN_KEY})
    assert r.status_code == 200 and r.json()["role"] == "admin" and r.json()["datasets"] is None


# --- no keys: X-Actor, from this machine only ---------------------------------------------------


async def test_without_keys_x_actor_names_the_actor_until_a_key_exists(open_, factory):
    ds = (await open_.post(f"{API}/datasets", json={"name": "x"}, headers={"x-actor": "ann"})).json()
    await open_.post(f"{API}/datasets/{ds['id']}/prompts", json={"text": "q"}, headers={"x-actor": "ann"})
    assert factory.rows("SELECT actor FROM review_event") == [("ann",)]
    assert (await open_.get(f"{API}/me")).json() == {"actor": "local", "role": "admin", "datasets": None, "csrf_token": None}
    # the first key (made on the command line, say) ends the open mode, even once revoked
    r = await open_.post(f"{API}/keys", json={"name": "root", "role": "admin"}, headers={"x-actor": "ann"})
    assert r.status_code == 201
    assert (await open_.get(f"{API}/datasets", headers={"x-actor": "ann"})).status_code == 401
    key = r.json()["key"]
    await open_.post(f"{API}/keys/{r.json()['id']}/revoke", json={}, headers=bearer(key))
    assert (await open_.get(f"{API}/datasets", headers={"x-actor": "ann"})).status_code == 401


async def test_a_key_made_elsewhere_ends_the_open_mode_within_a_second(open_, factory):
    """The open mode's "no key" is remembered for OpenMode.ttl_s (1 s) instead of a query per
    request; a key another process makes (`rlhf-forge keys create`) is enforced after that."""
    import asyncio
    import time

    from app.models import ApiKey

    assert (await open_.get(f"{API}/datasets", headers={"x-actor": "ann"})).status_code == 200
    factory._add(ApiKey(name="cli", role="admin", key_hash=hashlib.sha256(b"elsewhere").hexdigest(), prefix="rf_elsewh", created_by="cli"))
    made = time.monotonic()
    while (r := await open_.get(f"{API}/datasets", headers={"x-actor": "ann"})).status_code == 200:
        assert time.monotonic() - made < 1.5, "the open mode outlived its second"
        await asyncio.sleep(0.05)
    assert r.status_code == 401


async def test_without_keys_only_this_machine_is_served(base_settings, clean_db):
    async with serving(base_settings, client=("10.1.2.3", 40000)) as c:
        r = await c.get(f"{API}/datasets", headers={"x-actor": "eve"})
        assert r.status_code == 403 and "only requests from this machine" in r.json()["error"]["message"]
    async with serving(base_settings.model_copy(update={"environment": "production"})) as c:
        assert (await c.get(f"{API}/datasets")).status_code == 401


def test_production_refuses_placeholder_keys():
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production", api_keys={"changeme": "a"})
    assert Settings(environment="production", api_keys={ADMIN_KEY: "a"}).api_keys == {ADMIN_KEY: "a"}
    public = Settings(api_keys={ADMIN_KEY: "a"}, session_secret="s" * 32).public()
    assert "api_keys" not in public and public["session_secret"] == "**********"


# --- finding 3: cross-site writes and DNS rebinding -----------------------------------------------


async def test_a_cross_site_text_plain_form_cannot_import(open_, factory):
    """A page on any site can post a text/plain form to 127.0.0.1 without asking first; the body
    is whatever the form says, here a JSON array of prompts, and ?format=json in its action URL
    told the import how to read it."""
    ds = factory.dataset("d")
    body = b'["planted prompt", "another"]'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "text/plain; charset=utf-8"):
        r = await open_.post(f"{API}/datasets/{ds}/prompts/import?format=json", content=body, headers={"content-type": ctype})
        assert r.status_code == 415, (ctype, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type"
    r = await open_.post(f"{API}/datasets/{ds}/prompts", content=b'{"text": "x"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert factory.scalar("SELECT count(*) FROM prompt") == 0
    # the import's own types still work, and JSON everywhere
    r = await open_.post(f"{API}/datasets/{ds}/prompts/import", content=b'"one"\n', headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200 and r.json()["inserted"] == 1
    r = await open_.post(f"{API}/datasets/{ds}/prompts", content=b"prompt\nx\n", headers={"content-type": "text/csv"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]


async def test_writes_a_browser_marks_as_cross_site_are_refused(open_, factory):
    ds = factory.dataset("d")
    files = {"file": ("p.jsonl", b'"planted"\n', "application/x-ndjson")}
    url = f"{API}/datasets/{ds}/prompts/import"
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
                    {"origin": "null"}, {"origin": "http://localhost:3000"}):
        r = await open_.post(url, files=files, headers=headers)
        assert r.status_code == 403, (headers, r.text)
    assert factory.scalar("SELECT count(*) FROM prompt") == 0
    r = await open_.post(url, files=files, headers={"origin": "http://localhost", "sec-fetch-site": "same-origin"})
    assert r.status_code == 200 and r.json()["inserted"] == 1


async def test_a_foreign_host_header_is_refused(base_settings, clean_db, monkeypatch):
    """DNS rebinding: evil.example resolves to 127.0.0.1, so its page talks to us with its own
    Host header."""
    async with serving(base_settings, base_url="http://evil.example") as c:
        assert (await c.get(f"{API}/datasets")).status_code == 400
        assert (await c.get(f"{API}/datasets", headers={"host": "127.0.0.1:8000"})).status_code == 200
    monkeypatch.setenv("FORGE_ALLOWED_HOSTS", "forge.internal, *.example.org")
    hosts = Settings().allowed_hosts
    assert hosts == ["forge.internal", "*.example.org"]
    async with serving(base_settings.model_copy(update={"allowed_hosts": hosts}), base_url="http://a.example.org") as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/healthz", headers={"host": "localhost"})).status_code == 400


async def test_a_bodyless_write_needs_no_type_but_must_come_from_here(open_, factory):
    ds = factory.dataset("d")
    pid, _, _ = factory.judged_item(ds, "q", ["a", "b"])
    url = f"{API}/prompts/{pid}/review/claim"
    assert (await open_.post(url, headers={"origin": "http://evil.example"})).status_code == 403
    assert (await open_.post(url, headers={"content-type": "text/plain"})).status_code == 415
    assert (await open_.post(url)).status_code == 200


async def test_metrics_need_a_key_when_keys_are_configured(keyed):
    assert (await keyed.get("/metrics")).status_code == 401
    r = await keyed.get("/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200 and "forge_http_request_duration_seconds" in r.text


async def test_the_open_mode_is_asked_once_by_requests_arriving_together(monkeypatch):
    """When "no key" expires, the requests that arrive while one reads the answer take that
    answer instead of each asking; when the one asking fails, the others ask for themselves."""
    import asyncio

    from app.auth import repository
    from app.auth.service import OpenMode

    asked: list[int] = []

    async def any_key(session):
        asked.append(1)
        await asyncio.sleep(0.05)
        if len(asked) == 1 and fail:
            raise RuntimeError("the database went away")
        return False

    monkeypatch.setattr(repository, "any_key", any_key)
    settings = Settings(api_keys={})
    fail = False
    mode = OpenMode(ttl_s=60)
    assert await asyncio.gather(*(mode.keys_configured(None, settings) for _ in range(20))) == [False] * 20
    assert len(asked) == 1
    assert await mode.keys_configured(None, settings) is False and len(asked) == 1  # kept for ttl_s

    asked.clear()
    fail = True
    mode = OpenMode(ttl_s=60)
    got = await asyncio.gather(*(mode.keys_configured(None, settings) for _ in range(5)), return_exceptions=True)
    assert isinstance(got[0], RuntimeError) and got[1:] == [False] * 4
    assert len(asked) == 2  # the first failed; the next waiting asked, the rest took its answer
