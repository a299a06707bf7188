"""The response cache: a re-run or a resumed run does not pay twice for the same call."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import LLMCache


def cache_key(base_url: str, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> bytes:
    """sha256 over endpoint, model, messages and parameters (the seed is one of them)."""
    blob = json.dumps(
        {"endpoint": base_url, "model": model, "messages": messages, "params": params},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(blob.encode()).digest()


async def lookup_many(conn: AsyncConnection, keys: list[bytes]) -> dict[bytes, dict[str, Any]]:
    rows = await conn.execute(select(LLMCache.key, LLMCache.response).where(LLMCache.key.in_(keys)))
    return {key: response for key, response in rows}


async def store(session: AsyncSession, rows: list[tuple[bytes, str, dict[str, Any]]]) -> None:
    if rows:
        stmt = insert(LLMCache).values([{"key": k, "model": m, "response": r} for k, m, r in rows])
        await session.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
