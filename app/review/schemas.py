from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.completions.schemas import CompletionPublic
from app.rankings.schemas import RankingPublic
from app.schemas import ORMModel


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(default=None, max_length=10_000)


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=10_000, description="Why the item is not fit for export.")


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=10_000)
    completion_id: int | None = Field(default=None, ge=1, description="Comment on one completion instead of the item.")


class PromptView(ORMModel):
    id: int
    dataset_id: int
    text: str
    source: str
    split: str | None
    tags: list[str]
    meta: dict[str, Any]
    review_status: str
    flag_reasons: list[str]
    reviewed_by: list[str]
    created_at: datetime


class LeasePublic(BaseModel):
    holder: str
    expires_at: datetime


class VerdictPublic(ORMModel):
    reviewer: str
    decision: str
    ranking_id: int | None
    judge_ranking_id: int | None
    reason: str | None
    updated_at: datetime


class ReviewItem(BaseModel):
    prompt: PromptView
    completions: list[CompletionPublic]
    judge_ranking: RankingPublic | None
    my_ranking: RankingPublic | None = Field(description="The caller's latest ranking of this item.")
    my_verdict: VerdictPublic | None
    lease: LeasePublic | None
    overlap: int = Field(description="Reviewers this item wants (the dataset's review_overlap).")


class NextItem(BaseModel):
    item: ReviewItem | None = Field(description="None: nothing left for you under these filters.")


class EventPublic(ORMModel):
    id: int
    actor: str
    action: str
    target_type: str
    target_id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    comment: str | None
    undoes_event_id: int | None
    created_at: datetime


class JudgeAgreement(BaseModel):
    reviewed: int = Field(description="Approvals compared with a judge ranking.")
    confirmed_unchanged: float | None = Field(description="Share whose endorsed ranking equals the judge's.")
    top1_agreement: float | None = Field(description="Share with the same set of completions ranked first.")
    mean_kendall_tau: float | None


class JudgeAgreementByModel(JudgeAgreement):
    judge_model: str | None
    template_version: str | None
    rankings: int = Field(default=0, description="This judge's rankings in the dataset, reviewed or not.")
    length_rank_spearman: float | None = Field(
        default=None, description="Spearman between judge rank and length rank within each ranking: +1 = the longest answer always wins.",
    )


class InterAnnotator(BaseModel):
    items: int = Field(description="Items approved by two or more reviewers.")
    reviewers: int
    krippendorff_alpha: float | None = Field(description="Ordinal alpha over those items' completion ranks.")
    mean_kendall_w: float | None


class AgreementReport(BaseModel):
    dataset_id: int
    overall: JudgeAgreement
    by_judge: list[JudgeAgreementByModel]
    inter_annotator: InterAnnotator


class ReviewerProgress(BaseModel):
    reviewer: str
    approved: int = 0
    rejected: int = 0
    rankings: int = Field(0, description="Human rankings this reviewer made (ties included).")
    edits: int = 0
    completions_added: int = 0
    comments: int = 0


class ReviewProgress(BaseModel):
    """How far review is: items (a prompt with its completions) by verdicts against the overlap,
    and the completions and rankings behind them, so flagged rankings are not hidden by a count of prompts."""

    dataset_id: int
    overlap: int
    items: int = Field(description="Prompts with at least one completion.")
    verdicts_wanted: int = Field(description="items x overlap.")
    verdicts_given: int = Field(description="Approvals and rejections, at most overlap per item.")
    prompts_by_status: dict[str, int]
    completions_by_status: dict[str, int]
    rankings_by_status: dict[str, int]
    rankings_by_kind: dict[str, int] = Field(description="judge / human / ... rankings.")
    flagged: dict[str, int] = Field(description="Prompts, completions and rankings flagged and not yet resolved.")
    reviewers: list[ReviewerProgress]
