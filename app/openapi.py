"""The OpenAPI document as clients see the API: the real error shape (`app.errors.ErrorResponse`)
on every operation (not FastAPI's `{"detail": [...]}`), readable operation ids (the function's
name: `create_run`, not `create_run_api_v1_datasets__dataset_id__runs_post`), a tag on every
operation, the bearer scheme on every operation that needs a key (`app.auth.dependencies`
declares it; public ones carry none) and the Idempotency-Key header on every POST that does.
Done once here, on the generated document, so no route has to remember it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.errors import ERROR_STATUSES, ErrorDetail, ErrorResponse

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Retry safely: the same key and body get the first response back; another body gets 409.",
}


def operation_id(route: APIRoute) -> str:
    return route.name


def install_openapi(app: FastAPI) -> None:
    """Wrap `app.openapi` so the cached document carries the error schema, tags and headers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in (ErrorDetail, ErrorResponse):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schema.pop("$defs", None)
            schemas[model.__name__] = schema
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                for status, description in ERROR_STATUSES.items():
                    responses[str(status)] = {"description": description, **ref}
                if method == "post" and path.startswith("/api/") and op.get("security"):
                    op.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
                if not op.get("tags"):
                    op["tags"] = ["health" if path.startswith(("/health", "/readyz", "/metrics")) else "ui"]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi
