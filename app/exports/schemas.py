from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.models import PromptSource, ReviewStatus
from app.schemas import ORMModel, UtcDatetime


class ExportFormat(enum.StrEnum):
    sft = "sft"
    rm = "rm"
    rl = "rl"
    pairs = "pairs"
    sft_chat = "sft_chat"
    pairs_chat = "pairs_chat"


class SplitName(enum.StrEnum):
    train = "train"
    validation = "validation"
    test = "test"


class PairsMode(enum.StrEnum):
    all = "all"
    best_vs_rest = "best_vs_rest"


DEFAULT_FORMATS = [ExportFormat.sft, ExportFormat.rm, ExportFormat.rl, ExportFormat.pairs]


class ExportFilters(BaseModel):
    """Which rows go in. Defaults: human-approved rows only."""

    model_config = ConfigDict(extra="forbid")

    status: list[ReviewStatus] = Field(
        default=[ReviewStatus.approved],
        min_length=1,
        description="Review statuses accepted for SFT completions, RM rankings and RL prompts. "
        "Add 'pending' to include judge-only rows nobody has reviewed yet.",
    )
    min_consistency: float | None = Field(
        default=None, ge=-1, le=1, description="Minimum judge consistency (Kendall tau) of a judge ranking."
    )
    exclude_flags: list[str] = Field(default=[], description="Drop rows carrying any of these flag reasons.")
    exclude_flagged: bool = Field(default=False, description="Drop rows carrying any flag at all.")
    source: list[PromptSource] = Field(default=[], description="Prompt sources to keep (empty: all).")
    tags: list[str] = Field(default=[], description="Keep prompts with any of these tags (empty: all).")
    created_after: UtcDatetime | None = Field(default=None, description="Prompts created at or after this time.")
    created_before: UtcDatetime | None = Field(default=None, description="Prompts created before this time.")
    models: list[str] = Field(default=[], description="Keep completions from these models (empty: all).")

    @model_validator(mode="after")
    def _dates_in_order(self) -> ExportFilters:
        if self.created_after and self.created_before and self.created_after >= self.created_before:
            raise ValueError("created_after must be earlier than created_before")
        return self


class SplitSpec(BaseModel):
    """Train/validation/test by prompt: a prompt's own `split` when it has one, else
    sha256(f"{seed}:{prompt_id}"). Split groups (near-duplicates, evol lineages;
    app/exports/groups.py) share one split, that of their explicit splits or of their root."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    train: float = Field(default=0.9, ge=0, le=1)
    validation: float = Field(default=0.05, ge=0, le=1)
    test: float = Field(default=0.05, ge=0, le=1)
    rl_disjoint: bool = Field(
        default=False, description="RL prompts exclude every prompt used for SFT or RM (as InstructGPT did)."
    )

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitSpec:
        total = self.train + self.validation + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(
                f"split ratios must sum to 1: train {self.train} + validation {self.validation} "
                f"+ test {self.test} = {total:g}"
            )
        return self

    def ratios(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class RenderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs_mode: PairsMode = Field(
        default=PairsMode.all, description="'all': every pair of a ranking (ties skipped); 'best_vs_rest'."
    )
    margin: bool = Field(default=False, description="Add 'margin' (the rank gap) to pairs.")


class ExportCreate(RenderOptions):
    filters: ExportFilters = Field(default_factory=ExportFilters)
    split: SplitSpec = Field(default_factory=SplitSpec)
    formats: list[ExportFormat] = Field(default_factory=lambda: list(DEFAULT_FORMATS), min_length=1)
    archive: bool = Field(default=True, description="Also write one .tar.gz of the files and manifest.")
    parquet: bool = Field(default=False, description="Also write each file as Parquet (needs pyarrow: rlhf-forge[parquet]).")
    license: str | None = Field(
        default=None, max_length=100, pattern=r"^[A-Za-z0-9.+-]+$", description="SPDX licence id for the dataset card."
    )

    @model_validator(mode="after")
    def _unique_formats(self) -> ExportCreate:
        self.formats = list(dict.fromkeys(self.formats))
        return self


class StreamQuery(ExportFilters, SplitSpec, RenderOptions):
    """Query parameters of GET .../exports/{format}.jsonl: live rows under these filters and
    split, or a frozen version (whose filters and split are fixed) when `version` is given."""

    version: int | None = Field(default=None, ge=1, description="Stream this frozen version instead of live rows.")
    split: SplitName | None = Field(default=None, description="Only this split (default: every split).")

    @model_validator(mode="after")
    def _version_is_frozen(self) -> StreamQuery:
        if self.version is not None:
            fixed = self.model_fields_set - {"version", "split", *RenderOptions.model_fields}
            if fixed:
                raise ValueError(
                    f"version {self.version} is frozen; its filters and split cannot be changed "
                    f"(drop {', '.join(sorted(fixed))})"
                )
        return self

    def filters(self) -> ExportFilters:
        return ExportFilters(**self.model_dump(include=set(ExportFilters.model_fields)))

    def split_spec(self) -> SplitSpec:
        return SplitSpec(**self.model_dump(include=set(SplitSpec.model_fields)))

    def render(self) -> RenderOptions:
        return RenderOptions(**self.model_dump(include=set(RenderOptions.model_fields)))


class ExportProgress(BaseModel):
    total: int = 0
    done: int = 0


class ExportPublic(ORMModel):
    id: int
    dataset_id: int
    version: int
    status: str
    filters: dict[str, Any]
    split: dict[str, Any]
    options: dict[str, Any]
    manifest: dict[str, Any] | None
    integrity: dict[str, Any] | None = Field(None, description="Split groups and the leakage check, from freezing the version.")
    # where the files lie on the server is not said: they are fetched through files_url/archive_url
    created_by: str | None
    created_at: datetime
    frozen_at: datetime | None
    finished_at: datetime | None
    progress: ExportProgress = Field(default_factory=ExportProgress)
    error: str | None = None
    archive_url: str | None = None
