"""HTTP only: validation and status codes; rules live in the service."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth.dependencies import ADMIN, READ, PrincipalDep
from app.datasets import repository as repo
from app.datasets import service
from app.datasets.dependencies import DatasetDep
from app.datasets.schemas import AuditEvent, DatasetCounts, DatasetCreate, DatasetPublic, DatasetUpdate
from app.db import SessionDep
from app.deps import ActorDep, SettingsDep
from app.errors import NotFound
from app.pagination import KeysetDep, next_cursor
from app.schemas import IdPath, Page

router = APIRouter(prefix="/datasets", tags=["datasets"])


async def _public(session, datasets) -> list[DatasetPublic]:
    counts = await repo.counts(session, [d.id for d in datasets])
    return [DatasetPublic.model_validate(d).model_copy(update={"counts": DatasetCounts(**counts[d.id])}) for d in datasets]


@router.post("", dependencies=[ADMIN], status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
async def create_dataset(body: DatasetCreate, session: SessionDep, settings: SettingsDep, actor: ActorDep):
    dataset = await service.create(session, body, settings=settings, actor=actor)
    return (await _public(session, [dataset]))[0]


@router.get("", dependencies=[READ], response_model=Page[DatasetPublic])
async def list_datasets(session: SessionDep, caller: PrincipalDep, page: KeysetDep):
    datasets = await repo.list_all(session, after_id=page.after_id, limit=page.limit, only=caller.datasets)
    return Page[DatasetPublic](data=await _public(session, datasets), next_cursor=next_cursor(datasets, page))


@router.get("/{dataset_id}", dependencies=[READ], response_model=DatasetPublic)
async def get_dataset(dataset: DatasetDep, session: SessionDep):
    return (await _public(session, [dataset]))[0]


@router.patch("/{dataset_id}", dependencies=[ADMIN], response_model=DatasetPublic)
async def update_dataset(body: DatasetUpdate, dataset: DatasetDep, session: SessionDep, settings: SettingsDep, actor: ActorDep):
    dataset = await service.update(session, dataset, body, settings=settings, actor=actor)
    return (await _public(session, [dataset]))[0]


@router.delete("/{dataset_id}", dependencies=[ADMIN], status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(dataset: DatasetDep, session: SessionDep, settings: SettingsDep, actor: ActorDep) -> None:
    await service.delete(session, dataset, settings, actor=actor)


@router.get(
    "/{dataset_id}/audit", response_model=Page[AuditEvent], dependencies=[ADMIN],
    summary="The dataset's audit trail (settings changes, deletion, every human change); kept after the dataset is deleted",
)
async def dataset_audit(dataset_id: IdPath, session: SessionDep, page: KeysetDep):
    events = await repo.audit_events(session, dataset_id, page.after_id or 0, page.limit)
    if not events and page.after_id is None and await repo.get(session, dataset_id) is None:
        raise NotFound(f"dataset {dataset_id} does not exist and left no audit trail")
    return Page[AuditEvent](data=[AuditEvent.model_validate(e) for e in events], next_cursor=next_cursor(events, page))
