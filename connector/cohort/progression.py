"""Progression after the index CAR-T: IMWG labs, else disease status, else a new line."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from connector.cohort.imwg import LabBook, baseline_at, first_confirmed_pd, readings_until
from connector.cohort.rules import Rules

IMWG_LABS, DISEASE_STATUS, NEW_LINE = "imwg_labs", "disease_status", "new_line_fallback"


@dataclass(frozen=True)
class Progression:
    date: dt.date | None
    basis: str | None
    analyte: str = ""


def find_progression(book: LabBook, index_date: dt.date, next_therapy: dt.date | None,
                     rules: Rules) -> Progression:
    """The first progression after ``index_date``.

    ``next_therapy`` is the start of the first treatment after the CAR-T. A lab or
    disease-status progression counts only up to that day: once new treatment has
    begun, later rises belong to that treatment, and the start of the treatment
    is itself the evidence of progression (the new-line fallback).
    """
    base = baseline_at(book, index_date, rules.progression.baseline_lookback_days)
    day, analyte = first_confirmed_pd(book, base, index_date, readings_until(next_therapy),
                                      rules.imwg)
    if day is not None:
        return Progression(day, IMWG_LABS, analyte)
    status = first_disease_status(book, index_date, next_therapy, rules)
    if status is not None:
        return Progression(status, DISEASE_STATUS)
    if next_therapy is not None:
        return Progression(next_therapy, NEW_LINE)
    return Progression(None, None)


def first_disease_status(book: LabBook, index_date: dt.date, until: dt.date | None,
                         rules: Rules) -> dt.date | None:
    """The first coded 'progression' disease status after the index (up to ``until``)."""
    pr = rules.progression
    for day, code in book.codes(pr.disease_status_analyte):
        if day <= index_date:
            continue
        if until is not None and day > until:
            return None
        if code in pr.disease_status_codes:
            return day
    return None
