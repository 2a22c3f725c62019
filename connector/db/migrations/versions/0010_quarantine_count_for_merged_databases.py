"""Quarantine counted per site for merged databases (0010 after 0009, 2026-12-06)."""

from connector.db.migrations.ddl import create_table, drop_table

revision, down_revision = "0010", "0009"


def upgrade() -> None:
    create_table("quarantine_count", "id int, site str, stage str, resource_type str, n int",
                 unique=("site", "stage", "resource_type"), indexes=("site",))


def downgrade() -> None:
    drop_table("quarantine_count", ("site",))
