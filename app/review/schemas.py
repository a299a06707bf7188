from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.models import FlagReason, ReviewStatus


class ReviewStatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    review_status: ReviewStatus
    flag_reasons: list[FlagReason] | None = Field(default=None, max_length=len(FlagReason), description="Replaces the flags; omit to keep them.")
    comment: str | None = Field(default=None, max_length=10_000)
