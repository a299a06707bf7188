from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.completions import service
from app.db import SessionDep
from app.models import Completion
from app.schemas import IdPath


async def completion_or_404(session: SessionDep, completion_id: IdPath) -> Completion:
    return await service.get_or_404(session, completion_id)


CompletionDep = Annotated[Completion, Depends(completion_or_404)]
