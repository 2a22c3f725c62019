"""The content of a database's normalized and derived tables, to compare runs by.

Ids, timestamps and run logs differ between two runs that loaded the same data;
these columns do not. Used by the tests that show a refused or contended run lost
nothing: their tables must equal a clean run's.
"""

from __future__ import annotations

from sqlalchemy import create_engine, text

TABLES: dict[str, list[str]] = {
    "raw_resource": ["site", "resource_type", "resource_id", "version_id", "content_hash"],
    "patient": ["site", "source_id", "patient_key", "birth_year", "sex", "death_date"],
    "medication_exposure": ["site", "patient_source_id", "source_id", "ingredient",
                            "drug_class", "start_date", "end_date"],
    "procedure_event": ["site", "patient_source_id", "source_id", "category", "product",
                        "performed_date"],
    "lab_result": ["site", "patient_source_id", "source_id", "analyte", "effective_date",
                   "value", "unit", "value_code"],
    "cohort_patient": ["site", "source_id", "in_cohort", "exclusion_reason", "index_date",
                       "progression_date", "progression_basis", "death_date"],
    "therapy_line": ["site", "source_id", "line", "start_date", "end_date", "drugs",
                     "therapy_class", "subclass", "best_response", "pfs_event_date",
                     "pfs_censor_date"],
}


def snapshot(db_url: str, sites: list[str] | None = None) -> dict[str, list[tuple]]:
    """Every table of ``TABLES`` as sorted rows of its stable columns (of ``sites`` only)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            out = {}
            for table, cols in TABLES.items():
                rows = conn.execute(text(f"SELECT {', '.join(cols)} FROM {table}"))  # noqa: S608
                out[table] = sorted(tuple(map(str, row)) for row in rows
                                    if sites is None or row[0] in sites)
            return out
    finally:
        engine.dispose()


def sites_in(db_url: str, table: str = "patient") -> set[str]:
    """The sites that have rows in ``table``."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text(f"SELECT DISTINCT site FROM {table}"))}  # noqa: S608
    finally:
        engine.dispose()
