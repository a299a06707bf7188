"""llm pipeline: run items, response cache, shared rate limits, procrastinate's job tables

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _raw(sql: str) -> None:
    # procrastinate's SQL holds '%' and ':' that SQLAlchemy/psycopg would take for parameters:
    # run it on the driver connection (same transaction) without parameter parsing.
    op.get_bind().connection.driver_connection.execute(sql)


def upgrade() -> None:
    op.create_table(
        "run_item",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("completion_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost", sa.Numeric(precision=14, scale=6), server_default="0", nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name=op.f("ck_run_item_status")),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompt.id"], name=op.f("fk_run_item_prompt_id_prompt"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_run_item_run_id_run"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "item_index", name=op.f("pk_run_item")),
    )
    op.create_index(op.f("ix_run_item_prompt_id"), "run_item", ["prompt_id"], unique=False)
    op.create_table(
        "llm_cache",
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_llm_cache")),
    )
    op.create_table(
        "llm_rate_limit",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_llm_rate_limit")),
    )
    # the job queue's tables, types and functions, exactly as procrastinate ships them
    from procrastinate.schema import SchemaManager

    _raw(SchemaManager.get_schema())


def downgrade() -> None:
    _raw(
        """
        DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
            procrastinate_jobs, procrastinate_workers CASCADE;
        DO $$
        DECLARE f record;
        BEGIN
            FOR f IN SELECT oid::regprocedure AS sig FROM pg_proc
                     WHERE proname LIKE 'procrastinate%' AND pronamespace = 'public'::regnamespace
            LOOP
                EXECUTE 'DROP FUNCTION IF EXISTS ' || f.sig || ' CASCADE';
            END LOOP;
        END $$;
        DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_status,
            procrastinate_job_event_type CASCADE;
        """
    )
    op.drop_table("llm_rate_limit")
    op.drop_table("llm_cache")
    op.drop_index(op.f("ix_run_item_prompt_id"), table_name="run_item")
    op.drop_table("run_item")
