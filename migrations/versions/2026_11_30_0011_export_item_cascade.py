"""export_item: the cascade from export by one statement trigger, not a per-row foreign key

Freezing a version inserts one export_item row per prompt, all of one export; the foreign key
checked each of them (an index probe and a row lock per row: about 40% of a million-row freeze).
The freeze now locks its export row once (FOR KEY SHARE, what each check took), and deleting an
export (or its dataset) deletes its items through a statement trigger.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

FK = "fk_export_item_export_id_export"


def upgrade() -> None:
    op.drop_constraint(FK, "export_item", type_="foreignkey")
    op.execute(
        """
CREATE FUNCTION export_item_cascade() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM export_item i USING gone g WHERE i.export_id = g.id;
  RETURN NULL;
END
$$
"""
    )
    op.execute(
        "CREATE TRIGGER export_item_cascade AFTER DELETE ON export REFERENCING OLD TABLE AS gone "
        "FOR EACH STATEMENT EXECUTE FUNCTION export_item_cascade()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER export_item_cascade ON export")
    op.execute("DROP FUNCTION export_item_cascade()")
    op.execute("DELETE FROM export_item i WHERE NOT EXISTS (SELECT 1 FROM export e WHERE e.id = i.export_id)")
    op.create_foreign_key(FK, "export_item", "export", ["export_id"], ["id"], ondelete="CASCADE")
