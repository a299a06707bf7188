"""dataset integrity: near-duplicate band keys, stale rows, split groups

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

STATUSES_BEFORE = "review_status IN ('pending', 'approved', 'rejected', 'needs_review')"
STATUSES_AFTER = "review_status IN ('pending', 'approved', 'rejected', 'needs_review', 'stale')"
TABLES = ("prompt", "completion", "ranking")
BACKFILL_BATCH = 5000


def _backfill_lsh_keys() -> None:
    """Band keys for the prompts stored before this revision (new ones get theirs when written)."""
    from app.prompts.dedup import lsh_keys

    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(
            sa.text("SELECT id, dataset_id, text FROM prompt WHERE id > :after ORDER BY id LIMIT :n"),
            {"after": after, "n": BACKFILL_BATCH},
        ).all()
        if not rows:
            return
        by_dataset: dict[int, list[tuple[int, str]]] = {}
        for pid, ds, body in rows:
            by_dataset.setdefault(ds, []).append((pid, body))
        for ds, items in by_dataset.items():
            keys = lsh_keys([t for _, t in items], ds)
            conn.execute(
                sa.text(
                    "UPDATE prompt p SET lsh_keys = CAST(q.k AS bigint[]) "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[])) AS q(id, k) WHERE p.id = q.id"
                ),
                {"ids": [p for p, _ in items], "keys": ["{" + ",".join(map(str, k)) + "}" for k in keys.tolist()]},
            )
        after = rows[-1][0]


def upgrade() -> None:
    op.add_column("prompt", sa.Column("lsh_keys", postgresql.ARRAY(sa.BigInteger()), nullable=True))
    op.add_column("export_item", sa.Column("split_group", sa.BigInteger(), nullable=True))
    op.add_column("export", sa.Column("integrity", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    for table in TABLES:
        op.drop_constraint(op.f(f"ck_{table}_review_status"), table, type_="check")
        op.create_check_constraint(op.f(f"ck_{table}_review_status"), table, STATUSES_AFTER)
    _backfill_lsh_keys()
    op.create_index("ix_prompt_lsh_keys", "prompt", ["lsh_keys"], unique=False, postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_prompt_lsh_keys", table_name="prompt", postgresql_using="gin")
    for table in TABLES:
        op.execute(f"UPDATE {table} SET review_status = 'needs_review' WHERE review_status = 'stale'")
        op.drop_constraint(op.f(f"ck_{table}_review_status"), table, type_="check")
        op.create_check_constraint(op.f(f"ck_{table}_review_status"), table, STATUSES_BEFORE)
    op.drop_column("export", "integrity")
    op.drop_column("export_item", "split_group")
    op.drop_column("prompt", "lsh_keys")
