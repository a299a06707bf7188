from typing import Annotated

from fastapi import Depends

from app.db import SessionDep
from app.models import Run
from app.runs import service
from app.schemas import IdPath


async def run_or_404(session: SessionDep, run_id: IdPath) -> Run:
    return await service.get_or_404(session, run_id)


RunDep = Annotated[Run, Depends(run_or_404)]
