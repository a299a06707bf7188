"""API keys: made at random, stored as a sha256, shown once, expiring and revocable; and the
caller a key (or a signed-in session) stands for.

Why sha256 and not bcrypt / argon2: those are slow on purpose to protect low-entropy passwords
from guessing. A key here is 32 random bytes (256 bits), which no guessing reaches, so a fast
hash loses nothing, and it lets a request find its key by an indexed equality lookup instead of
trying a slow hash against every row.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository as repo
from app.auth.access import Principal
from app.config import Settings
from app.errors import InvalidInput, NotFound, Unauthorized
from app.models import ApiKey, Role

KEY_PREFIX = "rf_"
SHOWN_CHARS = 10  # of the key, kept in clear to tell keys apart in lists ("rf_AbC1234")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _env_key(settings: Settings, key_hash: str) -> str | None:
    """The actor of a FORGE_API_KEYS key with this hash (those are admin keys)."""
    for key, actor in settings.api_keys.items():
        if hmac.compare_digest(hash_key(key), key_hash):
            return actor
    return None


async def keys_configured(session: AsyncSession, settings: Settings) -> bool:
    """False only in the local single-user mode: no FORGE_API_KEYS and no key ever made."""
    return bool(settings.api_keys) or await repo.any_key(session)


class OpenMode:
    """`keys_configured` for the requests of one app, without a query each: the answer "no key"
    is kept for `ttl_s` seconds, the one that ends the mode ("a key exists") is never kept.

    Every request of the local single-user mode (no key at all) asked the database first, a round
    trip as costly as the route's own statements. A key made through this process's API ends the
    mode at once (`key_made`); one made elsewhere (`rlhf-forge keys create`, another API process)
    within `ttl_s`. Keys are never deleted, so the mode never comes back once a key exists.

    One request asks at a time: those that find the answer expired while another is reading it
    wait for that answer (read a moment before they came: a "no key" stands `ttl_s` anyway, a
    "key exists" for good) instead of each asking too (32 busy reviewers: ~20 queries a second
    instead of one). When the one asking fails, each waiting asks for itself."""

    def __init__(self, ttl_s: float = 1.0):
        self.ttl_s = ttl_s
        self._open_until = 0.0  # monotonic time until which "no key" stands
        self._asking: asyncio.Future[bool] | None = None  # the answer a request is reading now

    async def keys_configured(self, session: AsyncSession, settings: Settings) -> bool:
        if settings.api_keys:
            return True
        loop = asyncio.get_running_loop()
        while True:
            if time.monotonic() < self._open_until:
                return False
            asking = self._asking
            if asking is None or asking.get_loop() is not loop:
                break
            try:
                return await asyncio.shield(asking)
            except asyncio.CancelledError:
                if not asking.cancelled():
                    raise  # this request was cancelled
                # the request asking failed or went away: the first waiting asks, the others wait for it
        asking = self._asking = loop.create_future()
        try:
            configured = await repo.any_key(session)
            if not configured:
                self._open_until = time.monotonic() + self.ttl_s
            asking.set_result(configured)
            return configured
        finally:
            if not asking.done():
                asking.cancel()
            if self._asking is asking:
                self._asking = None

    def key_made(self) -> None:
        """A key was made here: the next request asks the database again."""
        self._open_until = 0.0


async def principal(session: AsyncSession, settings: Settings, key_hash: str, *, via: str = "key") -> Principal:
    """The caller a key hash stands for; Unauthorized when unknown, revoked or expired."""
    actor = _env_key(settings, key_hash)
    if actor is not None:
        return Principal(actor=actor, role=Role.admin, datasets=None, via=via)
    found = await repo.by_hash(session, key_hash)
    if found is None:
        raise Unauthorized("unknown API key")
    key, grants = found
    if key.revoked_at is not None:
        raise Unauthorized(f"API key {key.prefix}… was revoked")
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        raise Unauthorized(f"API key {key.prefix}… expired at {key.expires_at.isoformat()}")
    role = Role(key.role)
    return Principal(
        actor=key.name, role=role, datasets=None if role == Role.admin else frozenset(grants), key_id=key.id, via=via
    )


async def create(
    session: AsyncSession, *, name: str, role: Role, dataset_ids: list[int], expires_in_days: float | None, created_by: str
) -> tuple[ApiKey, list[int], str]:
    """A new key; the key itself is returned here and never again."""
    dataset_ids = sorted(set(dataset_ids))
    if role == Role.admin and dataset_ids:
        raise InvalidInput(
            "datasets: admin keys see every dataset; grants are for annotator and viewer keys", details={"field": "datasets"}
        )
    if role != Role.admin and not dataset_ids:
        raise InvalidInput(f"datasets: a {role} key needs at least one dataset", details={"field": "datasets"})
    missing = sorted(set(dataset_ids) - await repo.existing_datasets(session, dataset_ids)) if dataset_ids else []
    if missing:
        raise NotFound(f"dataset {missing[0]} does not exist", details={"field": "datasets", "missing": missing})
    key = new_key()
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    row = ApiKey(
        name=name, role=role.value, key_hash=hash_key(key), prefix=key[:SHOWN_CHARS], created_by=created_by, expires_at=expires_at
    )
    await repo.add(session, row, dataset_ids)
    await session.refresh(row)
    return row, dataset_ids, key


async def dataset_ids(session: AsyncSession, names: list[str]) -> list[int]:
    """Dataset names (the command line's --dataset) to ids; NotFound names the first unknown one."""
    found = await repo.dataset_ids_by_name(session, names)
    for name in names:
        if name not in found:
            raise NotFound(f"dataset {name!r} does not exist")
    return [found[n] for n in names]


async def revoke(session: AsyncSession, key_id: int, actor: str) -> ApiKey:
    """Revoke a key (at once: every request checks). The row stays, for the record."""
    key = await repo.get(session, key_id)
    if key is None:
        raise NotFound(f"API key {key_id} does not exist")
    await repo.revoke(session, key_id, actor, datetime.now(UTC))
    await session.refresh(key)
    return key
