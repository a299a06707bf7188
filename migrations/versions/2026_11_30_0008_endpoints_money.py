"""endpoints and money: the audit trail outlives its dataset; unknown costs are NULL

review_event.dataset_id loses its foreign key (ON DELETE CASCADE took a dataset's audit trail
with it): the events of a deleted dataset stay, with the deletion itself as the last one.
run.cost and run_item.cost may be NULL: the cost of a call whose model has no price is
unknown, never 0.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint(op.f("fk_review_event_dataset_id_dataset"), "review_event", type_="foreignkey")
    for table in ("run", "run_item"):
        op.alter_column(table, "cost", existing_type=sa.Numeric(14, 6), nullable=True, existing_server_default="0")


def downgrade() -> None:
    for table in ("run", "run_item"):
        op.execute(f"UPDATE {table} SET cost = 0 WHERE cost IS NULL")
        op.alter_column(table, "cost", existing_type=sa.Numeric(14, 6), nullable=False, existing_server_default="0")
    op.execute("DELETE FROM review_event e WHERE NOT EXISTS (SELECT 1 FROM dataset d WHERE d.id = e.dataset_id)")
    op.create_foreign_key(
        op.f("fk_review_event_dataset_id_dataset"), "review_event", "dataset", ["dataset_id"], ["id"], ondelete="CASCADE"
    )
