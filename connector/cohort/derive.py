"""One patient's timeline → their cohort row and lines (pure, no database)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import partial

from connector.cohort.classify import classify
from connector.cohort.imwg import (
    LabBook,
    baseline_at,
    first_confirmed_pd,
    normalize_labs,
    readings_until,
)
from connector.cohort.index import find_index
from connector.cohort.later import first_later_therapy
from connector.cohort.lines import Line, build_lines
from connector.cohort.model import (
    CohortPatientRecord,
    Exposure,
    Lab,
    LineRecord,
    PatientInfo,
    Procedure,
)
from connector.cohort.progression import find_progression
from connector.cohort.response import line_outcome
from connector.cohort.rules import Rules, load_rules
from connector.cohort.units import build_units


def last_contact(patient: PatientInfo, exposures: Iterable[Exposure],
                 procedures: Iterable[Procedure], labs: Iterable[Lab]) -> dt.date | None:
    """The latest day anything was recorded about the patient (or death).

    An exposure's ``last`` is never before its start, so the start need not be looked at.
    ``patient.last_record`` brings in the resources no code set maps (map stage).
    """
    days = [e.last for e in exposures]
    days += [p.date for p in procedures]
    days += [p.end for p in procedures if p.end is not None]
    days += [lab.date for lab in labs]
    if patient.death_date is not None:
        days.append(patient.death_date)
    if patient.last_record is not None:
        days.append(patient.last_record)
    return max(days, default=None)


def _record(patient: PatientInfo, contact: dt.date | None, **fields: object) -> CohortPatientRecord:
    return CohortPatientRecord(
        site=patient.site, source_id=patient.source_id, patient_key=patient.patient_key,
        death_date=patient.death_date, last_contact_date=contact,
        birth_year=patient.birth_year, sex=patient.sex,
        deceased=patient.deceased or patient.death_date is not None, **fields)  # type: ignore[arg-type]


def _product_classes(line: Line, rules: Rules) -> set[str]:
    """Classes of CAR-T products known only from a procedure."""
    ct = rules.car_t
    out = set()
    for product in line.products:
        if product in ct.bcma_products:
            out.add(ct.bcma_classes[0])
        elif product in ct.other_products:
            out.add(ct.other_classes[0])
    return out


def progressed_on_line(book: LabBook, rules: Rules, start: dt.date,
                       day: dt.date) -> bool | None:
    """Whether a line started on ``start`` had a PD reading up to ``day`` (labs drawn that
    day included, ``readings_until``); None when the labs cannot say (no measurable
    baseline or no assessment in between). Used by the line rules that keep a planned
    addition or a transplant in the line only when nothing progressed (lines.py)."""
    r = rules.imwg
    base = baseline_at(book, start, r.baseline_lookback_days)
    if base.method(r) is None or not book.assessment_dates(start, readings_until(day)):
        return None
    pd_day, _ = first_confirmed_pd(book, base, start, readings_until(day), r)
    return pd_day is not None


def time_to_next_treatment(start: dt.date, next_start: dt.date | None,
                           death: dt.date | None, contact: dt.date | None,
                           ) -> tuple[dt.date | None, dt.date | None]:
    """(event, censor) of a line's time to next treatment.

    The event is the next line's start, or death when no line follows (death on or
    after the start); otherwise the line is censored at the last contact (never
    before its start). A death without a date is censored like the living.
    """
    if next_start is not None:
        return next_start, None
    if death is not None and death >= start:
        return death, None
    return None, max(start, contact) if contact is not None else start


def _line_records(lines: list[Line], book: LabBook, death: dt.date | None,
                  contact: dt.date | None, rules: Rules) -> list[LineRecord]:
    out = []
    for n, line in enumerate(lines, start=1):
        nxt = lines[n].start if n < len(lines) else None
        therapy_class, subclass = classify(line.classes | _product_classes(line, rules),
                                           line.ingredients | line.products,
                                           line.categories, rules)
        res = line_outcome(book, line.start, nxt, death, rules)
        ttnt_event, ttnt_censor = time_to_next_treatment(line.start, nxt, death, contact)
        out.append(LineRecord(
            line=n, start_date=line.start, end_date=line.end, drugs=line.drugs,
            therapy_class=therapy_class, subclass=subclass,
            best_response=res.best_response, response_note=res.response_note,
            pfs_event_date=res.pfs_event_date, pfs_censor_date=res.pfs_censor_date,
            ttnt_event_date=ttnt_event, ttnt_censor_date=ttnt_censor))
    return out


def derive_patient(patient: PatientInfo, exposures: list[Exposure],
                   procedures: list[Procedure], labs: list[Lab],
                   rules: Rules | None = None) -> tuple[CohortPatientRecord, list[LineRecord]]:
    """The cohort row and the lines after progression for one patient.

    Excluded patients get a row with ``exclusion_reason`` and no lines:
    ``no_car_t`` (no CAR-T infusion at all), ``non_bcma_car_t`` (only
    other-target CAR-T), ``no_progression`` (no progression after the index by
    labs, disease status or a later line). ``rules`` defaults to mappings/rules.toml.
    """
    rules = rules or load_rules()
    return derive_normalized(patient, exposures, procedures, normalize_labs(labs, rules)[0],
                             rules)


def derive_normalized(patient: PatientInfo, exposures: list[Exposure],
                      procedures: list[Procedure], labs: list[Lab],
                      rules: Rules) -> tuple[CohortPatientRecord, list[LineRecord]]:
    """``derive_patient`` for labs already through ``normalize_labs`` (run_derive counts
    the dropped values itself and so normalizes each patient's labs only once)."""
    contact = last_contact(patient, exposures, procedures, labs)
    found = find_index(exposures, procedures, rules)
    if found.infusion is None:
        return _record(patient, contact, in_cohort=False,
                       exclusion_reason=found.exclusion_reason), []
    index = found.infusion
    index_fields = {"index_product": index.product or None, "index_date": index.date}
    book = LabBook(labs)
    units = build_units(exposures, procedures, found.infusions, rules)
    next_therapy = first_later_therapy(exposures, procedures, found.infusions, index, rules,
                                       units)
    prog = find_progression(book, index.date, next_therapy, rules)
    if prog.date is None:
        return _record(patient, contact, in_cohort=False, exclusion_reason="no_progression",
                       **index_fields), []
    lines = build_lines(exposures, procedures, found.infusions, prog.date, rules, units,
                        progressed=partial(progressed_on_line, book, rules))
    record = _record(patient, contact, in_cohort=True, progression_date=prog.date,
                     progression_basis=prog.basis, **index_fields)
    return record, _line_records(lines, book, patient.death_date, contact, rules)
