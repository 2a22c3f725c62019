"""Initial schema: the raw, normalized and derived layers as first released (2026-11-26).

Databases created before migrations existed (``create_all``) equal this revision
and are stamped with it (``BASELINE``) before upgrading.
"""

from connector.db.migrations.ddl import create_table, drop_table

revision, down_revision = "0001", None

# Every table in the order it is created: its columns (see ddl.py), its unique
# constraint and the columns with an index of their own, in the order they were created.
TABLES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "cohort_patient": (
        "id int, site str, source_id str, patient_key str, in_cohort bool, exclusion_reason str?,"
        " index_product str?, index_date date?, progression_date date?, progression_basis str?,"
        " death_date date?, last_contact_date date?, birth_year int?, sex str?",
        ("site", "source_id"), ("site",)),
    "extract_run": (
        "id int, site str, source str, mode str, started_at time, finished_at time?, status str,"
        " counts_json str, retries int, errors int, message str",
        (), ("site",)),
    "lab_result": (
        "id int, site str, patient_source_id str, source_id str, version_id str?, analyte str,"
        " effective_date date, value float?, unit str?, value_code str?, original_value str?,"
        " original_unit str?",
        ("site", "patient_source_id", "analyte", "effective_date"), ("patient_source_id", "site")),
    "medication_exposure": (
        "id int, site str, patient_source_id str, source_type str, source_id str, version_id str?,"
        " ingredient str, drug_class str, start_date date, end_date date?, status str?,"
        " code_system str?, code str?, display str?",
        ("site", "patient_source_id", "ingredient", "start_date"), ("patient_source_id", "site")),
    "patient": (
        "id int, site str, source_id str, patient_key str, birth_year int?, sex str?,"
        " death_date date?, deceased bool, version_id str?",
        ("site", "source_id"), ("patient_key", "site")),
    "procedure_event": (
        "id int, site str, patient_source_id str, source_type str, source_id str, version_id str?,"
        " category str, product str, performed_date date, end_date date?, status str?,"
        " code_system str?, code str?, display str?",
        ("site", "patient_source_id", "category", "performed_date", "product"),
        ("patient_source_id", "site")),
    "quarantine": (
        "id int, site str, stage str, resource_type str?, resource_id str?, reason str,"
        " source str, content_hash str, raw text, created_at time",
        ("site", "stage", "content_hash", "reason"), ("site",)),
    "raw_resource": (
        "id int, site str, resource_type str, resource_id str, version_id str?,"
        " last_updated str?, fetched_at time, content_hash str, source str, deleted bool,"
        " body text",
        ("site", "resource_type", "resource_id"), ("resource_type", "site")),
    "site": ("name str, loaded_at time", (), ()),
    "sync_state": (
        "id int, site str, resource_type str, mode str, watermark str, updated_at time",
        ("site", "resource_type", "mode"), ()),
    "therapy_line": (
        "id int, site str, source_id str, patient_key str, line int, start_date date,"
        " end_date date?, drugs str, therapy_class str, subclass str, best_response str,"
        " response_note str, pfs_event_date date?, pfs_censor_date date?",
        ("site", "source_id", "line"), ("site",)),
}


def upgrade() -> None:
    for table, (spec, unique, indexes) in TABLES.items():
        create_table(table, spec, key="name" if table == "site" else "id", unique=unique,
                     indexes=indexes)


def downgrade() -> None:
    for table in reversed(TABLES):
        drop_table(table, TABLES[table][2])
