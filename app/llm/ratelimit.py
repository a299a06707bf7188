"""Requests- and tokens-per-minute limits shared by every worker, kept in Postgres.

GCRA: each limit key holds a theoretical arrival time (TAT). A call reserves its share by
pushing the TAT forward by cost * (60 s / limit) in one atomic upsert, and waits until its
reservation falls inside the allowed burst (one minute's worth). One round trip per call,
no locks held while waiting, fair across processes.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_RESERVE = text(
    """
    INSERT INTO llm_rate_limit AS r (key, tat)
    VALUES (:key, clock_timestamp() + make_interval(secs => :inc))
    ON CONFLICT (key) DO UPDATE
        SET tat = greatest(r.tat, clock_timestamp()) + make_interval(secs => :inc)
    RETURNING extract(epoch FROM (tat - clock_timestamp()))
    """
)
_REFUND = text("UPDATE llm_rate_limit SET tat = tat - make_interval(secs => :dec) WHERE key = :key")
WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def _reserve(self, key: str, limit_per_minute: int, amount: float) -> float:
        inc = amount * WINDOW_S / limit_per_minute
        async with self.engine.begin() as conn:
            ahead = float((await conn.execute(_RESERVE, {"key": key, "inc": inc})).scalar_one())
        return max(0.0, ahead - WINDOW_S)

    async def acquire(self, scope: str, rpm: int | None, tpm: int | None, tokens: int) -> None:
        waits = []
        if rpm:
            waits.append(await self._reserve(f"rpm:{scope}", rpm, 1))
        if tpm:
            waits.append(await self._reserve(f"tpm:{scope}", tpm, max(1, tokens)))
        delay = max(waits, default=0.0)
        if delay > 0:
            await asyncio.sleep(delay)

    async def refund_tokens(self, scope: str, tpm: int | None, reserved: int, used: int) -> None:
        """Give back the part of a token reservation the call did not use."""
        if tpm and reserved > used:
            async with self.engine.begin() as conn:
                await conn.execute(_REFUND, {"key": f"tpm:{scope}", "dec": (reserved - used) * WINDOW_S / tpm})
