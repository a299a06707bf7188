"""What run requests share, and the run as the API shows it (each kind's request model is in its domain)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.llm.endpoints import RoleOverride
from app.models import ReviewStatus
from app.schemas import ORMModel


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptFilter(Strict):
    """Which prompts of the dataset a run covers (all of them by default)."""

    review_status: list[ReviewStatus] | None = None
    source: list[Literal["imported", "human", "synthetic"]] | None = None
    tags: list[str] | None = Field(default=None, description="Prompts with any of these tags.")
    prompt_ids: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, max_length=100_000)
    limit: int | None = Field(default=None, ge=1)


class LLMOverrides(Strict):
    generator: RoleOverride | None = None
    judge: RoleOverride | None = None
    synthesizer: RoleOverride | None = None


class RunRequest(Strict):
    """What every kind's run request has; a kind's own model adds `kind: Literal["<kind>"]` and its fields."""

    budget: Decimal | None = Field(default=None, ge=0, description="USD; the run stops with budget_exhausted past it.")
    llm: LLMOverrides | None = None
    dry_run: bool = Field(
        default=False, description="Start nothing: answer 200 with the prompts, requests, tokens and cost the run would take."
    )


class Coverage(Strict):
    """What generate and judge runs share: by default they cover only the prompts that still need them."""

    all: bool = Field(
        default=False,
        description="Cover every selected prompt, even those already done and those approved or rejected "
        "(default: only the prompts that still need this run, never approved or rejected ones).",
    )


class RunEstimate(BaseModel):
    """A dry run's answer: what the run would cover and cost, with nothing started."""

    dry_run: Literal[True] = True
    kind: str
    endpoint: str = Field(description="The role's endpoint, by name.")
    model: str
    prompts: int = Field(description="Prompts the run would cover.")
    requests: int = Field(description="LLM requests it would make (fewer when answers are cached).")
    estimated_prompt_tokens: int = Field(description="About 4 characters a token, templates included.")
    estimated_completion_tokens: int = Field(description="The max_tokens of every request: an upper bound.")
    estimated_cost: Decimal | None = Field(description="USD at the model's price (app/llm/prices.py); null when it has none.")


class ResumeRun(Strict):
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
    cost: Decimal | None = Field(description="USD; null when a call's model has no price (unknown, not zero).")
    budget: Decimal | None
    error: str | None
    result: dict[str, Any] = Field(default_factory=dict, description="What the run found out besides its rows (a judge run: canaries, length bias).")
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
    cost: Decimal | None = Field(description="USD; null when unknown (a model without a price).")
    result: dict[str, Any]
