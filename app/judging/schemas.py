"""A judge run's request: rank each prompt's completions; and the dataset settings judging reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.llm.endpoints import RoleOverride
from app.runs.schemas import Coverage, PromptFilter, RunRequest, Strict


class CanaryPair(Strict):
    """A control item whose better answer is certain."""

    prompt: str = Field(min_length=1, max_length=20_000)
    better: str = Field(min_length=1, max_length=20_000)
    worse: str = Field(min_length=1, max_length=20_000)


class Canaries(Strict):
    """Known-answer control items judged before the run's own items; a judge below
    `min_accuracy` on them stops the run (status failed, the reason in `error`)."""

    builtin: bool = Field(default=True, description="Include the built-in canaries (arithmetic, facts).")
    items: list[CanaryPair] = Field(default_factory=list, max_length=100)
    min_accuracy: float = Field(default=0.8, ge=0, le=1)


class JudgeRun(Coverage, RunRequest):
    kind: Literal["judge"]
    prompts: PromptFilter = Field(default_factory=PromptFilter)
    mode: Literal["listwise", "pairwise", "rubric", "reward_model"] = "listwise"
    source_run_id: int | None = Field(default=None, ge=1, description="Rank this generate run's completions; default: all of a prompt's.")
    orders: int | None = Field(default=None, ge=1, le=8, description="Orders per ranking (default: settings.judge_orders).")
    allow_ties: bool = False
    max_candidates: int = Field(default=16, ge=2, le=32)
    aspects: list[str] | None = Field(default=None, min_length=1, max_length=10, description="Rubric aspects.")
    # mode "reward_model": a checkpoint of `rlhf-forge train rm` ranks by score (app/judging/reward_model.py)
    model: str | None = Field(default=None, max_length=1000, description="reward_model mode: the RM folder, as the reward server sees it.")
    epsilon: float = Field(default=0.01, ge=0, description="reward_model mode: scores this close tie.")
    min_margin: float = Field(default=0.5, ge=0, description="reward_model mode: flag low_margin when the best leads by less.")
    judges: list[RoleOverride] | None = Field(
        default=None, min_length=1, max_length=8,
        description="Several judges (each applied over llm.judge, like it); their rankings are aggregated.",
    )
    aggregate: Literal["mean", "borda"] = Field(default="mean", description="How several judges' rankings combine.")
    min_judge_agreement: float | None = Field(
        default=None, ge=-1, le=1, description="Mean Kendall tau between judges below this flags judges_disagree "
        "(default: settings.judge_min_consistency).",
    )
    injection_check: Literal["llm", "patterns", "off"] | None = Field(
        default=None, description="How candidates that address the judge are found (default: settings.judge_injection_check).",
    )
    injection_llm: RoleOverride | None = Field(
        default=None, description="The model asked the structured check (applied over the judge's endpoint; default: the first judge).",
    )
    canaries: Canaries | None = None


class JudgeDatasetSettings(BaseModel):
    """The dataset settings (`dataset.settings`) that change how its prompts are judged."""

    model_config = ConfigDict(extra="ignore")

    judge_injection: Literal["flag", "drop", "last"] = Field(
        default="flag", description="A candidate that addresses the judge: flag the ranking, drop it, or rank it last.",
    )
    judge_length: Literal["off", "match", "flag"] = Field(
        default="off", description="match: compare at the shortest candidate's length; flag: flag a much longer winner.",
    )
    judge_length_ratio: float = Field(default=2.0, gt=1, le=100, description="Winner this many times longer than every other: length_bias.")
