"""`db.driver_rows`: statements on the driver in the session's transaction, or, `alone`, as their
own transaction when the session holds none yet."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError

from app import db

INSERT = text("INSERT INTO dataset (name) VALUES (:name) RETURNING name")
COUNT = text("SELECT count(*) AS n FROM dataset WHERE name LIKE 'driver-%'")


async def test_alone_runs_as_its_own_transaction_only_when_none_is_open(session):
    # nothing open yet: the insert commits by itself, so the session's rollback cannot undo it
    [[row]] = await db.driver_rows(session, (INSERT, {"name": "driver-alone"}), alone=True)
    assert row == {"name": "driver-alone"}
    await session.rollback()
    [[count]] = await db.driver_rows(session, (COUNT, {}))
    assert count["n"] == 1
    # the connection is transactional again: what follows rolls back
    await db.driver_rows(session, (INSERT, {"name": "driver-after"}))
    await session.rollback()
    # a transaction already open (a read above began one): `alone` joins it, and it rolls back
    await session.execute(text("SELECT 1"))
    await db.driver_rows(session, (INSERT, {"name": "driver-joined"}), alone=True)
    await session.rollback()
    names = (await session.execute(text("SELECT name FROM dataset WHERE name LIKE 'driver-%' ORDER BY name"))).scalars().all()
    assert names == ["driver-alone"]
    await session.rollback()


async def test_alone_with_a_failing_statement_leaves_the_connection_usable(session):
    bad = text("INSERT INTO dataset (name) VALUES (:name)")
    with pytest.raises(DataError, match="too long"):  # the name's column refuses it, as SQLAlchemy raises it
        await db.driver_rows(session, (bad, {"name": "x" * 10_000}), alone=True)
    await session.rollback()
    await db.driver_rows(session, (INSERT, {"name": "driver-ok"}))
    await session.commit()
    [[count]] = await db.driver_rows(session, (COUNT, {}))
    assert count["n"] == 1
    await session.rollback()
