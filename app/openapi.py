"""The OpenAPI document as clients see the API: the real error shape on every operation (not
FastAPI's `{"detail": [...]}`), readable operation ids (the function's name: `create_run`, not
`create_run_api_v1_datasets__dataset_id__runs_post`) and a tag on every operation. Done once here,
on the generated document, so no route has to remember it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

ERROR_STATUSES = {
    "400": "Bad request",
    "401": "Missing or unknown API key (when keys are configured)",
    "404": "Not found",
    "409": "Conflict with the current state (or an Idempotency-Key reused for another request)",
    "413": "Payload too large",
    "422": "Invalid input",
    "500": "Internal error",
}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Retry safely: the same key and body get the first response back; another body gets 409.",
}
READ_ONLY_SKIPS = ("409", "413")  # a GET neither conflicts nor carries a body


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: not_found, invalid_input, conflict, ...")
    message: str = Field(description="For people: what is wrong and how to fix it.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Always an object; `errors` lists each invalid field for invalid_input."
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


def operation_id(route: APIRoute) -> str:
    return route.name


def install_openapi(app: FastAPI) -> None:
    """Wrap `app.openapi` so the cached document carries the error schema and tags."""
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
                    if method == "get" and status in READ_ONLY_SKIPS:
                        continue
                    responses[status] = {"description": description, **ref}
                if method == "post" and path.startswith("/api/"):
                    op.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
                if not op.get("tags"):
                    op["tags"] = ["health" if path.startswith(("/health", "/metrics")) else "ui"]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi
