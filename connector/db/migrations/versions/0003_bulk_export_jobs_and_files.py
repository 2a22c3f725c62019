"""Bulk export jobs and files: resumable $export state (0003 after 0002, 2026-11-26)."""

import sqlalchemy as sa

from connector.db.migrations.ddl import create_table, drop_table

revision, down_revision = "0003", "0002"


def upgrade() -> None:
    create_table(
        "bulk_job",
        "id int, site str, request_key str, kickoff_url str, kickoff_method str,"
        " kickoff_params str, since str?, status_url str?, next_url str?, transaction_time str?,"
        " manifest_json text?, state str, message str, run_id int?, created_at time,"
        " updated_at time",
        indexes=("site",),
    )
    create_table(
        "bulk_file",
        "id int, job_id int, kind str, resource_type str, url str, expected_count int?,"
        " lines_loaded int, bytes_downloaded int, done bool, loaded_at time?",
        sa.ForeignKeyConstraint(["job_id"], ["bulk_job.id"]),
        unique=("job_id", "url"), indexes=("job_id",),
    )


def downgrade() -> None:
    drop_table("bulk_file", ("job_id",))
    drop_table("bulk_job", ("site",))
