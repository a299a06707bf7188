"""HTTP only: record and read rankings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.audit import set_review_status
from app.auth.dependencies import READ, REVIEW
from app.completions import repository as completions_repo
from app.pagination import KeysetDep, next_cursor
from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep
from app.models import RankerKind, Ranking, ReviewStatus
from app.prompts import service as prompts_service
from app.rankings import repository as repo
from app.rankings import service
from app.rankings.schemas import RankingCreate, RankingPublic
from app.schemas import IdPath, Page, ReviewStatusUpdate

router = APIRouter(tags=["rankings"])


async def ranking_or_404(session: SessionDep, ranking_id: IdPath) -> Ranking:
    return await service.get_or_404(session, ranking_id)


RankingDep = Annotated[Ranking, Depends(ranking_or_404)]


@router.post(
    "/prompts/{prompt_id}/rankings", dependencies=[REVIEW], status_code=status.HTTP_201_CREATED, response_model=RankingPublic,
    summary="Record a human ranking of all of a prompt's completions",
)
async def create_ranking(prompt_id: IdPath, body: RankingCreate, session: SessionDep, actor: ActorDep):
    prompt = await prompts_service.get_or_404(session, prompt_id)
    return await service.create_human(session, prompt, body, actor=actor)


@router.get("/prompts/{prompt_id}/rankings", dependencies=[READ], response_model=Page[RankingPublic])
async def list_prompt_rankings(prompt_id: IdPath, session: SessionDep):
    """One prompt's rankings, all in one page (next_cursor is always null)."""
    await prompts_service.get_or_404(session, prompt_id)
    rows = await repo.for_prompt(session, prompt_id)
    return Page[RankingPublic](data=rows)


@router.get("/datasets/{dataset_id}/rankings", dependencies=[READ], response_model=Page[RankingPublic])
async def list_dataset_rankings(
    dataset: DatasetDep,
    session: SessionDep,
    page: KeysetDep,
    prompt_id: Annotated[int | None, Query(ge=1)] = None,
    ranker_kind: RankerKind | None = None,
    judge_model: Annotated[str | None, Query(max_length=200)] = None,
    template_version: Annotated[str | None, Query(max_length=64)] = None,
    reviewer: Annotated[str | None, Query(max_length=200)] = None,
    review_status: ReviewStatus | None = None,
    flagged: bool | None = None,
):
    rows = await completions_repo.list_page(
        session, Ranking, dataset.id, after_id=page.after_id, limit=page.limit, flagged=flagged, prompt_id=prompt_id,
        ranker_kind=ranker_kind, judge_model=judge_model, template_version=template_version, reviewer=reviewer,
        review_status=review_status,
    )
    return Page[RankingPublic](data=rows, next_cursor=next_cursor(rows, page))


@router.get("/rankings/{ranking_id}", dependencies=[READ], response_model=RankingPublic)
async def get_ranking(ranking: RankingDep):
    return ranking


@router.put("/rankings/{ranking_id}/review", dependencies=[REVIEW], response_model=RankingPublic, summary="Set review status and flags")
async def set_ranking_review(ranking: RankingDep, body: ReviewStatusUpdate, session: SessionDep, actor: ActorDep):
    return await set_review_status(session, ranking, body, actor=actor)
