"""raw_code_count: Observation code counts of the DuckDB load path (0005 after 0004, 2026-12-05)."""

from connector.db.migrations.ddl import create_table, drop_table

revision, down_revision = "0005", "0004"


def upgrade() -> None:
    create_table(
        "raw_code_count",
        "id int, site str, file str, source str, resource_type str, trimmed str, n int,"
        " body text, loaded_at time",
        unique=("site", "file", "body"),
    )


def downgrade() -> None:
    drop_table("raw_code_count")
