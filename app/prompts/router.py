"""HTTP only: validation, content negotiation and status codes; rules live in the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from app.auth.dependencies import ADMIN, ADMIN_IMPORT, READ
from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.errors import InvalidInput
from app.models import PromptSource, ReviewStatus
from app.prompts import repository as repo
from app.prompts import service
from app.prompts.parsing import guess_format
from app.prompts.schemas import (
    DedupReport,
    ImportFormat,
    ImportMode,
    ImportReport,
    NearDuplicateMode,
    PromptCreate,
    PromptPublic,
    PromptUpdate,
    Split,
)
from app.schemas import CursorQuery, IdPath, Page, UtcDatetime
from app.uploads import open_upload

router = APIRouter(tags=["prompts"])

NearDuplicatesQuery = Annotated[
    NearDuplicateMode,
    Query(
        description="A prompt nearly duplicating a stored one or (imports) an earlier row of the same input (same text "
        "up to case, whitespace and Unicode form, or word-shingle Jaccard >= FORGE_SYNTH_NEAR_DUP_THRESHOLD): skip it "
        "(single add: 409), store it flagged `near_duplicate` with the matching prompt id in meta.flag_details, or keep "
        "it as it is."
    ),
]

_IMPORT_BODY = {
    "requestBody": {
        "description": (
            "Prompts as a JSON array (strings or objects with `prompt`, optional `tags`, `split`, "
            "`meta`, `source`), as JSONL / CSV in the body, or as an uploaded file (multipart field "
            "`file`; the format is taken from its name or from `format`)."
        ),
        "content": {
            "application/json": {"schema": {"type": "array", "items": {}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}
            },
        },
    }
}


@router.post(
    "/datasets/{dataset_id}/prompts/import", dependencies=[ADMIN_IMPORT],
    response_model=ImportReport,
    summary="Bulk-import prompts (JSON array, JSONL, CSV) in one transaction",
    openapi_extra=_IMPORT_BODY,
)
async def import_prompts(
    request: Request,
    dataset: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    mode: ImportMode = ImportMode.partial,
    format: Annotated[ImportFormat | None, Query(description="Overrides the format guessed from the file name or content type.")] = None,
    near_duplicates: NearDuplicatesQuery = NearDuplicateMode.flag,
):
    upload = await open_upload(request, settings.max_import_bytes)
    fmt = format or guess_format(upload.filename, upload.content_type)
    fh = upload.file
    if fmt is None:
        raise InvalidInput(
            "cannot tell the format: send Content-Type application/json, application/x-ndjson or text/csv, "
            "name the file *.json / *.jsonl / *.csv, or pass ?format=",
            details={"field": "format"},
        )
    try:
        return await service.import_file(
            session, dataset, fh, fmt, max_chars=settings.max_text_chars, mode=mode,
            near_duplicates=near_duplicates, threshold=settings.synth_near_dup_threshold,
            within_input_max=settings.import_within_input_max_rows,
        )
    finally:
        fh.close()


@router.post("/datasets/{dataset_id}/prompts", dependencies=[ADMIN], status_code=status.HTTP_201_CREATED, response_model=PromptPublic)
async def create_prompt(
    body: PromptCreate,
    dataset: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    near_duplicates: NearDuplicatesQuery = NearDuplicateMode.flag,
):
    return await service.create(
        session, dataset, body, actor=actor, max_chars=settings.max_text_chars,
        near_duplicates=near_duplicates, threshold=settings.synth_near_dup_threshold,
    )


@router.post("/datasets/{dataset_id}/prompts/dedup", dependencies=[ADMIN], response_model=DedupReport)
async def dedup_prompts(
    dataset: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    flag: Annotated[bool, Query(description="Flag every prompt that nearly duplicates an older one `near_duplicate`.")] = False,
):
    """Cluster the dataset's stored prompts by near-duplication (same normalised text, or word-shingle
    Jaccard >= FORGE_SYNTH_NEAR_DUP_THRESHOLD) and report the clusters."""
    return await service.dedup_pass(session, dataset, threshold=settings.synth_near_dup_threshold, flag=flag)


@router.get("/datasets/{dataset_id}/prompts", dependencies=[READ], response_model=Page[PromptPublic])
async def list_prompts(
    dataset: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    review_status: ReviewStatus | None = None,
    source: PromptSource | None = None,
    split: Split | None = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    q: Annotated[str | None, Query(max_length=1000, description="Case-insensitive substring of the text.")] = None,
    created_after: UtcDatetime | None = None,
    created_before: UtcDatetime | None = None,
):
    if limit > settings.page_size_max:
        raise InvalidInput(f"limit: at most {settings.page_size_max}", details={"field": "limit"})
    after_id = int(cursor) if cursor is not None else None
    rows = await repo.list_page(
        session, dataset.id, after_id=after_id, limit=limit,
        review_status=review_status, source=source, split=split, tag=tag, q=q,
        created_after=created_after, created_before=created_before,
    )
    next_cursor = str(rows[-1].id) if len(rows) == limit else None
    return Page[PromptPublic](data=[PromptPublic.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/prompts/{prompt_id}", dependencies=[READ], response_model=PromptPublic)
async def get_prompt(prompt_id: IdPath, session: SessionDep):
    return await service.get_or_404(session, prompt_id)


@router.patch("/prompts/{prompt_id}", dependencies=[ADMIN], response_model=PromptPublic)
async def update_prompt(
    prompt_id: IdPath, body: PromptUpdate, session: SessionDep, settings: SettingsDep, actor: ActorDep
):
    prompt = await service.get_or_404(session, prompt_id)
    return await service.update(session, prompt, body, actor=actor, max_chars=settings.max_text_chars)
