"""Dataset rules. Services flush, never commit: the caller owns the transaction."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_event, snapshot
from app.config import Settings
from app.datasets import repository as repo
from app.datasets.schemas import DatasetCreate, DatasetSettings, DatasetUpdate
from app.errors import Conflict, NotFound
from app.llm.endpoints import endpoint_config
from app.exports import files as export_files
from app.models import Dataset

# what a dataset's audit events record: settings choose endpoints and budgets, so every change shows
AUDITED = ("name", "description", "settings")


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


def check_settings(settings: Settings, data: DatasetSettings) -> dict:
    """The settings as stored, once every endpoint they name is configured (422 otherwise)."""
    for choice in (data.llm.generator, data.llm.judge, data.llm.synthesizer) if data.llm else ():
        if choice is not None and choice.endpoint is not None:
            endpoint_config(settings, choice.endpoint)
    return data.stored()


async def _audit(
    session: AsyncSession, dataset: Dataset, actor: str, action: str, before: dict | None, after: dict | None
) -> None:
    await record_event(
        session, dataset_id=dataset.id, prompt_id=None, actor=actor, action=action, target_type="dataset",
        target_id=dataset.id, before=before, after=after,
    )


async def create(
    session: AsyncSession, data: DatasetCreate, *, settings: Settings | None = None, actor: str = "local"
) -> Dataset:
    stored = check_settings(settings, data.settings) if settings is not None else data.settings.stored()
    dataset = Dataset(name=data.name, description=data.description, settings=stored)
    session.add(dataset)
    await _flush_unique_name(session, data.name)
    await session.refresh(dataset)
    if stored:  # a dataset born with settings: who chose its endpoints and budget
        await _audit(session, dataset, actor, "create", None, snapshot(dataset, AUDITED))
    return dataset


async def get_or_create(session: AsyncSession, name: str) -> Dataset:
    return await repo.get_by_name(session, name) or await create(session, DatasetCreate(name=name))


async def update(session: AsyncSession, dataset: Dataset, data: DatasetUpdate, *, settings: Settings, actor: str) -> Dataset:
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if data.settings is not None:
        changes["settings"] = check_settings(settings, data.settings)
    before = snapshot(dataset, AUDITED)
    for key, value in changes.items():
        setattr(dataset, key, value)
    if changes:
        await _flush_unique_name(session, dataset.name)
        await session.refresh(dataset)
        after = snapshot(dataset, AUDITED)
        if after != before:
            await _audit(session, dataset, actor, "update", before, after)
    return dataset


async def delete(session: AsyncSession, dataset: Dataset, settings: Settings, *, actor: str) -> None:
    """Delete the dataset and its rows. Its audit events stay (review_event has no foreign key to
    dataset), and this deletion is the last of them, with what the dataset was and held. Its export
    files go once the deletion is committed (not before: a delete that rolls back keeps its files)."""
    dataset_id = dataset.id
    before = snapshot(dataset, AUDITED) | {"counts": (await repo.counts(session, [dataset.id]))[dataset.id]}
    await _audit(session, dataset, actor, "delete", before, None)
    await session.delete(dataset)
    await session.flush()

    def purge(_session) -> None:
        export_files.purge_dataset(settings, dataset_id)

    event.listen(session.sync_session, "after_commit", purge, once=True)
