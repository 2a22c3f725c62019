"""Derive stage: normalized tables → cohort_patient and therapy_line.

The rules (index CAR-T, progression, lines, response, classification) are pure
functions over the records in ``connector.cohort.model``; ``build`` is the thin
database layer. Windows and thresholds come from ``mappings/rules.toml``.
"""

from connector.cohort.build import DeriveSummary, load_timelines, run_derive
from connector.cohort.derive import derive_patient
from connector.cohort.model import (
    CohortPatientRecord,
    Exposure,
    Lab,
    LineRecord,
    PatientInfo,
    PatientTimeline,
    Procedure,
)
from connector.cohort.rules import Rules, RulesError, load_rules

__all__ = [
    "CohortPatientRecord",
    "DeriveSummary",
    "Exposure",
    "Lab",
    "LineRecord",
    "PatientInfo",
    "PatientTimeline",
    "Procedure",
    "Rules",
    "RulesError",
    "derive_patient",
    "load_rules",
    "load_timelines",
    "run_derive",
]
