"""The database side of derive: load the normalized tables, write the derived ones.

Only this module touches the database; the rules work on plain records. The
derived rows of the site(s) are deleted and rewritten in one transaction, so a
rerun gives the same tables and an interrupted run leaves the old ones.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, fields

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine

from connector.cohort.derive import derive_patient
from connector.cohort.imwg import normalize_labs
from connector.cohort.model import (
    CohortPatientRecord,
    Exposure,
    Lab,
    LineRecord,
    PatientInfo,
    PatientTimeline,
    Procedure,
)
from connector.cohort.rules import Rules, load_rules
from connector.db.models import (
    CohortPatient,
    LabResult,
    MedicationExposure,
    Patient,
    ProcedureEvent,
    TherapyLine,
)
from connector.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class DeriveSummary:
    """What a derive run produced, for the CLI and the run log."""

    sites: list[str] = field(default_factory=list)
    patients: int = 0
    in_cohort: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    labs_dropped: int = 0

    def __str__(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items())) or "none"
        text = (f"{self.in_cohort} patients in cohort of {self.patients} "
                f"(excluded: {reasons}); {self.lines} lines")
        if self.labs_dropped:
            text += f"; {self.labs_dropped} lab values in an unknown unit ignored"
        return text


def _where_site(column, site: str | None):  # noqa: ANN001, ANN202
    return column == site if site is not None else column.isnot(None)


def load_timelines(conn: Connection, site: str | None = None) -> list[PatientTimeline]:
    """Every patient of the site(s) with their exposures, procedures and labs."""
    timelines: dict[tuple[str, str], PatientTimeline] = {}
    for row in conn.execute(select(Patient).where(_where_site(Patient.site, site))
                            .order_by(Patient.site, Patient.source_id)):
        info = PatientInfo(row.site, row.source_id, row.patient_key, row.birth_year,
                           row.sex, row.death_date)
        timelines[(row.site, row.source_id)] = PatientTimeline(info)
    orphans: Counter[str] = Counter()

    def owner(row, table: str) -> PatientTimeline | None:  # noqa: ANN001
        tl = timelines.get((row.site, row.patient_source_id))
        if tl is None:
            orphans[table] += 1
        return tl

    me = MedicationExposure
    for row in conn.execute(select(me.site, me.patient_source_id, me.ingredient, me.drug_class,
                                   me.start_date, me.end_date)
                            .where(_where_site(me.site, site))):
        if tl := owner(row, "medication_exposure"):
            tl.exposures.append(Exposure(row.ingredient, row.drug_class, row.start_date,
                                         row.end_date))
    pe = ProcedureEvent
    for row in conn.execute(select(pe.site, pe.patient_source_id, pe.category, pe.product,
                                   pe.performed_date, pe.end_date)
                            .where(_where_site(pe.site, site))):
        if tl := owner(row, "procedure_event"):
            tl.procedures.append(Procedure(row.category, row.performed_date,
                                           row.product or "", row.end_date))
    lr = LabResult
    for row in conn.execute(select(lr.site, lr.patient_source_id, lr.analyte,
                                   lr.effective_date, lr.value, lr.unit, lr.value_code)
                            .where(_where_site(lr.site, site))):
        if tl := owner(row, "lab_result"):
            tl.labs.append(Lab(row.analyte, row.effective_date, row.value, row.unit,
                               row.value_code))
    for table, n in orphans.items():
        log.warning("%d %s rows have no patient row; ignored", n, table)
    for tl in timelines.values():
        tl.exposures.sort(key=lambda e: (e.start, e.ingredient))
        tl.procedures.sort(key=lambda p: (p.date, p.category))
        tl.labs.sort(key=lambda lab: (lab.date, lab.analyte))
    return list(timelines.values())


def _patient_row(rec: CohortPatientRecord) -> dict:
    return {f.name: getattr(rec, f.name) for f in fields(rec)}


def _line_row(rec: CohortPatientRecord, line: LineRecord) -> dict:
    row = {f.name: getattr(line, f.name) for f in fields(line)}
    row["drugs"] = line.drugs_text
    row.update(site=rec.site, source_id=rec.source_id, patient_key=rec.patient_key)
    return row


def write_derived(conn: Connection, site: str | None, patients: list[dict],
                  lines: list[dict]) -> None:
    """Replace the derived rows of ``site`` (or of every site) inside ``conn``'s transaction."""
    conn.execute(delete(TherapyLine).where(_where_site(TherapyLine.site, site)))
    conn.execute(delete(CohortPatient).where(_where_site(CohortPatient.site, site)))
    if patients:
        conn.execute(insert(CohortPatient), patients)
    if lines:
        conn.execute(insert(TherapyLine), lines)


def run_derive(engine: Engine, site: str | None = None, progress: Progress | None = None,
               rules: Rules | None = None) -> DeriveSummary:
    """Rebuild ``cohort_patient`` and ``therapy_line`` from the normalized tables."""
    rules = rules or load_rules()
    progress = progress or Progress.silent()
    summary = DeriveSummary()
    excluded: Counter[str] = Counter()
    patient_rows: list[dict] = []
    line_rows: list[dict] = []
    with engine.begin() as conn:
        timelines = load_timelines(conn, site)
        with progress.task("derive", total=len(timelines)) as advance:
            for tl in timelines:
                summary.labs_dropped += normalize_labs(tl.labs, rules)[1]
                rec, lines = derive_patient(tl.patient, tl.exposures, tl.procedures,
                                            tl.labs, rules)
                patient_rows.append(_patient_row(rec))
                line_rows += [_line_row(rec, line) for line in lines]
                if rec.in_cohort:
                    summary.in_cohort += 1
                else:
                    excluded[rec.exclusion_reason or "unknown"] += 1
                advance(1)
        write_derived(conn, site, patient_rows, line_rows)
    summary.sites = sorted({tl.patient.site for tl in timelines})
    summary.patients = len(timelines)
    summary.excluded = dict(excluded)
    summary.lines = len(line_rows)
    return summary
