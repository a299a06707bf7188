"""HTTP only: completions of a prompt, of a dataset, edits and review status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.audit import set_review_status
from app.auth.dependencies import READ, REVIEW
from app.completions import repository as repo
from app.completions import service
from app.completions.dependencies import CompletionDep
from app.pagination import KeysetDep, next_cursor
from app.completions.schemas import CompletionCreate, CompletionEdit, CompletionPublic
from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.models import Completion, CompletionSource, ReviewStatus
from app.prompts import service as prompts_service
from app.schemas import IdPath, Page, ReviewStatusUpdate

router = APIRouter(tags=["completions"])

PromptId = IdPath


@router.post("/prompts/{prompt_id}/completions", dependencies=[REVIEW], status_code=status.HTTP_201_CREATED, response_model=CompletionPublic)
async def add_completion(prompt_id: PromptId, body: CompletionCreate, session: SessionDep, settings: SettingsDep, actor: ActorDep):
    prompt = await prompts_service.get_or_404(session, prompt_id)
    return await service.add_human(session, prompt, body, actor=actor, max_chars=settings.max_text_chars)


@router.get("/prompts/{prompt_id}/completions", dependencies=[READ], response_model=Page[CompletionPublic])
async def list_prompt_completions(prompt_id: PromptId, session: SessionDep):
    """One prompt's completions, all in one page (next_cursor is always null)."""
    await prompts_service.get_or_404(session, prompt_id)
    rows = await repo.for_prompt(session, prompt_id)
    return Page[CompletionPublic](data=rows)


@router.get("/datasets/{dataset_id}/completions", dependencies=[READ], response_model=Page[CompletionPublic])
async def list_dataset_completions(
    dataset: DatasetDep,
    session: SessionDep,
    page: KeysetDep,
    prompt_id: Annotated[int | None, Query(ge=1)] = None,
    source: CompletionSource | None = None,
    review_status: ReviewStatus | None = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    flagged: bool | None = None,
    edited: bool | None = None,
):
    rows = await repo.list_page(
        session, Completion, dataset.id, after_id=page.after_id, limit=page.limit, flagged=flagged, edited=edited,
        prompt_id=prompt_id, source=source, review_status=review_status, model=model,
    )
    return Page[CompletionPublic](data=rows, next_cursor=next_cursor(rows, page))


@router.get("/completions/{completion_id}", dependencies=[READ], response_model=CompletionPublic)
async def get_completion(completion: CompletionDep):
    return completion


@router.patch("/completions/{completion_id}", dependencies=[REVIEW], response_model=CompletionPublic, summary="Edit, keeping the original text")
async def edit_completion(completion: CompletionDep, body: CompletionEdit, session: SessionDep, settings: SettingsDep, actor: ActorDep):
    return await service.edit(session, completion, body.edited_text, actor=actor, max_chars=settings.max_text_chars)


@router.put("/completions/{completion_id}/review", dependencies=[REVIEW], response_model=CompletionPublic, summary="Set review status and flags")
async def set_completion_review(completion: CompletionDep, body: ReviewStatusUpdate, session: SessionDep, actor: ActorDep):
    return await set_review_status(session, completion, body, actor=actor)
