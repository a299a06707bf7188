"""Schemas shared across domains."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.models import FlagReason, ReviewStatus

T = TypeVar("T")

ID_MAX = 2**63 - 1  # ids are Postgres bigints
IdPath = Annotated[int, Path(ge=1, le=ID_MAX)]
# a page cursor is an id this API returned: ASCII digits (str.isdigit() also takes '²' and '٣',
# which int() refuses), within a bigint
CursorQuery = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page.")
]


def _to_utc(value: datetime) -> datetime:
    # Postgres takes offsets up to +-15:59 and ISO 8601 allows more; naive times are UTC
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_to_utc)]

MAX_JSON_DEPTH = 64  # how deep free-form JSON (meta, settings, params) may nest


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests lists/objects more than `limit` levels (iterative: no recursion)."""
    if not value or not isinstance(value, (dict, list)):
        return False  # the common case (an empty meta on each imported row) costs one test
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        if depth >= limit:
            return True
        stack.extend((x, depth + 1) for x in v if isinstance(x, (dict, list)))
    return False


def _shallow(value: Any) -> Any:
    if too_deep(value):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


JSONObject = Annotated[dict[str, Any], AfterValidator(_shallow)]
"""Free-form JSON from a request, bounded in depth (deeper would fail to serialize: a 500)."""


class Page(BaseModel, Generic[T]):
    """A list with keyset pagination: pass `next_cursor` back as `cursor` for the next page."""

    data: list[T]
    next_cursor: str | None = None


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ReviewStatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    review_status: ReviewStatus
    flag_reasons: list[FlagReason] | None = Field(default=None, max_length=len(FlagReason), description="Replaces the flags; omit to keep them.")
    comment: str | None = Field(default=None, max_length=10_000)
