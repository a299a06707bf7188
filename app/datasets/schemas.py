from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.llm.endpoints import RoleOverride
from app.schemas import MAX_JSON_DEPTH, ORMModel, too_deep

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class RoleChoices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generator: RoleOverride | None = None
    judge: RoleOverride | None = None
    synthesizer: RoleOverride | None = None


class DatasetSettings(BaseModel):
    """Per-dataset settings. Those checked here: `llm` (an endpoint by name, model and parameters
    per role) and `budget` (the spend cap of all the dataset's runs together); others (judge
    template, review overlap) are kept as given and checked where they are used."""

    model_config = ConfigDict(extra="allow")
    llm: RoleChoices | None = None
    budget: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False, description="USD all runs of the dataset may spend.")

    @model_validator(mode="before")
    @classmethod
    def _shallow(cls, data: Any) -> Any:
        if too_deep(data):
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return data

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class DatasetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN, examples=["helpful-v1"])
    description: str = Field(default="", max_length=10_000)
    settings: DatasetSettings = Field(
        default_factory=DatasetSettings,
        description="Per-dataset overrides (LLM roles, budget, judge template, review overlap); admin only.",
    )


class DatasetUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=10_000)
    settings: DatasetSettings | None = Field(default=None, description="Replaces the settings; admin only.")


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


class AuditEvent(ORMModel):
    id: int
    dataset_id: int
    prompt_id: int | None
    actor: str
    action: str
    target_type: str
    target_id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    comment: str | None
    created_at: datetime
