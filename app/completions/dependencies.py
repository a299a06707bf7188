from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from app.completions import service
from app.db import SessionDep
from app.deps import SettingsDep
from app.errors import InvalidInput
from app.models import Completion
from app.schemas import CursorQuery, IdPath


async def completion_or_404(session: SessionDep, completion_id: IdPath) -> Completion:
    return await service.get_or_404(session, completion_id)


CompletionDep = Annotated[Completion, Depends(completion_or_404)]


@dataclass
class Keyset:
    after_id: int | None
    limit: int


def keyset(
    settings: SettingsDep,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> Keyset:
    if limit > settings.page_size_max:
        raise InvalidInput(f"limit: at most {settings.page_size_max}", details={"field": "limit"})
    return Keyset(after_id=int(cursor) if cursor is not None else None, limit=limit)


KeysetDep = Annotated[Keyset, Depends(keyset)]


def next_cursor(rows: list, page: Keyset) -> str | None:
    return str(rows[-1].id) if len(rows) == page.limit else None
