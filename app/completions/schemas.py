from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import ORMModel


class CompletionCreate(BaseModel):
    """A human-written answer to a prompt."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="The answer (at most `max_text_chars` characters).")
    meta: dict[str, Any] = Field(default_factory=dict)


class CompletionEdit(BaseModel):
    """A reviewer's edit: `text` keeps the original, `edited_text` becomes the SFT target."""

    model_config = ConfigDict(extra="forbid")
    edited_text: str | None = Field(description="The edited answer; null drops the edit.")


class CompletionPublic(ORMModel):
    id: int
    dataset_id: int
    prompt_id: int
    text: str
    edited_text: str | None
    source: str
    author: str | None
    model: str | None
    params: dict[str, Any]
    template_version: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: Decimal | None
    latency_ms: int | None
    finish_reason: str | None
    run_id: int | None
    sample_index: int | None
    review_status: str
    flag_reasons: list[str]
    meta: dict[str, Any]
    provenance: dict[str, Any] = Field(description="Where an imported completion came from: file, sha256, format, line.")
    created_at: datetime
    updated_at: datetime
