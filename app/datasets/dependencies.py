from typing import Annotated

from fastapi import Depends

from app.datasets import service
from app.db import SessionDep
from app.models import Dataset
from app.schemas import IdPath


async def dataset_or_404(session: SessionDep, dataset_id: IdPath) -> Dataset:
    return await service.get_or_404(session, dataset_id)


DatasetDep = Annotated[Dataset, Depends(dataset_or_404)]
