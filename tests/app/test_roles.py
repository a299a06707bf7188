"""Roles on every route. TABLE is the route x role specification: every route of the app must
appear in it with its rule (a new route without a line here fails), the rule the app carries must
be the one written here, and each rule is tried with real keys of each role over HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import text

from app.auth.dependencies import rules_of

ADMIN_KEY = "admin-" + "k" * 40
API = "/api/v1"

# what each role may do, written out here rather than read from the app
MAY = {"viewer": {"public", "read", "export"}, "annotator": {"public", "read", "review"}}

TABLE: dict[tuple[str, str], str] = {
    # FastAPI's own pages and the service's health
    ("GET", "/openapi.json"): "public", ("GET", "/docs"): "public", ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public", ("GET", "/healthz"): "public", ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "read",  # every dataset's run progress, queue depth and volumes: any key (Prometheus's a viewer's)
    # the review page's shells (their data comes from the API) and signing in
    ("GET", "/ui"): "public", ("GET", "/ui/"): "public", ("GET", "/ui/datasets/{dataset_id}"): "public",
    ("GET", "/ui/static/{name}"): "public", ("GET", "/ui/static/vendor/{name}"): "public",
    # the console's pages are shells: their data comes from the API under the caller's own rules
    ("GET", "/ui/datasets/{dataset_id}/review"): "public", ("GET", "/ui/datasets/{dataset_id}/items/{prompt_id}"): "public",
    ("GET", "/ui/datasets/{dataset_id}/runs"): "public", ("GET", "/ui/datasets/{dataset_id}/runs/{run_id}"): "public",
    ("GET", "/ui/datasets/{dataset_id}/exports"): "public", ("GET", "/ui/datasets/{dataset_id}/agreement"): "public",
    ("GET", "/ui/keys"): "public",
    ("POST", f"{API}/session"): "public", ("DELETE", f"{API}/session"): "public", ("GET", f"{API}/me"): "read",
    # keys
    ("POST", f"{API}/keys"): "admin", ("GET", f"{API}/keys"): "admin", ("POST", f"{API}/keys/{{key_id}}/revoke"): "admin",
    # datasets: settings, endpoints and deletion are the admin's
    ("POST", f"{API}/datasets"): "admin", ("GET", f"{API}/datasets"): "read",
    ("GET", f"{API}/datasets/{{dataset_id}}"): "read", ("PATCH", f"{API}/datasets/{{dataset_id}}"): "admin",
    ("DELETE", f"{API}/datasets/{{dataset_id}}"): "admin",
    ("GET", f"{API}/datasets/{{dataset_id}}/audit"): "admin",  # settings changes and deletions, kept after deletion
    # prompts: imports and edits are the admin's; review state moves through the review actions
    ("POST", f"{API}/datasets/{{dataset_id}}/prompts/import"): "admin", ("POST", f"{API}/datasets/{{dataset_id}}/prompts"): "admin",
    ("GET", f"{API}/datasets/{{dataset_id}}/prompts"): "read", ("GET", f"{API}/prompts/{{prompt_id}}"): "read",
    ("PATCH", f"{API}/prompts/{{prompt_id}}"): "admin",
    ("POST", f"{API}/datasets/{{dataset_id}}/prompts/dedup"): "admin",  # the dataset-wide near-duplicate pass (may flag)
    ("POST", f"{API}/datasets/{{dataset_id}}/import"): "admin",  # existing SFT / RM / pairs data
    # completions and rankings: annotators add, edit and review them
    ("POST", f"{API}/prompts/{{prompt_id}}/completions"): "review", ("GET", f"{API}/prompts/{{prompt_id}}/completions"): "read",
    ("GET", f"{API}/datasets/{{dataset_id}}/completions"): "read", ("GET", f"{API}/completions/{{completion_id}}"): "read",
    ("PATCH", f"{API}/completions/{{completion_id}}"): "review", ("PUT", f"{API}/completions/{{completion_id}}/review"): "review",
    ("POST", f"{API}/prompts/{{prompt_id}}/rankings"): "review", ("GET", f"{API}/prompts/{{prompt_id}}/rankings"): "read",
    ("GET", f"{API}/datasets/{{dataset_id}}/rankings"): "read", ("GET", f"{API}/rankings/{{ranking_id}}"): "read",
    ("PUT", f"{API}/rankings/{{ranking_id}}/review"): "review",
    # review: the queue leases, so it is a review action
    ("GET", f"{API}/datasets/{{dataset_id}}/review/progress"): "read",
    ("GET", f"{API}/datasets/{{dataset_id}}/review/next"): "review", ("GET", f"{API}/datasets/{{dataset_id}}/review/agreement"): "read",
    ("GET", f"{API}/prompts/{{prompt_id}}/review"): "read", ("GET", f"{API}/prompts/{{prompt_id}}/history"): "read",
    **{("POST", f"{API}/prompts/{{prompt_id}}/review/{a}"): "review" for a in ("claim", "release", "approve", "reject", "comments", "undo")},
    # exports: viewers and admins
    **{(m, f"{API}/datasets/{{dataset_id}}/exports{p}"): "export" for m, p in (
        ("GET", "/{fmt}.jsonl"), ("POST", ""), ("GET", ""), ("GET", "/{version}"), ("GET", "/{version}/archive"),
        ("GET", "/{version}/files/{name:path}"),
    )},
    # runs spend money: admins only
    **{(m, f"{API}{p}"): "admin" for m, p in (
        ("POST", "/datasets/{dataset_id}/runs"), ("GET", "/datasets/{dataset_id}/runs"), ("GET", "/runs/{run_id}"),
        ("GET", "/runs/{run_id}/items"), ("POST", "/runs/{run_id}/cancel"), ("POST", "/runs/{run_id}/resume"),
        ("GET", "/runs/{run_id}/events"),
    )},
}


def app_routes(app) -> dict[tuple[str, str], object]:
    return {(m, r.path): r for r in iter_route_contexts(app.routes) for m in sorted(r.methods or ()) if m != "HEAD"}


@dataclass
class World:
    client: httpx.AsyncClient
    ids: dict[str, object]  # path parameter -> a value that exists in the granted dataset
    other: dict[str, int]  # the same rows in a dataset the keys were not granted
    keys: dict[str, str]

    def auth(self, who: str) -> dict:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def path(self, template: str, ids: dict | None = None) -> str:
        values = {**self.ids, **(ids or {})}
        return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(values[m.group(1)]), template)


@pytest.fixture
async def app(base_settings, clean_db):
    from app.main import create_app

    app = create_app(base_settings.model_copy(update={"api_keys": {ADMIN_KEY: "root"}}))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def world(app, factory) -> World:
    granted, other = factory.dataset("granted"), factory.dataset("other")
    pid, cids, rid = factory.judged_item(granted, "Which is better?", ["a", "b"])
    opid, ocids, orid = factory.judged_item(other, "Not yours", ["c", "d"])
    with factory.engine.begin() as c:
        run_id, orun_id = (
            c.execute(text("INSERT INTO run (dataset_id, kind, status) VALUES (:d, 'generate', 'succeeded') RETURNING id"), {"d": d}).scalar()
            for d in (granted, other)
        )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        keys = {"admin": ADMIN_KEY}
        for who, role, datasets in (("viewer", "viewer", [granted]), ("annotator", "annotator", [granted]), ("stranger", "annotator", [other])):
            r = await client.post(f"{API}/keys", json={"name": who, "role": role, "datasets": datasets}, headers=admin)
            assert r.status_code == 201, r.text
            keys[who] = r.json()["key"]
        ids = {"dataset_id": granted, "prompt_id": pid, "completion_id": cids[0], "ranking_id": rid, "run_id": run_id,
               "key_id": 1, "version": 1, "fmt": "sft", "name": "manifest.json"}
        other_ids = {"dataset_id": other, "prompt_id": opid, "completion_id": ocids[0], "ranking_id": orid, "run_id": orun_id}
        yield World(client, ids, other_ids, keys)


async def test_every_route_has_the_rule_the_table_gives_it(app):
    routes = app_routes(app)
    assert not set(routes) - set(TABLE), f"routes without a line in TABLE: {sorted(set(routes) - set(TABLE))}"
    assert not set(TABLE) - set(routes), f"TABLE lines for routes that do not exist: {sorted(set(TABLE) - set(routes))}"
    for key, route in routes.items():
        if isinstance(route.original_route, APIRoute):
            assert [r.action.value for r in rules_of(route)] == [TABLE[key]], key
        else:
            assert TABLE[key] == "public", key  # FastAPI's own documentation pages


async def _call(world: World, method: str, path: str, who: str | None) -> httpx.Response:
    headers = world.auth(who) if who else {}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return await world.client.request(method, path, json=body, headers=headers)


async def test_each_role_gets_403_exactly_where_the_table_says(world):
    tried = 0
    for (method, template), rule in TABLE.items():
        if rule == "public":
            continue
        path = world.path(template)
        r = await _call(world, method, path, None)
        assert r.status_code == 401, (method, path, r.status_code)
        for who in ("viewer", "annotator"):
            r = await _call(world, method, path, who)
            if rule in MAY[who]:
                assert r.status_code not in (401, 403), (who, method, path, r.status_code, r.text)
            else:
                assert r.status_code == 403, (who, method, path, r.status_code, r.text)
                assert r.json()["error"]["code"] == "forbidden"
            tried += 1
    assert tried > 80


async def test_a_key_sees_only_its_datasets(world):
    """The stranger is an annotator of the other dataset: everything it may do on its own
    dataset answers 404 on the granted one, as if the rows did not exist."""
    for (method, template), rule in TABLE.items():
        if rule not in MAY["annotator"] or rule == "public" or not re.search(r"\{(dataset|prompt|completion|ranking)_id\}", template):
            continue
        r = await _call(world, method, world.path(template), "stranger")
        assert r.status_code == 404, (method, template, r.status_code, r.text)
        r = await _call(world, method, world.path(template, world.other), "stranger")
        assert r.status_code not in (401, 403, 404), (method, template, r.status_code, r.text)
    listed = (await world.client.get(f"{API}/datasets", headers=world.auth("stranger"))).json()
    assert [d["id"] for d in listed["data"]] == [world.other["dataset_id"]]
    me = (await world.client.get(f"{API}/me", headers=world.auth("stranger"))).json()
    assert me == {"actor": "stranger", "role": "annotator", "datasets": [world.other["dataset_id"]], "csrf_token": None}


async def test_admin_keys_may_do_everything(world):
    for method, template in TABLE:
        if method != "GET" or template.endswith("/events"):
            continue  # the writes are the other tests' business; events stream until the run ends
        r = await world.client.get(world.path(template), headers=world.auth("admin"))
        assert r.status_code not in (401, 403), (template, r.status_code)
    ds = world.ids["dataset_id"]
    assert (await world.client.delete(f"{API}/datasets/{ds}", headers=world.auth("admin"))).status_code == 204


async def test_viewer_may_neither_delete_nor_change_a_dataset(world, factory):
    ds = world.ids["dataset_id"]
    r = await world.client.delete(f"{API}/datasets/{ds}", headers=world.auth("viewer"))
    assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
    body = {"settings": {"llm": {"generator": {"base_url": "http://attacker.example/v1"}}}}
    r = await world.client.patch(f"{API}/datasets/{ds}", json=body, headers=world.auth("viewer"))
    assert r.status_code == 403
    assert factory.scalar("SELECT settings FROM dataset WHERE id = :d", d=ds) == {}
    assert (await world.client.get(f"{API}/datasets/{ds}", headers=world.auth("viewer"))).status_code == 200


async def test_annotator_may_neither_export_nor_run(world, factory):
    ds = world.ids["dataset_id"]
    h = world.auth("annotator")
    assert (await world.client.post(f"{API}/datasets/{ds}/exports", json={}, headers=h)).status_code == 403
    assert (await world.client.get(f"{API}/datasets/{ds}/exports/sft.jsonl", headers=h)).status_code == 403
    assert (await world.client.post(f"{API}/datasets/{ds}/runs", json={"kind": "generate", "k": 2}, headers=h)).status_code == 403
    assert (await world.client.post(f"{API}/runs/{world.ids['run_id']}/resume", json={}, headers=h)).status_code == 403
    assert factory.scalar("SELECT count(*) FROM export") == 0 and factory.scalar("SELECT count(*) FROM run") == 2
    # what an annotator is for: lease, rank, approve
    pid = world.ids["prompt_id"]
    assert (await world.client.get(f"{API}/datasets/{ds}/review/next", headers=h)).json()["item"]["prompt"]["id"] == pid
    r = await world.client.post(f"{API}/prompts/{pid}/review/approve", json={}, headers=h)
    assert r.status_code == 200 and r.json()["actor"] == "annotator"
