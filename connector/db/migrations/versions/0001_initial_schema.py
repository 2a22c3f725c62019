"""Initial schema: the raw, normalized and derived layers as first released.

Databases created before migrations existed (``create_all``) equal this revision
and are stamped with it (``BASELINE``) before upgrading.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 06:10:46.378653
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cohort_patient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("patient_key", sa.String(), nullable=False),
        sa.Column("in_cohort", sa.Boolean(), nullable=False),
        sa.Column("exclusion_reason", sa.String(), nullable=True),
        sa.Column("index_product", sa.String(), nullable=True),
        sa.Column("index_date", sa.Date(), nullable=True),
        sa.Column("progression_date", sa.Date(), nullable=True),
        sa.Column("progression_basis", sa.String(), nullable=True),
        sa.Column("death_date", sa.Date(), nullable=True),
        sa.Column("last_contact_date", sa.Date(), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("sex", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "source_id"),
    )
    with op.batch_alter_table("cohort_patient", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cohort_patient_site"), ["site"], unique=False)

    op.create_table(
        "extract_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("counts_json", sa.String(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("extract_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_extract_run_site"), ["site"], unique=False)

    op.create_table(
        "lab_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("patient_source_id", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("version_id", sa.String(), nullable=True),
        sa.Column("analyte", sa.String(), nullable=False),
        sa.Column("effective_date", sa.Date(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(), nullable=True),
        sa.Column("value_code", sa.String(), nullable=True),
        sa.Column("original_value", sa.String(), nullable=True),
        sa.Column("original_unit", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "patient_source_id", "analyte", "effective_date"),
    )
    with op.batch_alter_table("lab_result", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lab_result_patient_source_id"), ["patient_source_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_lab_result_site"), ["site"], unique=False)

    op.create_table(
        "medication_exposure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("patient_source_id", sa.String(), nullable=False),
        sa.Column("source_type", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("version_id", sa.String(), nullable=True),
        sa.Column("ingredient", sa.String(), nullable=False),
        sa.Column("drug_class", sa.String(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("code_system", sa.String(), nullable=True),
        sa.Column("code", sa.String(), nullable=True),
        sa.Column("display", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "patient_source_id", "ingredient", "start_date"),
    )
    with op.batch_alter_table("medication_exposure", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_medication_exposure_patient_source_id"),
            ["patient_source_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_medication_exposure_site"), ["site"], unique=False)

    op.create_table(
        "patient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("patient_key", sa.String(), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("sex", sa.String(), nullable=True),
        sa.Column("death_date", sa.Date(), nullable=True),
        sa.Column("deceased", sa.Boolean(), nullable=False),
        sa.Column("version_id", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "source_id"),
    )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_patient_key"), ["patient_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_patient_site"), ["site"], unique=False)

    op.create_table(
        "procedure_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("patient_source_id", sa.String(), nullable=False),
        sa.Column("source_type", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("version_id", sa.String(), nullable=True),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("product", sa.String(), nullable=False),
        sa.Column("performed_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("code_system", sa.String(), nullable=True),
        sa.Column("code", sa.String(), nullable=True),
        sa.Column("display", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "patient_source_id", "category", "performed_date", "product"),
    )
    with op.batch_alter_table("procedure_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_procedure_event_patient_source_id"), ["patient_source_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_procedure_event_site"), ["site"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("resource_type", sa.String(), nullable=True),
        sa.Column("resource_id", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "stage", "content_hash", "reason"),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quarantine_site"), ["site"], unique=False)

    op.create_table(
        "raw_resource",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("resource_type", sa.String(), nullable=False),
        sa.Column("resource_id", sa.String(), nullable=False),
        sa.Column("version_id", sa.String(), nullable=True),
        sa.Column("last_updated", sa.String(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "resource_type", "resource_id"),
    )
    with op.batch_alter_table("raw_resource", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_raw_resource_resource_type"), ["resource_type"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_raw_resource_site"), ["site"], unique=False)

    op.create_table(
        "site",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "sync_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("resource_type", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("watermark", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "resource_type", "mode"),
    )
    op.create_table(
        "therapy_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("patient_key", sa.String(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("drugs", sa.String(), nullable=False),
        sa.Column("therapy_class", sa.String(), nullable=False),
        sa.Column("subclass", sa.String(), nullable=False),
        sa.Column("best_response", sa.String(), nullable=False),
        sa.Column("response_note", sa.String(), nullable=False),
        sa.Column("pfs_event_date", sa.Date(), nullable=True),
        sa.Column("pfs_censor_date", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site", "source_id", "line"),
    )
    with op.batch_alter_table("therapy_line", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_therapy_line_site"), ["site"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("therapy_line", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_therapy_line_site"))

    op.drop_table("therapy_line")
    op.drop_table("sync_state")
    op.drop_table("site")
    with op.batch_alter_table("raw_resource", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_raw_resource_site"))
        batch_op.drop_index(batch_op.f("ix_raw_resource_resource_type"))

    op.drop_table("raw_resource")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_site"))

    op.drop_table("quarantine")
    with op.batch_alter_table("procedure_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_procedure_event_site"))
        batch_op.drop_index(batch_op.f("ix_procedure_event_patient_source_id"))

    op.drop_table("procedure_event")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_site"))
        batch_op.drop_index(batch_op.f("ix_patient_patient_key"))

    op.drop_table("patient")
    with op.batch_alter_table("medication_exposure", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_medication_exposure_site"))
        batch_op.drop_index(batch_op.f("ix_medication_exposure_patient_source_id"))

    op.drop_table("medication_exposure")
    with op.batch_alter_table("lab_result", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lab_result_site"))
        batch_op.drop_index(batch_op.f("ix_lab_result_patient_source_id"))

    op.drop_table("lab_result")
    with op.batch_alter_table("extract_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extract_run_site"))

    op.drop_table("extract_run")
    with op.batch_alter_table("cohort_patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cohort_patient_site"))

    op.drop_table("cohort_patient")
