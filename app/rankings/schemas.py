from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import ORMModel


class RankingCreate(BaseModel):
    """A human ranking of all of a prompt's completions: `ranks[i]` is the rank of
    `completion_ids[i]`, 1 = best, equal numbers are ties."""

    model_config = ConfigDict(extra="forbid")
    completion_ids: list[int] = Field(min_length=2, max_length=100)
    ranks: list[int] = Field(min_length=2, max_length=100)
    rationale: str | None = Field(default=None, max_length=10_000)


class RankingPublic(ORMModel):
    id: int
    dataset_id: int
    prompt_id: int
    completion_ids: list[int]
    ranks: list[int]
    ranker_kind: str
    judge_model: str | None
    template_version: str | None
    reviewer: str | None
    rationale: str | None
    consistency: float | None
    details: dict[str, Any]
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: Decimal | None
    run_id: int | None
    review_status: str
    flag_reasons: list[str]
    created_at: datetime
    updated_at: datetime
