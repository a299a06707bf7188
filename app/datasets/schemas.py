from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.schemas import ORMModel

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class DatasetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN, examples=["helpful-v1"])
    description: str = Field(default="", max_length=10_000)
    settings: dict[str, Any] = Field(default_factory=dict, description="Per-dataset overrides (LLM roles, judge template, review overlap).")


class DatasetUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=10_000)
    settings: dict[str, Any] | None = None


class DatasetCounts(BaseModel):
    prompts: int = 0
    completions: int = 0
    rankings: int = 0
    prompts_by_status: dict[str, int] = Field(default_factory=dict)
    completions_by_status: dict[str, int] = Field(default_factory=dict)
    rankings_by_status: dict[str, int] = Field(default_factory=dict)
    flagged: dict[str, int] = Field(default_factory=dict, description="Prompts, completions and rankings flagged and not yet resolved.")


class DatasetPublic(ORMModel):
    id: int
    name: str
    description: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    counts: DatasetCounts | None = None
