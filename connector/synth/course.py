"""The true clinical course of one synthetic patient, before it becomes FHIR.

Days are proleptic ordinals (``datetime.date.toordinal()``): integer arithmetic
keeps the simulation fast and exact; they become ISO dates only when written.
Ground truth and FHIR resources are both read off this record, so they cannot
disagree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache


@lru_cache(maxsize=8192)
def iso(day: int) -> str:
    """ISO text of an ordinal day (cached: the same days recur constantly)."""
    return dt.date.fromordinal(day).isoformat()


def ordinal(text: str | dt.date) -> int:
    if isinstance(text, dt.date):
        return text.toordinal()
    return dt.date.fromisoformat(text).toordinal()


@dataclass(slots=True)
class Dose:
    """One administration (or, for oral drugs, one cycle's supply)."""

    drug: str  # key in catalog.DRUGS
    day: int
    end: int | None = None  # last day of an oral period
    line: int = 0  # salvage line number; 0 before progression after the index
    status: str = "completed"
    note: str = ""  # statusReason text for not-done


@dataclass(slots=True)
class Proc:
    """A procedure: car_t_harvest, car_t_infusion or auto_transplant."""

    kind: str
    day: int
    product: str | None = None  # catalog drug key of the CAR-T product


@dataclass(slots=True)
class Assessment:
    """One response assessment (a set of labs drawn the same day).

    ``value`` is the disease marker: serum M-protein in g/dL, or dFLC in mg/L for
    free-light-chain-only disease. ``label`` is the category the generator put the
    value in (CR, VGPR, PR, MR, SD, PD) or ``pre`` / ``post`` outside a line's
    response window.
    """

    day: int
    value: float
    label: str
    ife: str | None = None  # "negative" | "positive": a serum immunofixation result
    marrow: float | None = None  # bone-marrow plasma cells, %


@dataclass(slots=True)
class LineTruth:
    line: int
    regimen: str
    start: int
    end: int
    ingredients: list[str]
    therapy_class: str
    subclass: str
    best_response: str
    pfs_event: int | None
    pfs_censor: int | None
    pfs_event_kind: str = ""  # pd | death (when pfs_event is set)


@dataclass(slots=True)
class NoiseItem:
    """A planned imperfection of the extract (does not change the truth)."""

    kind: str  # duplicate | corrected | data_absent | entered_in_error | not_done
    day: int = 0
    drug: str = ""
    index: int = -1  # which dose or assessment it concerns
    value: float = 0.0  # the wrong value of a corrected Observation's first version


@dataclass
class Course:
    kind: str  # cohort | no_car_t | non_bcma_car_t | no_progression
    site: str
    birth_date: int
    gender: str
    flc_only: bool = False
    kappa_involved: bool = True
    uninvolved_flc: float = 10.0  # mg/L
    flc_per_g_dl: float = 40.0  # serum disease: involved FLC rise per g/dL M-protein
    m_protein_scale: float = 0.0  # FLC-only disease: small serum M-protein per dFLC
    myeloma: bool = True
    doses: list[Dose] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    assessments: list[Assessment] = field(default_factory=list)
    context_days: list[int] = field(default_factory=list)  # days with Hb/creatinine only
    index_product: str | None = None  # ingredient
    index_day: int | None = None
    progression_day: int | None = None
    progression_basis: str | None = None
    status_obs_day: int | None = None  # mCODE disease status "worsened"
    death_day: int | None = None
    last_contact: int = 0
    lines: list[LineTruth] = field(default_factory=list)
    noise: list[NoiseItem] = field(default_factory=list)
    #: False when the death is sent as deceasedBoolean without its date (noise)
    death_date_known: bool = True
    #: regimens recorded before the CAR-T apheresis (study patients)
    prior_regimens: int | None = None
    #: Table 1 covariates as recorded (connector/synth/covariates.py); empty when none drawn
    covariates: dict = field(default_factory=dict)

    @property
    def in_cohort(self) -> bool:
        return self.kind == "cohort"

    @property
    def recorded_death_day(self) -> int | None:
        """The death date the extract carries (None when only the fact is sent)."""
        return self.death_day if self.death_date_known else None

    def last_record_day(self) -> int:
        """The last day anything about the patient is dated, the death date aside."""
        days = [a.day for a in self.assessments] + list(self.context_days)
        days += [d.end if d.end is not None else d.day for d in self.doses
                 if d.status == "completed"]
        days += [pr.day for pr in self.procs]
        return max(days, default=self.last_contact)
