"""Datasets CRUD over real HTTP and in-process, with the error shape."""

import pytest


def test_create_get_list_update_delete(http):
    r = http.post("/api/v1/datasets", json={"name": "helpful-v1", "description": "first"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["name"] == "helpful-v1" and ds["counts"]["prompts"] == 0

    assert http.get(f"/api/v1/datasets/{ds['id']}").json()["description"] == "first"
    listed = http.get("/api/v1/datasets").json()
    assert len(listed["data"]) == 1 and listed["next_cursor"] is None and listed["data"][0]["id"] == ds["id"]

    r = http.patch(f"/api/v1/datasets/{ds['id']}", json={"description": "second"})
    assert r.status_code == 200 and r.json()["description"] == "second"

    assert http.delete(f"/api/v1/datasets/{ds['id']}").status_code == 204
    r = http.get(f"/api/v1/datasets/{ds['id']}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert str(ds["id"]) in r.json()["error"]["message"]


def test_duplicate_name_is_409_and_writes_nothing(http):
    assert http.post("/api/v1/datasets", json={"name": "a"}).status_code == 201
    r = http.post("/api/v1/datasets", json={"name": "a"})
    assert r.status_code == 409
    assert "already exists" in r.json()["error"]["message"]
    assert len(http.get("/api/v1/datasets").json()["data"]) == 1


def test_rename_onto_existing_name_is_409(http):
    http.post("/api/v1/datasets", json={"name": "a"})
    b = http.post("/api/v1/datasets", json={"name": "b"}).json()
    r = http.patch(f"/api/v1/datasets/{b['id']}", json={"name": "a"})
    assert r.status_code == 409
    assert http.get(f"/api/v1/datasets/{b['id']}").json()["name"] == "b"


@pytest.mark.parametrize(
    "body, where",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "settings": []}, "settings"),
    ],
)
def test_bad_input_is_422_naming_the_field(http, body, where):
    r = http.post("/api/v1/datasets", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    assert where in err["message"]


def test_malformed_json_is_422(http):
    r = http.post("/api/v1/datasets", content=b'{"name": ', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"


def test_unknown_route_and_bad_id(http):
    assert http.get("/api/v1/nope").json()["error"]["code"] == "not_found"
    r = http.get("/api/v1/datasets/abc")
    assert r.status_code == 422 and "dataset_id" in r.json()["error"]["message"]


async def test_in_process_client_and_health(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    r = await client.post("/api/v1/datasets", json={"name": "inproc"})
    assert r.status_code == 201


def test_ids_past_bigint_are_422_not_500(http):
    r = http.get(f"/api/v1/datasets/{2**64}")
    assert r.status_code == 422 and "dataset_id" in r.json()["error"]["message"]
    r = http.put(f"/api/v1/rankings/{2**64}/review", json={"review_status": "approved"})
    assert r.status_code == 422 and "ranking_id" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [{"name": "nul", "description": "a\u0000b"}, {"name": "nul", "settings": {"k": "a\u0000b"}}],
)
def test_values_postgres_refuses_are_422_and_write_nothing(http, body):
    r = http.post("/api/v1/datasets", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_value" and "cannot be stored" in err["message"]
    assert http.get("/api/v1/datasets").json()["data"] == []
