"""Plain records the derive rules work on, free of any database type.

The rules take these and return these, so every rule can be tested with a
hand-built timeline; ``connector.cohort.build`` is the only place that turns
table rows into them and them back into rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PatientInfo:
    """The patient-level facts the cohort row carries through."""

    site: str
    source_id: str
    patient_key: str = ""
    birth_year: int | None = None
    sex: str | None = None
    death_date: dt.date | None = None
    #: Patient.deceasedBoolean (or a death date): death is known even when its date is not
    deceased: bool = False
    #: the latest day of any resource of the patient, mapped or not (map stage)
    last_record: dt.date | None = None


@dataclass(frozen=True, slots=True)
class Exposure:
    """One administration or course of one ingredient."""

    ingredient: str
    drug_class: str
    start: dt.date
    end: dt.date | None = None

    @property
    def last(self) -> dt.date:
        """The last day the drug was given (the end of a course, else the start)."""
        return self.end if self.end is not None and self.end >= self.start else self.start


@dataclass(frozen=True, slots=True)
class Procedure:
    """A procedure in study terms (CAR-T infusion, transplant, apheresis...)."""

    category: str
    date: dt.date
    product: str = ""
    end: dt.date | None = None


@dataclass(frozen=True, slots=True)
class Lab:
    """A lab value in the canonical unit of its analyte (or a coded result)."""

    analyte: str
    date: dt.date
    value: float | None = None
    unit: str | None = None
    value_code: str | None = None


@dataclass
class LineRecord:
    """One line of therapy after progression, as written to ``therapy_line``."""

    line: int
    start_date: dt.date
    end_date: dt.date | None
    drugs: list[str]
    therapy_class: str
    subclass: str
    best_response: str = "NE"
    response_note: str = ""
    pfs_event_date: dt.date | None = None
    pfs_censor_date: dt.date | None = None
    #: time to next treatment: the next line's start, or death; else censored at last contact
    ttnt_event_date: dt.date | None = None
    ttnt_censor_date: dt.date | None = None

    @property
    def drugs_text(self) -> str:
        return ";".join(self.drugs)


@dataclass
class CohortPatientRecord:
    """Why a patient is in or out of the cohort, with the dates the analysis needs."""

    site: str
    source_id: str
    patient_key: str
    in_cohort: bool
    exclusion_reason: str | None = None
    index_product: str | None = None
    index_date: dt.date | None = None
    progression_date: dt.date | None = None
    progression_basis: str | None = None
    death_date: dt.date | None = None
    last_contact_date: dt.date | None = None
    birth_year: int | None = None
    sex: str | None = None
    #: death known (a date, or Patient.deceasedBoolean without one)
    deceased: bool = False


@dataclass
class PatientTimeline:
    """Everything the normalized layer holds about one patient."""

    patient: PatientInfo
    exposures: list[Exposure] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    labs: list[Lab] = field(default_factory=list)
