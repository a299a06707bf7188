"""The generated OpenAPI document: the real error shape on every operation, readable operation
ids, a tag everywhere, the bearer scheme on every operation that needs a key (and none on the
public ones), Idempotency-Key on every such POST; and `details` is always an object."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute, iter_route_contexts

from app.auth.dependencies import rules_of
from app.config import Settings
from app.main import create_app


def _app():
    return create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))


def _doc() -> dict:
    return _app().openapi()


def test_secured_operations_reference_the_bearer_scheme_and_public_ones_none():
    app = _app()
    doc = app.openapi()
    schemes = doc["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    public = {
        (m.lower(), r.path) for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)
        for m in r.methods if [rule.action.value for rule in rules_of(r)] == ["public"]
    }
    assert {("get", "/healthz"), ("post", "/api/v1/session")} <= public
    secured = 0
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            # the key is the scheme's business, never a parameter of its own
            assert not {p["name"].lower() for p in op.get("parameters", [])} & {"authorization", "x-api-key"}, where
            if (method, path) in public:
                assert "security" not in op, where
            else:
                assert op["security"] == [{name: []}], where
                secured += 1
    assert secured > 40 and doc["paths"]["/metrics"]["get"]["security"] == [{name: []}]


def test_every_operation_declares_the_error_shape_tags_and_a_readable_id():
    doc = _doc()
    text = str(doc)
    assert "HTTPValidationError" not in text and "'detail'" not in text
    error = doc["components"]["schemas"]["ErrorResponse"]
    assert error["properties"]["error"]["$ref"] == "#/components/schemas/ErrorDetail"
    assert doc["components"]["schemas"]["ErrorDetail"]["properties"]["details"]["type"] == "object"
    ids = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            ids.append(op["operationId"])
            assert re.fullmatch(r"[a-z][a-z0-9_]*", op["operationId"]) and "api_v1" not in op["operationId"], where
            assert op.get("tags"), where
            for status in ("401", "404", "422", "500") + (("400", "409") if method != "get" else ()):
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (where, status)
            headers = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
            assert ("Idempotency-Key" in headers) == (method == "post" and path.startswith("/api/") and "security" in op), where
            ok = op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
            listed = doc["components"]["schemas"].get(ok.get("$ref", "").rsplit("/", 1)[-1], {}).get("properties", {})
            if "data" in listed:  # every list: the same envelope, with a cursor
                assert set(listed) == {"data", "next_cursor"}, where
    assert len(ids) == len(set(ids)) > 40
    assert {"create_run", "create_export", "list_runs", "get_run"} <= set(ids)


def test_datasets_and_exports_page_with_a_cursor(http):
    ids = [http.post("/api/v1/datasets", json={"name": f"d{i}"}).json()["id"] for i in range(3)]
    first = http.get("/api/v1/datasets", params={"limit": 2}).json()
    assert [d["id"] for d in first["data"]] == ids[:2] and first["next_cursor"] == str(ids[1])
    rest = http.get("/api/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [d["id"] for d in rest["data"]] == ids[2:] and rest["next_cursor"] is None
    assert http.get("/api/v1/datasets", params={"cursor": "x"}).status_code == 422


def test_details_is_always_an_object(http):
    invalid = http.post("/api/v1/datasets", json={"name": ""}).json()["error"]
    assert invalid["code"] == "invalid_input" and isinstance(invalid["details"]["errors"], list)
    missing = http.get("/api/v1/datasets/999999").json()["error"]
    assert missing["code"] == "not_found" and missing["details"] == {}
    no_route = http.get("/api/v1/nothing-here").json()["error"]
    assert no_route["details"] == {}
    from app.errors import error_body

    assert error_body("invalid_input", "m", "free text")["error"]["details"] == {"reason": "free text"}
    assert error_body("invalid_input", "m", [1])["error"]["details"] == {"errors": [1]}
