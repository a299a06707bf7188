"""Structured replies, for every kind that asks an LLM for JSON: the `response_format` that asks
for a schema, and a tolerant reader of what comes back (strict JSON first, then JSON buried in
prose or code fences)."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


class InvalidReply(ValueError):
    """A reply that does not hold what was asked for; the message says why."""


def json_schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def extract_json(text: str) -> Any:
    text = text.strip()
    candidates = [text, *(m.group(1) for m in _FENCE.finditer(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except ValueError:
            continue
    raise InvalidReply(f"no JSON object in the reply: {text[:120]!r}")
