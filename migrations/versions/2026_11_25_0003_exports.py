"""exports: frozen versions (export_item), render options, status check

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("export", sa.Column("options", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False))
    op.add_column("export", sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("export", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_export_status"), "export", "status IN ('queued', 'running', 'succeeded', 'failed')"
    )
    op.create_table(
        "export_item",
        sa.Column("export_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger(), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("sft_completion_id", sa.BigInteger(), nullable=True),
        sa.Column("sft_completion", sa.Text(), nullable=True),
        sa.Column("rm_completion_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.Column("rm_completions", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("rm_ranks", postgresql.ARRAY(sa.Integer()), nullable=True),
        sa.Column("rm_ranker_kind", sa.String(length=16), nullable=True),
        sa.Column("in_rl", sa.Boolean(), server_default="false", nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"], ["export.id"], name=op.f("fk_export_item_export_id_export"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("export_id", "prompt_id", name=op.f("pk_export_item")),
    )


def downgrade() -> None:
    op.drop_table("export_item")
    op.drop_constraint(op.f("ck_export_status"), "export", type_="check")
    op.drop_column("export", "finished_at")
    op.drop_column("export", "frozen_at")
    op.drop_column("export", "options")
