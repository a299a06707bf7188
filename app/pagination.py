"""Keyset pagination, the one way every list pages: `?limit=N&cursor=...`, answered as
`{"data": [...], "next_cursor": "..."}` (`app.schemas.Page`); null when there is no next page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from app.deps import SettingsDep
from app.errors import InvalidInput
from app.schemas import CursorQuery


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
