"""The database side of derive: load the normalized tables, write the derived ones.

Only this module touches the database; the rules work on plain records. The
derived rows of the site(s) are deleted and rewritten in one transaction, so a
rerun gives the same tables and an interrupted run leaves the old ones.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, fields

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection, Engine

from connector.cohort.derive import derive_normalized
from connector.cohort.imwg import RATIO, RESPONSE_ANALYTES, normalize_labs
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


def rule_analytes(rules: Rules) -> frozenset[str]:
    """The analytes a rule reads or a unit guard checks; any other lab only dates contact."""
    return frozenset({*RESPONSE_ANALYTES, RATIO, rules.progression.disease_status_analyte,
                      rules.imwg.ife_analyte, rules.imwg.marrow_analyte, *rules.units})


def load_timelines(conn: Connection, site: str | None = None,
                   rules: Rules | None = None) -> list[PatientTimeline]:
    """Every patient of the site(s) with their exposures, procedures and labs.

    With ``rules``, labs of an analyte no rule reads (haemoglobin, creatinine...) are
    loaded as one dateless-value record per patient and analyte on its latest day:
    they only ever set the last contact, and they were a third of the rows to load.
    Rows are unpacked as tuples (not read by name): at 10,000 patients there are millions.
    """
    timelines: dict[tuple[str, str], PatientTimeline] = {}
    for row in conn.execute(select(Patient).where(_where_site(Patient.site, site))
                            .order_by(Patient.site, Patient.source_id)):
        info = PatientInfo(row.site, row.source_id, row.patient_key, row.birth_year,
                           row.sex, row.death_date)
        timelines[(row.site, row.source_id)] = PatientTimeline(info)
    orphans: Counter[str] = Counter()
    get = timelines.get

    me = MedicationExposure
    for s_, pid, ingredient, drug_class, start, end in conn.execute(
            select(me.site, me.patient_source_id, me.ingredient, me.drug_class,
                   me.start_date, me.end_date).where(_where_site(me.site, site))):
        if (tl := get((s_, pid))) is None:
            orphans["medication_exposure"] += 1
        else:
            tl.exposures.append(Exposure(ingredient, drug_class, start, end))
    pe = ProcedureEvent
    for s_, pid, category, product, performed, end in conn.execute(
            select(pe.site, pe.patient_source_id, pe.category, pe.product,
                   pe.performed_date, pe.end_date).where(_where_site(pe.site, site))):
        if (tl := get((s_, pid))) is None:
            orphans["procedure_event"] += 1
        else:
            tl.procedures.append(Procedure(category, performed, product or "", end))
    lr = LabResult
    labs = select(lr.site, lr.patient_source_id, lr.analyte, lr.effective_date, lr.value,
                  lr.unit, lr.value_code).where(_where_site(lr.site, site))
    if rules is not None:
        read = sorted(rule_analytes(rules))
        labs = labs.where(lr.analyte.in_(read))
    for s_, pid, analyte, day, value, unit, code in conn.execute(labs):
        if (tl := get((s_, pid))) is None:
            orphans["lab_result"] += 1
        else:
            tl.labs.append(Lab(analyte, day, value, unit, code))
    if rules is not None:
        latest = (select(lr.site, lr.patient_source_id, lr.analyte, func.count(),
                         func.max(lr.effective_date))
                  .where(_where_site(lr.site, site), lr.analyte.not_in(read))
                  .group_by(lr.site, lr.patient_source_id, lr.analyte))
        for s_, pid, analyte, n, day in conn.execute(latest):
            if (tl := get((s_, pid))) is None:
                orphans["lab_result"] += n
            else:
                tl.labs.append(Lab(analyte, day))
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
        timelines = load_timelines(conn, site, rules)
        with progress.task("derive", total=len(timelines)) as advance:
            for tl in timelines:
                labs, dropped = normalize_labs(tl.labs, rules)
                summary.labs_dropped += dropped
                tl.labs = []  # the raw labs are not needed again: free them as we go
                rec, lines = derive_normalized(tl.patient, tl.exposures, tl.procedures,
                                               labs, rules)
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
