"""HTTP only: validation and status codes; rules live in the service."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.datasets import repository as repo
from app.datasets import service
from app.datasets.dependencies import DatasetDep
from app.datasets.schemas import DatasetCounts, DatasetCreate, DatasetPublic, DatasetUpdate
from app.db import SessionDep
from app.pagination import KeysetDep, next_cursor
from app.schemas import Page

router = APIRouter(prefix="/datasets", tags=["datasets"])


async def _public(session, datasets) -> list[DatasetPublic]:
    counts = await repo.counts(session, [d.id for d in datasets])
    return [DatasetPublic.model_validate(d).model_copy(update={"counts": DatasetCounts(**counts[d.id])}) for d in datasets]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
async def create_dataset(body: DatasetCreate, session: SessionDep):
    dataset = await service.create(session, body)
    return (await _public(session, [dataset]))[0]


@router.get("", response_model=Page[DatasetPublic])
async def list_datasets(session: SessionDep, page: KeysetDep):
    datasets = await repo.list_all(session, after_id=page.after_id, limit=page.limit)
    return Page[DatasetPublic](data=await _public(session, datasets), next_cursor=next_cursor(datasets, page))


@router.get("/{dataset_id}", response_model=DatasetPublic)
async def get_dataset(dataset: DatasetDep, session: SessionDep):
    return (await _public(session, [dataset]))[0]


@router.patch("/{dataset_id}", response_model=DatasetPublic)
async def update_dataset(body: DatasetUpdate, dataset: DatasetDep, session: SessionDep):
    dataset = await service.update(session, dataset, body)
    return (await _public(session, [dataset]))[0]


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(dataset: DatasetDep, session: SessionDep) -> None:
    await service.delete(session, dataset)
