"""Ground truth (contracts.md schema) read off the generator's own courses."""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector.synth.course import Course, LineTruth, iso

EXCLUSION = {"cohort": None, "no_car_t": "no_car_t", "non_bcma_car_t": "non_bcma_car_t",
             "no_progression": "no_progression"}


def _day(day: int | None) -> str | None:
    return None if day is None else iso(day)


def line_truth(ln: LineTruth) -> dict[str, Any]:
    return {
        "line": ln.line,
        "start_date": iso(ln.start),
        "end_date": iso(ln.end),
        "drugs": list(ln.ingredients),
        "therapy_class": ln.therapy_class,
        "subclass": ln.subclass,
        "best_response": ln.best_response,
        "pfs_event_date": _day(ln.pfs_event),
        "pfs_censor_date": _day(ln.pfs_censor),
        "regimen": ln.regimen,
    }


def patient_truth(course: Course, source_id: str) -> dict[str, Any]:
    """One patient's entry; keys beyond the contract: progression_basis, birth_year,
    sex, flc_only, regimen (per line)."""
    has_index = course.kind in ("cohort", "no_progression")
    return {
        "site": course.site,
        "source_id": source_id,
        "in_cohort": course.in_cohort,
        "exclusion_reason": EXCLUSION[course.kind],
        "index_product": course.index_product if has_index else None,
        "index_date": _day(course.index_day) if has_index else None,
        "progression_date": _day(course.progression_day),
        "progression_basis": course.progression_basis,
        "death_date": _day(course.death_day),
        "last_contact_date": iso(course.last_contact),
        "birth_year": dt.date.fromordinal(course.birth_date).year,
        "sex": course.gender,
        "flc_only": course.flc_only if course.myeloma else None,
        "lines": [line_truth(ln) for ln in course.lines],
    }
