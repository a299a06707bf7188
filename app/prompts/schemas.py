from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from app.models import FlagReason, PromptSource, ReviewStatus
from app.schemas import JSONObject, ORMModel

SPLITS = ("train", "validation", "test")


class Split(StrEnum):
    train = "train"
    validation = "validation"
    test = "test"


class ImportMode(StrEnum):
    partial = "partial"
    all_or_nothing = "all_or_nothing"


class NearDuplicateMode(StrEnum):
    """What to do with a new prompt that nearly duplicates a stored one (app/prompts/dedup.py):
    leave it out, store it flagged `near_duplicate` (meta.flag_details names the prompt), or
    store it as it is."""

    skip = "skip"
    flag = "flag"
    keep = "keep"


class ImportFormat(StrEnum):
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class PromptCreate(BaseModel):
    text: str = Field(min_length=1, description="The prompt text.")
    source: PromptSource = PromptSource.human
    split: Split | None = None
    tags: list[str] = Field(default_factory=list, max_length=64)
    meta: JSONObject = Field(default_factory=dict)


class PromptUpdate(BaseModel):
    text: str | None = Field(default=None, min_length=1)
    split: Split | None = None
    tags: list[str] | None = Field(default=None, max_length=64)
    meta: JSONObject | None = None
    review_status: ReviewStatus | None = None
    flag_reasons: list[FlagReason] | None = Field(default=None, max_length=len(FlagReason))


class PromptPublic(ORMModel):
    id: int
    dataset_id: int
    text: str
    source: str
    split: str | None
    review_status: str
    flag_reasons: list[str]
    tags: list[str]
    meta: dict[str, Any]
    provenance: dict[str, Any]
    run_id: int | None
    created_at: datetime
    updated_at: datetime


class RowError(BaseModel):
    line: int = Field(description="1-based line of the file (CSV: counting the header), or element of a JSON array.")
    message: str


class NearDuplicate(BaseModel):
    line: int
    prompt_id: int | None = Field(description="The prompt it nearly duplicates: a stored one, or the one made of `matched_line`.")
    similarity: float = Field(description="Jaccard index of the word unigrams and bigrams of the normalised texts.")
    matched_line: int | None = Field(None, description="The earlier line of the same input it nearly duplicates, if that is the match.")


class ImportReport(BaseModel):
    mode: ImportMode
    total: int = Field(description="Rows read (blank lines are not rows).")
    inserted: int
    duplicates: int = Field(description="Rows whose text is already in the dataset or earlier in the same input.")
    invalid: int
    duplicate_lines: list[int] = Field(description="Lines of the duplicates (the first 1000).")
    errors: list[RowError] = Field(description="Invalid rows with the reason (the first 1000).")
    near_duplicate_mode: NearDuplicateMode = NearDuplicateMode.flag
    near_duplicates: int = Field(
        0, description="Rows nearly duplicating a stored prompt or an earlier row of the input (skipped, flagged or kept by the mode)."
    )
    near_duplicate_matches: list[NearDuplicate] = Field(default_factory=list, description="The first 1000, with the prompt matched.")
    near_duplicates_within_input: bool = Field(
        True,
        description="Whether the input's new prompts were also compared with each other (inputs up to "
        "FORGE_IMPORT_WITHIN_INPUT_MAX_ROWS new prompts); false: only with the stored prompts, run `rlhf-forge dedup` after it.",
    )
    committed: bool = True


class DedupCluster(BaseModel):
    root: int = Field(description="The oldest prompt of the cluster.")
    members: list[int]
    pairs: list[tuple[int, int, float]] = Field(description="The verified pairs (prompt, nearly duplicates prompt, similarity).")


class DedupReport(BaseModel):
    dataset_id: int
    threshold: float
    prompts: int = Field(description="Prompts in the dataset.")
    keyed_now: int = Field(description="Prompts that had no band keys yet and got them in this pass.")
    near_duplicate_pairs: int
    clustered_prompts: int
    clusters: int
    flagged: int = Field(0, description="Prompts newly flagged `near_duplicate` (with flag=true).")
    found: list[DedupCluster] = Field(description="The clusters, largest first (the first 1000).")
