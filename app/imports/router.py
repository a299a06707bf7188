"""HTTP only: the body or upload, the format and split from the query (or the file's name)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.auth.dependencies import ADMIN_IMPORT
from app.datasets.dependencies import DatasetDep
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.errors import InvalidInput
from app.imports import service
from app.imports.schemas import RecordFormat, RecordImportReport
from app.prompts.router import NearDuplicatesQuery
from app.prompts.schemas import ImportMode, NearDuplicateMode, Split
from app.uploads import open_upload

router = APIRouter(tags=["import"])

_IMPORT_BODY = {
    "requestBody": {
        "description": (
            "Records of one export format (`format`): JSONL or a JSON array in the body, or an uploaded "
            "file (multipart field `file`). An export's own file names (`rm.train.jsonl`) also say the "
            "format and the split. Pairs may come without `prompt` (TRL's implicit prompt: the shared "
            "start of `chosen` and `rejected`)."
        ),
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}
            },
        },
    }
}


@router.post(
    "/datasets/{dataset_id}/import", dependencies=[ADMIN_IMPORT],
    response_model=RecordImportReport,
    summary="Import prompts with completions and rankings (SFT, RM, pairs, chat) in one transaction",
    openapi_extra=_IMPORT_BODY,
)
async def import_records(
    request: Request,
    dataset: DatasetDep,
    session: SessionDep,
    settings: SettingsDep,
    actor: ActorDep,
    format: Annotated[RecordFormat | None, Query(description="The records' format; default: from the file name.")] = None,
    split: Annotated[Split | None, Query(description="Split of the prompts this import creates; default: from the file name.")] = None,
    mode: ImportMode = ImportMode.partial,
    file_name: Annotated[str | None, Query(max_length=300, description="Name recorded as provenance for a body.")] = None,
    near_duplicates: NearDuplicatesQuery = NearDuplicateMode.flag,
):
    """A new prompt follows the prompt import's duplicate rules: the same text is the same prompt;
    one nearly duplicating a stored prompt or an earlier line's prompt is skipped (with its line's
    answers and rankings), flagged or kept (`near_duplicates`)."""
    upload = await open_upload(request, settings.max_import_bytes)
    try:
        name = upload.filename or file_name or "request-body"
        named_format, named_split = service.guess_from_name(name)
        fmt = format or named_format
        if fmt is None:
            raise InvalidInput(
                f"format: pass ?format= ({', '.join(f.value for f in RecordFormat)}), or name the file like an export's (rm.train.jsonl)",
                details={"field": "format"},
            )
        return await service.import_file(
            session, dataset, upload.file, fmt, file_name=name, split=split or named_split,
            max_chars=settings.max_text_chars, mode=mode, near_duplicates=near_duplicates,
            threshold=settings.synth_near_dup_threshold, actor=actor, within_input_max=settings.import_within_input_max_rows,
        )
    finally:
        upload.file.close()
