"""Migrations are the only source of the schema: they go up and down cleanly and match the models."""

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import db
from app.errors import SchemaOutdated


@pytest.fixture
def empty_db(pg_server_url):
    name = f"forge_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def _tables(url):
    engine = create_engine(url)
    with engine.connect() as conn:
        names = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1")).scalars().all()
    engine.dispose()
    return set(names) - {"alembic_version"}


def test_upgrade_downgrade_upgrade(empty_db):
    with pytest.raises(SchemaOutdated, match="rlhf-forge db upgrade"):
        db.check_schema(empty_db)
    db.upgrade(empty_db)
    tables = _tables(empty_db)
    assert {"dataset", "prompt", "completion", "ranking", "review_event", "run", "export"} <= tables
    db.check_schema(empty_db)
    db.downgrade(empty_db, "base")
    assert _tables(empty_db) == set()
    db.upgrade(empty_db)
    assert _tables(empty_db) == tables


def test_models_match_migrations(database_url):
    """Autogenerate against the migrated database finds nothing to change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from app.models import Base

    engine = create_engine(database_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [d for d in compare_metadata(ctx, Base.metadata) if not _is_foreign_table(d)]
    engine.dispose()
    assert diff == []


def _is_foreign_table(diff) -> bool:
    """Tables the migrations create for libraries (the job queue) have no model."""
    op = diff[0] if isinstance(diff, tuple) else diff[0][0]
    obj = diff[1] if isinstance(diff, tuple) else diff[0][1]
    name = getattr(obj, "name", "") or ""
    table = getattr(getattr(obj, "table", None), "name", "") or ""
    return op.startswith("remove_") and (name.startswith("procrastinate") or table.startswith("procrastinate"))
