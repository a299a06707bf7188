"""Run requests and the run as the API shows it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.llm.endpoints import RoleOverride
from app.models import ReviewStatus
from app.schemas import ORMModel


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptFilter(_Strict):
    """Which prompts of the dataset a run covers (all of them by default)."""

    review_status: list[ReviewStatus] | None = None
    source: list[Literal["imported", "human", "synthetic"]] | None = None
    tags: list[str] | None = Field(default=None, description="Prompts with any of these tags.")
    prompt_ids: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, max_length=100_000)
    limit: int | None = Field(default=None, ge=1)


class LLMOverrides(_Strict):
    generator: RoleOverride | None = None
    judge: RoleOverride | None = None
    synthesizer: RoleOverride | None = None


class SamplingPlanEntry(_Strict):
    """How one of the K answers is sampled; sample i uses entry i mod len(plan)."""

    model: str | None = Field(default=None, max_length=200, description="None: the generator's model.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=131_072)
    system_prompt: str | None = Field(default=None, max_length=20_000)


DEFAULT_TEMPERATURES = (0.3, 0.7, 1.0, 1.2)


class _RunBase(_Strict):
    budget: Decimal | None = Field(default=None, ge=0, description="USD; the run stops with budget_exhausted past it.")
    llm: LLMOverrides | None = None


class GenerateRun(_RunBase):
    kind: Literal["generate"]
    prompts: PromptFilter = Field(default_factory=PromptFilter)
    k: int = Field(default=4, ge=1, le=32, description="Completions per prompt.")
    plan: list[SamplingPlanEntry] | None = Field(
        default=None, min_length=1, max_length=32, description="Default: temperatures 0.3, 0.7, 1.0, 1.2."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Sample i is asked with seed + i.")

    def sampling_plan(self) -> list[SamplingPlanEntry]:
        return self.plan or [SamplingPlanEntry(temperature=t) for t in DEFAULT_TEMPERATURES]


class JudgeRun(_RunBase):
    kind: Literal["judge"]
    prompts: PromptFilter = Field(default_factory=PromptFilter)
    mode: Literal["listwise", "pairwise", "rubric"] = "listwise"
    source_run_id: int | None = Field(default=None, ge=1, description="Rank this generate run's completions; default: all of a prompt's.")
    orders: int | None = Field(default=None, ge=1, le=8, description="Orders per ranking (default: settings.judge_orders).")
    allow_ties: bool = False
    max_candidates: int = Field(default=16, ge=2, le=32)
    aspects: list[str] | None = Field(default=None, min_length=1, max_length=10, description="Rubric aspects.")


class SynthRun(_RunBase):
    kind: Literal["synth"]
    mode: Literal["self_instruct", "evol"] = "self_instruct"
    num_prompts: int = Field(default=20, ge=1, le=100_000, description="Prompts to ask for (duplicates are dropped).")
    per_call: int = Field(default=5, ge=1, le=50)
    examples_per_call: int = Field(default=3, ge=0, le=20, description="Seed prompts shown in each call.")
    topics: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(default_factory=list, max_length=10_000)
    documents: list[Annotated[str, Field(min_length=1, max_length=200_000)]] = Field(default_factory=list, max_length=1000)
    evol_operations: list[Literal["add_constraints", "deepen", "concretize", "increase_reasoning", "breadth"]] = Field(
        default_factory=lambda: ["add_constraints", "deepen", "concretize"]
    )
    prompts: PromptFilter = Field(default_factory=PromptFilter, description="Evol mode: the prompts to rewrite.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


RunCreate = Annotated[GenerateRun | JudgeRun | SynthRun, Field(discriminator="kind")]


class ResumeRun(_Strict):
    budget: Decimal | None = Field(default=None, ge=0, description="A new budget (e.g. after budget_exhausted).")


class Progress(BaseModel):
    pending: int
    fraction: float
    elapsed_s: float | None
    rate_per_s: float | None = Field(description="Items finished per second since the run started.")
    eta_s: float | None


class RunPublic(ORMModel):
    id: int
    dataset_id: int
    kind: str
    status: str
    params: dict[str, Any]
    total: int
    done: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    budget: Decimal | None
    error: str | None
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None = None


class RunItemPublic(ORMModel):
    item_index: int
    prompt_id: int | None
    status: str
    error: str | None
    attempts: int
    cost: Decimal
    result: dict[str, Any]
