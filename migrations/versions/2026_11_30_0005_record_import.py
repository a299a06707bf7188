"""record import: completion source and ranker kind `imported`, completion provenance

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _check(table: str, column: str, values: tuple[str, ...]) -> None:
    name = op.f(f"ck_{table}_{column}")
    op.drop_constraint(name, table, type_="check")
    op.create_check_constraint(name, table, f"{column} IN ({', '.join(repr(v) for v in values)})")


def upgrade() -> None:
    _check("completion", "source", ("model", "human", "imported"))
    _check("ranking", "ranker_kind", ("judge", "human", "imported"))
    op.add_column(
        "completion",
        sa.Column("provenance", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
    )


def downgrade() -> None:
    op.execute("DELETE FROM ranking WHERE ranker_kind = 'imported'")
    op.execute("DELETE FROM completion WHERE source = 'imported'")
    op.drop_column("completion", "provenance")
    _check("ranking", "ranker_kind", ("judge", "human"))
    _check("completion", "source", ("model", "human"))
