"""Migrations are the only source of the schema: they go up and down cleanly and match the models."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

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


def test_one_head_and_files_sort_in_apply_order():
    """The next migration is the next number after the last file: no second head, no guessing."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(db.alembic_config("postgresql+psycopg://x/x"))
    assert len(script.get_heads()) == 1
    chain = list(reversed(list(script.walk_revisions())))  # base -> head
    assert [Path(rev.path).name for rev in chain] == sorted(p.name for p in (db.MIGRATIONS_DIR / "versions").glob("*.py"))
    assert [rev.revision for rev in chain] == [f"{i:04d}" for i in range(1, len(chain) + 1)]


def test_a_database_made_by_0_1_needs_one_stamp(empty_db, tmp_path):
    """0.1 applied the same migrations as 0001 -> 0003 -> 0004 -> 0002: its head is called '0002',
    today's review migration. `rlhf-forge db stamp 0004` then `db upgrade` (docs/guide.md, "Upgrading from 0.1")
    fixes it."""
    db.upgrade(empty_db, "0004")  # the schema 0.1 made
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    engine.dispose()
    with pytest.raises(SchemaOutdated):
        db.check_schema(empty_db)
    env = {**os.environ, "DATABASE_URL": empty_db, "FORGE_DATA_DIR": str(tmp_path)}
    for args in (["stamp", "0004"], ["upgrade"]):
        r = subprocess.run([sys.executable, "-m", "app.cli", "db", *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    db.check_schema(empty_db)
    assert db.current_revisions(empty_db) == db.head_revisions()


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
