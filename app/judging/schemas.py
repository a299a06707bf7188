"""A judge run's request: rank each prompt's completions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.runs.schemas import Coverage, PromptFilter, RunRequest


class JudgeRun(Coverage, RunRequest):
    kind: Literal["judge"]
    prompts: PromptFilter = Field(default_factory=PromptFilter)
    mode: Literal["listwise", "pairwise", "rubric"] = "listwise"
    source_run_id: int | None = Field(default=None, ge=1, description="Rank this generate run's completions; default: all of a prompt's.")
    orders: int | None = Field(default=None, ge=1, le=8, description="Orders per ranking (default: settings.judge_orders).")
    allow_ties: bool = False
    max_candidates: int = Field(default=16, ge=2, le=32)
    aspects: list[str] | None = Field(default=None, min_length=1, max_length=10, description="Rubric aspects.")
