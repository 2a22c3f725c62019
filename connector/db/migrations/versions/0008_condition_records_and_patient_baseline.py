"""Condition records and patient baseline, issue 16 (0008 after 0007, 2026-12-05)."""

from connector.db.migrations.ddl import create_table, drop_table

revision, down_revision = "0008", "0007"


def upgrade() -> None:
    create_table(
        "condition_record",
        "id int, site str, patient_source_id str, source_type str, source_id str, version_id str?,"
        " finding str, status str, onset_date date, code_system str?, code str?, display str?",
        unique=("site", "patient_source_id", "finding", "onset_date", "status"),
        indexes=("patient_source_id", "site"),
    )
    create_table(
        "patient_baseline",
        "id int, site str, source_id str, prior_lines int?, del_17p str?, t_4_14 str?,"
        " t_14_16 str?, gain_1q str?, extramedullary str?, riss_stage str?, ldh float?,"
        " ldh_elevated bool?, lab_interval_days float?",
        unique=("site", "source_id"), indexes=("site",),
    )


def downgrade() -> None:
    drop_table("patient_baseline", ("site",))
    drop_table("condition_record", ("patient_source_id", "site"))
