"""HTTP only: the review queue, item actions, history and agreement figures.

Re-ranking, editing and adding a human completion are the rankings / completions routes
(`POST /prompts/{id}/rankings`, `PATCH /completions/{id}`, `POST /prompts/{id}/completions`);
they honour the same leases and write the same audit trail.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.dependencies import READ, REVIEW
from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.models import PromptSource, ReviewStatus
from app.review import agreement, service
from app.review import repository as repo
from app.review.schemas import (
    AgreementReport,
    ApproveBody,
    CommentBody,
    EventPublic,
    NextItem,
    RejectBody,
    ReviewItem,
    ReviewProgress,
)
from app.schemas import IdPath, Page

router = APIRouter(tags=["review"])

PromptId = IdPath


@router.get("/datasets/{dataset_id}/review/next", dependencies=[REVIEW], response_model=NextItem, summary="Lease the next item to review")
async def next_item(
    dataset_id: IdPath,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    tag: Annotated[list[str], Query(max_length=20, description="Only prompts with all these tags.")] = [],  # noqa: B006
    source: PromptSource | None = None,
    status: Annotated[list[ReviewStatus], Query(description="Only prompts in these review states.")] = [],  # noqa: B006
    exclude: Annotated[list[int], Query(max_length=1000, description="Prompt ids to pass over (skipped).")] = [],  # noqa: B006
    include_empty: Annotated[bool, Query(description="Also prompts without completions.")] = False,
):
    f = repo.QueueFilter(tags=tag, source=source, statuses=[s.value for s in status], exclude=exclude, include_empty=include_empty)
    return {"item": await service.next_item(session, dataset_id, actor, settings, f)}


@router.get("/datasets/{dataset_id}/review/agreement", dependencies=[READ], response_model=AgreementReport)
async def dataset_agreement(dataset: DatasetDep, session: SessionDep):
    return agreement.report(
        dataset.id, await repo.approved_verdicts(session, dataset.id), await repo.judge_rankings_with_lengths(session, dataset.id)
    )


@router.get("/datasets/{dataset_id}/review/progress", dependencies=[READ], response_model=ReviewProgress, summary="Review progress, per dataset and reviewer")
async def dataset_progress(dataset: DatasetDep, session: SessionDep, settings: SettingsDep):
    return await service.progress(session, dataset, settings)


@router.get("/prompts/{prompt_id}/review", dependencies=[READ], response_model=ReviewItem, summary="An item as a reviewer sees it (no lease)")
async def get_item(prompt_id: PromptId, session: SessionDep, settings: SettingsDep, actor: ActorDep):
    return await service.item_view(session, prompt_id, actor, settings)


@router.post("/prompts/{prompt_id}/review/claim", dependencies=[REVIEW], response_model=ReviewItem, summary="Lease this item (e.g. going back)")
async def claim_item(prompt_id: PromptId, session: SessionDep, settings: SettingsDep, actor: ActorDep):
    await service.claim(session, prompt_id, actor, settings)
    return await service.item_view(session, prompt_id, actor, settings)


@router.post("/prompts/{prompt_id}/review/release", dependencies=[REVIEW], response_model=ReviewItem, summary="Give the lease back")
async def release_item(prompt_id: PromptId, session: SessionDep, settings: SettingsDep, actor: ActorDep):
    await service.release(session, prompt_id, actor)
    return await service.item_view(session, prompt_id, actor, settings)


@router.post("/prompts/{prompt_id}/review/approve", dependencies=[REVIEW], response_model=EventPublic)
async def approve_item(prompt_id: PromptId, session: SessionDep, actor: ActorDep, body: ApproveBody | None = None):
    return await service.approve(session, prompt_id, actor, body.comment if body else None)


@router.post("/prompts/{prompt_id}/review/reject", dependencies=[REVIEW], response_model=EventPublic)
async def reject_item(prompt_id: PromptId, body: RejectBody, session: SessionDep, actor: ActorDep):
    return await service.reject(session, prompt_id, actor, body.reason)


@router.post("/prompts/{prompt_id}/review/comments", dependencies=[REVIEW], response_model=EventPublic, status_code=201)
async def comment_item(prompt_id: PromptId, body: CommentBody, session: SessionDep, actor: ActorDep):
    return await service.comment(session, prompt_id, actor, body.text, body.completion_id)


@router.post("/prompts/{prompt_id}/review/undo", dependencies=[REVIEW], response_model=EventPublic, summary="Undo your latest action on this item")
async def undo_item(prompt_id: PromptId, session: SessionDep, actor: ActorDep):
    return await service.undo(session, prompt_id, actor)


@router.get("/prompts/{prompt_id}/history", dependencies=[READ], response_model=Page[EventPublic], summary="Every human change to this item")
async def item_history(prompt_id: PromptId, session: SessionDep):
    """All in one page (next_cursor is always null)."""
    events = await service.history(session, prompt_id)
    return Page[EventPublic](data=events)
