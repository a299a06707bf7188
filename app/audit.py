"""The audit trail: every human change is a review_event with who, when, before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ReviewEvent


def snapshot(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The JSON-able state of `fields` of an ORM row, for before/after."""
    out = {}
    for f in fields:
        v = getattr(obj, f)
        out[f] = v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else str(v)
    return out


async def record_event(
    session: AsyncSession,
    *,
    dataset_id: int,
    actor: str,
    action: str,
    target_type: str,
    target_id: int,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    comment: str | None = None,
) -> ReviewEvent:
    event = ReviewEvent(
        dataset_id=dataset_id,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
        comment=comment,
    )
    session.add(event)
    await session.flush()
    return event
