"""Alembic environment: migrations are the only source of the schema."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from app.config import normalize_db_url
from app.models import Base

config = context.config
target_metadata = Base.metadata
if not config.get_main_option("sqlalchemy.url"):
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("set DATABASE_URL, or use `rlhf-forge db upgrade` (it knows the embedded Postgres)")
    config.set_main_option("sqlalchemy.url", normalize_db_url(os.environ["DATABASE_URL"]).replace("%", "%%"))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
