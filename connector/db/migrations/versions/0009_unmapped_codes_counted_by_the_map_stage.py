"""Unmapped codes counted by the map stage (0009 after 0008, 2026-12-05)."""

from connector.db.migrations.ddl import create_table, drop_table

revision, down_revision = "0009", "0008"


def upgrade() -> None:
    create_table(
        "unmapped_code",
        "id int, site str, resource_type str, system str, code str, text str, display str, n int",
        indexes=("site",),
    )
    create_table("unmapped_count", "site str, resources int, stored_as_code int, mapped_at time",
                 key="site")


def downgrade() -> None:
    drop_table("unmapped_count")
    drop_table("unmapped_code", ("site",))
