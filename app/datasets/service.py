"""Dataset rules. Services flush, never commit: the caller owns the transaction."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.datasets import repository as repo
from app.datasets.schemas import DatasetCreate, DatasetUpdate
from app.errors import Conflict, NotFound
from app.exports import files as export_files
from app.models import Dataset


async def get_or_404(session: AsyncSession, dataset_id: int) -> Dataset:
    dataset = await repo.get(session, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return dataset


async def get_by_name_or_404(session: AsyncSession, name: str) -> Dataset:
    dataset = await repo.get_by_name(session, name)
    if dataset is None:
        raise NotFound(f"dataset {name!r} does not exist")
    return dataset


async def _flush_unique_name(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a dataset named {name!r} already exists", details={"field": "name"}) from None


async def create(session: AsyncSession, data: DatasetCreate) -> Dataset:
    dataset = Dataset(name=data.name, description=data.description, settings=data.settings)
    session.add(dataset)
    await _flush_unique_name(session, data.name)
    await session.refresh(dataset)
    return dataset


async def get_or_create(session: AsyncSession, name: str) -> Dataset:
    return await repo.get_by_name(session, name) or await create(session, DatasetCreate(name=name))


async def update(session: AsyncSession, dataset: Dataset, data: DatasetUpdate) -> Dataset:
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    for key, value in changes.items():
        setattr(dataset, key, value)
    if changes:
        await _flush_unique_name(session, dataset.name)
        await session.refresh(dataset)
    return dataset


async def delete(session: AsyncSession, dataset: Dataset, settings: Settings) -> None:
    """The dataset and everything in it; its export files go once the deletion is committed
    (not before: a delete that rolls back keeps its files)."""
    dataset_id = dataset.id
    await session.delete(dataset)
    await session.flush()

    def purge(_session) -> None:
        export_files.purge_dataset(settings, dataset_id)

    event.listen(session.sync_session, "after_commit", purge, once=True)
