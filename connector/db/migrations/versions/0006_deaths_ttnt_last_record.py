"""Deaths without a date, time to next treatment, last record date (0006 after 0005, 2026-12-05)."""

from connector.db.migrations.ddl import add_columns, drop_columns

revision, down_revision = "0006", "0005"


def upgrade() -> None:
    add_columns("cohort_patient", "deceased bool=0")
    add_columns("patient", "last_record_date date?")
    add_columns("therapy_line", "ttnt_event_date date?, ttnt_censor_date date?")


def downgrade() -> None:
    drop_columns("therapy_line", "ttnt_censor_date", "ttnt_event_date")
    drop_columns("patient", "last_record_date")
    drop_columns("cohort_patient", "deceased")
