"""All SQL for API keys and their dataset grants."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, ApiKeyDataset, Completion, Dataset, Prompt, Ranking, Run

# the tables whose rows a path id may name, for finding the dataset a request touches
SCOPED: dict[str, Table] = {
    "prompt_id": Prompt.__table__,
    "completion_id": Completion.__table__,
    "ranking_id": Ranking.__table__,
    "run_id": Run.__table__,
}


async def add(session: AsyncSession, key: ApiKey, dataset_ids: list[int]) -> ApiKey:
    session.add(key)
    await session.flush()
    if dataset_ids:
        await session.execute(insert(ApiKeyDataset), [{"api_key_id": key.id, "dataset_id": d} for d in dataset_ids])
    return key


async def by_hash(session: AsyncSession, key_hash: str) -> tuple[ApiKey, list[int]] | None:
    """The key with this hash and the datasets granted to it, in one round trip."""
    grants = (
        select(func.coalesce(func.array_agg(ApiKeyDataset.dataset_id), []))
        .where(ApiKeyDataset.api_key_id == ApiKey.id)
        .scalar_subquery()
    )
    row = (await session.execute(select(ApiKey, grants).where(ApiKey.key_hash == key_hash))).first()
    return None if row is None else (row[0], list(row[1]))


async def get(session: AsyncSession, key_id: int) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def list_all(session: AsyncSession, *, after_id: int | None = None, limit: int | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(ApiKey.id > after_id)
    return list((await session.execute(stmt)).scalars())


async def grants(session: AsyncSession, key_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {k: [] for k in key_ids}
    rows = await session.execute(
        select(ApiKeyDataset.api_key_id, ApiKeyDataset.dataset_id)
        .where(ApiKeyDataset.api_key_id.in_(key_ids))
        .order_by(ApiKeyDataset.dataset_id)
    )
    for key_id, dataset_id in rows:
        out[key_id].append(dataset_id)
    return out


async def revoke(session: AsyncSession, key_id: int, actor: str, at: datetime) -> None:
    await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=at, revoked_by=actor)
    )


async def any_key(session: AsyncSession) -> bool:
    """Whether any key was ever made (revoked and expired ones count: revoking every key locks
    the service, it never opens it again)."""
    return bool(await session.scalar(select(exists().select_from(ApiKey))))


async def dataset_ids_by_name(session: AsyncSession, names: list[str]) -> dict[str, int]:
    rows = await session.execute(select(Dataset.name, Dataset.id).where(Dataset.name.in_(names)))
    return {name: id_ for name, id_ in rows}


async def dataset_names(session: AsyncSession) -> dict[int, str]:
    return dict((await session.execute(select(Dataset.id, Dataset.name))).tuples().all())


async def existing_datasets(session: AsyncSession, ids: list[int]) -> set[int]:
    return set((await session.execute(select(Dataset.id).where(Dataset.id.in_(ids)))).scalars())


async def dataset_of(session: AsyncSession, param: str, row_id: int) -> int | None:
    """The dataset of the prompt / completion / ranking / run `row_id` (None: no such row)."""
    table = SCOPED[param]
    return await session.scalar(select(table.c.dataset_id).where(table.c.id == row_id))
