"""review: queue leases on prompt, item id and undo link on review_event, review_verdict

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OPEN = "review_status IN ('pending', 'needs_review')"
FLAGGED = "review_status = 'needs_review' OR (flag_reasons <> '{}'::text[] AND review_status = 'pending')"


def upgrade() -> None:
    op.add_column("prompt", sa.Column("lease_holder", sa.String(length=200), nullable=True))
    op.add_column("prompt", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("prompt", sa.Column("reviewed_by", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False))
    # the review queue: open prompts by age, flagged rows not yet resolved, live leases
    op.create_index("ix_prompt_review_open", "prompt", ["dataset_id", "id"], postgresql_where=sa.text(OPEN))
    op.create_index("ix_prompt_review_flagged", "prompt", ["dataset_id", "id"], postgresql_where=sa.text(FLAGGED))
    op.create_index("ix_ranking_review_flagged", "ranking", ["dataset_id", "prompt_id"], postgresql_where=sa.text(FLAGGED))
    op.create_index("ix_completion_review_flagged", "completion", ["dataset_id", "prompt_id"], postgresql_where=sa.text(FLAGGED))
    op.create_index("ix_prompt_lease_holder", "prompt", ["lease_holder"], postgresql_where=sa.text("lease_holder IS NOT NULL"))

    op.add_column("review_event", sa.Column("prompt_id", sa.BigInteger(), nullable=True))
    op.add_column("review_event", sa.Column("undoes_event_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_review_event_undoes_event_id_review_event"),
        "review_event",
        "review_event",
        ["undoes_event_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_review_event_prompt_id_id", "review_event", ["prompt_id", "id"])

    op.create_table(
        "review_verdict",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger(), nullable=False),
        sa.Column("reviewer", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("ranking_id", sa.BigInteger(), nullable=True),
        sa.Column("judge_ranking_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("decision IN ('approved', 'rejected')", name=op.f("ck_review_verdict_decision")),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], name=op.f("fk_review_verdict_dataset_id_dataset"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_review_verdict_prompt_id_prompt"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ranking_id"], ["ranking.id"], name=op.f("fk_review_verdict_ranking_id_ranking"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(
            ["judge_ranking_id"], ["ranking.id"], name=op.f("fk_review_verdict_judge_ranking_id_ranking"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_verdict")),
        sa.UniqueConstraint("prompt_id", "reviewer", name="uq_review_verdict_prompt_id_reviewer"),
    )
    op.create_index("ix_review_verdict_dataset_id_id", "review_verdict", ["dataset_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_review_verdict_dataset_id_id", table_name="review_verdict")
    op.drop_table("review_verdict")
    op.drop_index("ix_review_event_prompt_id_id", table_name="review_event")
    op.drop_constraint(op.f("fk_review_event_undoes_event_id_review_event"), "review_event", type_="foreignkey")
    op.drop_column("review_event", "undoes_event_id")
    op.drop_column("review_event", "prompt_id")
    # if_exists: a database upgraded by the first version of this revision has the one index
    # it made (ix_prompt_dataset_id_created_at_id) instead of these
    for name, table in (
        ("ix_prompt_lease_holder", "prompt"),
        ("ix_completion_review_flagged", "completion"),
        ("ix_ranking_review_flagged", "ranking"),
        ("ix_prompt_review_flagged", "prompt"),
        ("ix_prompt_review_open", "prompt"),
        ("ix_prompt_dataset_id_created_at_id", "prompt"),
    ):
        op.drop_index(name, table_name=table, if_exists=True)
    op.drop_column("prompt", "reviewed_by")
    op.drop_column("prompt", "lease_expires_at")
    op.drop_column("prompt", "lease_holder")
