"""The smaller items of issue 10, finding 9, on the service's side: a cursor of non-ASCII digits
is a 422 (was a 500), every response carries nosniff and its neighbours (HSTS over HTTPS), export
responses never show a server path, and a dataset's export files go with it."""

from __future__ import annotations

import httpx
import pytest

from app import db
from app.exports import tasks
from app.main import create_app


@pytest.mark.parametrize("cursor", ["²", "٣", "１", "12a", "-1", "99999999999999999999"])
async def test_a_cursor_that_is_not_one_is_a_422(client, cursor):
    ds = (await client.post("/api/v1/datasets", json={"name": "c"})).json()["id"]
    for path in (f"/api/v1/datasets/{ds}/prompts", f"/api/v1/datasets/{ds}/completions", f"/api/v1/datasets/{ds}/rankings"):
        r = await client.get(path, params={"cursor": cursor})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["details"]["errors"][0]["loc"] == "query.cursor"
    assert (await client.get(f"/api/v1/datasets/{ds}/prompts", params={"cursor": "0"})).status_code == 200


async def test_every_response_carries_the_security_headers(settings):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for scheme in ("http", "https"):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://localhost") as c:
                for r in (await c.get("/healthz"), await c.get("/api/v1/datasets/999"), await c.get("/nowhere"),
                          await c.get("/api/v1/datasets", params={"limit": "x"}),
                          await c.get("/healthz", headers={"host": "evil.example"})):  # refused by the Host check
                    assert r.headers["x-content-type-options"] == "nosniff", r.url
                    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
                    assert ("strict-transport-security" in r.headers) == (scheme == "https")


async def test_export_responses_show_no_server_path_and_the_files_go_with_the_dataset(client, settings, engine):
    ds = (await client.post("/api/v1/datasets", json={"name": "paths"})).json()["id"]
    for i in range(3):
        r = await client.post(f"/api/v1/datasets/{ds}/prompts", json={"text": f"question {i}?"})
        assert r.status_code == 201
    created = await client.post(f"/api/v1/datasets/{ds}/exports", json={"formats": ["rl"], "filters": {"status": ["pending", "approved"]}})
    assert created.status_code == 202, created.text
    await tasks.render(created.json()["id"], sessions=db.session_factory(engine), settings=settings)
    folder = settings.data_dir / "exports" / str(ds)
    assert (folder / "v1" / "manifest.json").is_file()
    for r in (await client.get(f"/api/v1/datasets/{ds}/exports/1"), await client.get(f"/api/v1/datasets/{ds}/exports")):
        assert r.status_code == 200 and str(settings.data_dir) not in r.text and '"path"' not in r.text
    missing = await client.get(f"/api/v1/datasets/{ds}/exports/1/files/nothing.jsonl")
    assert missing.status_code == 404 and str(settings.data_dir) not in missing.text
    assert (await client.delete(f"/api/v1/datasets/{ds}")).status_code == 204
    assert not folder.exists() and not list(folder.parent.glob(f".{ds}*"))
