"""HTTP only: validation and status codes; rules live in the service."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth.dependencies import ADMIN, READ, PrincipalDep
from app.datasets import repository as repo
from app.datasets import service
from app.datasets.dependencies import DatasetDep
from app.datasets.schemas import DatasetCounts, DatasetCreate, DatasetPublic, DatasetUpdate
from app.db import SessionDep
from app.schemas import ListOf

router = APIRouter(prefix="/datasets", tags=["datasets"])


async def _public(session, datasets) -> list[DatasetPublic]:
    counts = await repo.counts(session, [d.id for d in datasets])
    return [DatasetPublic.model_validate(d).model_copy(update={"counts": DatasetCounts(**counts[d.id])}) for d in datasets]


@router.post("", dependencies=[ADMIN], status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
async def create_dataset(body: DatasetCreate, session: SessionDep):
    dataset = await service.create(session, body)
    return (await _public(session, [dataset]))[0]


@router.get("", dependencies=[READ], response_model=ListOf[DatasetPublic])
async def list_datasets(session: SessionDep, caller: PrincipalDep):
    datasets = [d for d in await repo.list_all(session) if caller.sees(d.id)]
    return ListOf(data=await _public(session, datasets), count=len(datasets))


@router.get("/{dataset_id}", dependencies=[READ], response_model=DatasetPublic)
async def get_dataset(dataset: DatasetDep, session: SessionDep):
    return (await _public(session, [dataset]))[0]


@router.patch("/{dataset_id}", dependencies=[ADMIN], response_model=DatasetPublic)
async def update_dataset(body: DatasetUpdate, dataset: DatasetDep, session: SessionDep):
    dataset = await service.update(session, dataset, body)
    return (await _public(session, [dataset]))[0]


@router.delete("/{dataset_id}", dependencies=[ADMIN], status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(dataset: DatasetDep, session: SessionDep) -> None:
    await service.delete(session, dataset)
