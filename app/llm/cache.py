"""The response cache: a re-run or a resumed run does not pay twice for the same call."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import LLMCache


def cache_key(base_url: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> bytes:
    """sha256 over endpoint, model, messages and parameters (the seed is one of them)."""
    blob = json.dumps(
        {"endpoint": base_url, "model": model, "messages": messages, "params": params},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(blob.encode()).digest()


def choice_keys(key: bytes, n: int) -> list[bytes]:
    """The cache keys of a call's n choices (its `n` parameter): the call's own key when it asks
    one (as every call did before `n`), else one per choice derived from it."""
    if n == 1:
        return [key]
    return [hashlib.sha256(key + b"/choice/" + str(i).encode()).digest() for i in range(n)]


async def lookup_many(conn: AsyncConnection, keys: list[bytes]) -> dict[bytes, dict[str, Any]]:
    rows = await conn.execute(select(LLMCache.key, LLMCache.response).where(LLMCache.key.in_(keys)))
    return {key: response for key, response in rows}


# one statement text whatever the number of rows (parsed and prepared once)
_STORE = text(
    """
    INSERT INTO llm_cache (key, model, response)
    SELECT * FROM unnest(CAST(:keys AS bytea[]), CAST(:models AS text[]), CAST(:responses AS jsonb[]))
    ON CONFLICT (key) DO NOTHING
    """
)


async def store(session: AsyncSession, rows: list[tuple[bytes, str, dict[str, Any]]]) -> None:
    if rows:
        keys, models, responses = zip(*rows, strict=True)
        await session.execute(
            _STORE, {"keys": list(keys), "models": list(models), "responses": [json.dumps(r) for r in responses]}
        )
