"""A Postgres for benchmarks: BENCH_DATABASE_URL / TEST_DATABASE_URL when set, else an embedded
one in a temp folder; a fresh database migrated to head, dropped at the end."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import uuid
import warnings

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import db
from app.config import normalize_db_url

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@contextlib.contextmanager
def bench_database():
    server = None
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if not url:
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="forge-bench-pg-"), cleanup_mode="delete")
        url = server.get_uri()
    url = normalize_db_url(url)
    name = f"forge_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    bench_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        db.upgrade(bench_url)
        yield bench_url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if server is not None:
            server.cleanup()


def psycopg_conninfo(url: str) -> str:
    """The plain libpq URL of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def rows_from_args(doc: str, quick: int, full: int) -> int:
    """The benchmark size from the command line: --rows N, --quick, or the full size."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{quick:,} rows instead of {full:,}")
    parser.add_argument("--rows", type=int, default=None)
    args = parser.parse_args()
    return args.rows or (quick if args.quick else full)
