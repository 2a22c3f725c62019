"""The cohort database: one schema, three layers (raw, normalized, derived).

Every table lives here so that migrations and the multi-center merge see one
schema; each stage writes only its own layer and reads only the layer before it.
"""

from connector.db.engine import get_engine, init_db, read_snapshot, session_scope
from connector.db.models import (
    CohortPatient,
    ExtractRun,
    LabResult,
    MedicationExposure,
    Patient,
    ProcedureEvent,
    Quarantine,
    RawResource,
    Site,
    SyncState,
    TherapyLine,
)

__all__ = [
    "CohortPatient",
    "ExtractRun",
    "LabResult",
    "MedicationExposure",
    "Patient",
    "ProcedureEvent",
    "Quarantine",
    "RawResource",
    "Site",
    "SyncState",
    "TherapyLine",
    "get_engine",
    "init_db",
    "read_snapshot",
    "session_scope",
]
