"""A generate run's request: K completions per prompt, sampled by a plan."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.runs.schemas import Coverage, PromptFilter, RunRequest, Strict


class SamplingPlanEntry(Strict):
    """How one of the K answers is sampled; sample i uses entry i mod len(plan)."""

    model: str | None = Field(default=None, max_length=200, description="None: the generator's model.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=131_072)
    system_prompt: str | None = Field(default=None, max_length=20_000)


DEFAULT_TEMPERATURES = (0.3, 0.7, 1.0, 1.2)


class GenerateRun(Coverage, RunRequest):
    kind: Literal["generate"]
    prompts: PromptFilter = Field(default_factory=PromptFilter)
    k: int = Field(default=4, ge=1, le=32, description="Completions per prompt.")
    plan: list[SamplingPlanEntry] | None = Field(
        default=None, min_length=1, max_length=32, description="Default: temperatures 0.3, 0.7, 1.0, 1.2."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Sample i is asked with seed + i.")

    def sampling_plan(self) -> list[SamplingPlanEntry]:
        return self.plan or [SamplingPlanEntry(temperature=t) for t in DEFAULT_TEMPERATURES]
