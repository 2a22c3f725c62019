"""Ground truth (contracts.md schema) read off the generator's own courses.

The truth is what a correct reading of the *extract* gives, by the published
definitions: where the extract hides something the course knows (a death sent
without its date), the truth follows the extract (death known, date unknown:
censored at the last contact).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from connector.synth.course import Course, LineTruth, iso
from connector.synth.covariates import truth_of

EXCLUSION = {"cohort": None, "no_car_t": "no_car_t", "non_bcma_car_t": "non_bcma_car_t",
             "no_progression": "no_progression"}


def _day(day: int | None) -> str | None:
    return None if day is None else iso(day)


def _last_assessment(course: Course, start: int, next_start: int | None) -> int:
    """The last assessment strictly inside a line (its start when there is none)."""
    days = [a.day for a in course.assessments
            if a.day > start and (next_start is None or a.day < next_start)]
    return max(days, default=start)


def _pfs(course: Course, ln: LineTruth, next_start: int | None) -> tuple[int | None, int | None]:
    """(event, censor) of a line; a death the extract does not date is no event."""
    if ln.pfs_event is not None and ln.pfs_event_kind == "death" and not course.death_date_known:
        return None, _last_assessment(course, ln.start, next_start)
    return ln.pfs_event, ln.pfs_censor


def _ttnt(course: Course, ln: LineTruth, next_start: int | None,
          last_contact: int) -> tuple[int | None, int | None]:
    """Time to next treatment: the next line's start, or a dated death; else last contact."""
    if next_start is not None:
        return next_start, None
    death = course.recorded_death_day
    if death is not None and death >= ln.start:
        return death, None
    return None, max(ln.start, last_contact)


def line_truth(ln: LineTruth, course: Course | None = None, next_start: int | None = None,
               last_contact: int | None = None) -> dict[str, Any]:
    pfs_event, pfs_censor = (ln.pfs_event, ln.pfs_censor) if course is None else \
        _pfs(course, ln, next_start)
    out = {
        "line": ln.line,
        "start_date": iso(ln.start),
        "end_date": iso(ln.end),
        "drugs": list(ln.ingredients),
        "therapy_class": ln.therapy_class,
        "subclass": ln.subclass,
        "best_response": ln.best_response,
        "pfs_event_date": _day(pfs_event),
        "pfs_censor_date": _day(pfs_censor),
        "regimen": ln.regimen,
    }
    if course is not None and last_contact is not None:
        ttnt_event, ttnt_censor = _ttnt(course, ln, next_start, last_contact)
        out["ttnt_event_date"] = _day(ttnt_event)
        out["ttnt_censor_date"] = _day(ttnt_censor)
    return out


def _progression_read(course: Course) -> int | None:
    """The progression day a correct reading of the extract gives.

    Without labs after the infusion the extract shows the progression only through the
    next line, so the published fallback dates it at that line's start (derive.md §2),
    not on the day the course knows.
    """
    if course.progression_basis == "new_line_fallback" and course.lines:
        return course.lines[0].start
    return course.progression_day


def patient_truth(course: Course, source_id: str) -> dict[str, Any]:
    """One patient's entry; keys beyond the contract: progression_basis, birth_year,
    sex, flc_only, deceased, regimen and time to next treatment (per line)."""
    has_index = course.kind in ("cohort", "no_progression")
    last_contact = course.last_contact if course.death_date_known or course.death_day is None \
        else course.last_record_day()
    starts = [ln.start for ln in course.lines]
    lines = [line_truth(ln, course, starts[i + 1] if i + 1 < len(starts) else None,
                        last_contact) for i, ln in enumerate(course.lines)]
    return {
        "site": course.site,
        "source_id": source_id,
        "in_cohort": course.in_cohort,
        "exclusion_reason": EXCLUSION[course.kind],
        "index_product": course.index_product if has_index else None,
        "index_date": _day(course.index_day) if has_index else None,
        "progression_date": _day(_progression_read(course)),
        "progression_basis": course.progression_basis,
        "death_date": _day(course.recorded_death_day),
        "deceased": course.death_day is not None,
        "last_contact_date": iso(last_contact),
        "birth_year": dt.date.fromordinal(course.birth_date).year,
        "sex": course.gender,
        "flc_only": course.flc_only if course.myeloma else None,
        "prior_lines": course.prior_regimens if course.in_cohort else None,
        "baseline": truth_of(course.covariates) if course.in_cohort else None,
        "lines": lines,
    }
