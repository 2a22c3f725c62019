"""Table 1 covariates of each in-cohort patient at progression after CAR-T.

Runs after the patients are derived, in the same transaction, and writes
``patient_baseline`` (one row per in-cohort patient). Nothing is guessed: a
covariate the site never recorded stays empty ("not recorded" in the report).

- Findings (del(17p), t(4;14), t(14;16), 1q gain/amp, extramedullary disease),
  from ``condition_record``: "present" when any record on or before progression
  (+ ``record_days_after``) says present; else "absent" when one was refuted;
  else not recorded (an uncertain record alone is not recorded either).
- R-ISS stage: the last ``riss_stage`` Observation in the same window.
- LDH: the value nearest progression within ``ldh_days_before``/``ldh_days_after``,
  elevated above ``ldh_upper_limit``.
- Lab density: the median days between successive M-protein or FLC result dates from
  progression on (the data completeness section of the report).
- Prior lines: regimens recorded before the index CAR-T's apheresis (else before the
  lymphodepletion window), split by a pause of ``prior_pause_days`` with no myeloma
  drug or a new drug after the line window. Steroids and lymphodepletion do not
  count. Only what the site's records show: lines given elsewhere are not seen.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from connector.codes.codesets import FINDINGS
from connector.cohort.rules import Rules
from connector.db.models import (
    CohortPatient,
    ConditionRecord,
    LabResult,
    MedicationExposure,
    PatientBaseline,
    ProcedureEvent,
)

#: the labs whose spacing measures how densely response was followed
DENSITY_ANALYTES = ("serum_m_protein", "urine_m_protein", "kappa_flc", "lambda_flc")
_NOT_REGIMEN = frozenset({"steroid", "lymphodepletion"})


@dataclass(frozen=True)
class DrugGiven:
    ingredient: str
    drug_class: str
    start: dt.date
    end: dt.date


def count_regimens(drugs: list[DrugGiven], pause_days: int, window_days: int) -> int:
    """Regimens in ``drugs``: a new one after a pause of ``pause_days`` or more with no drug,
    or when a drug not yet in the regimen starts more than ``window_days`` after its start."""
    count = 0
    start: dt.date | None = None
    covered: dt.date | None = None
    seen: set[str] = set()
    for d in sorted((d for d in drugs if d.drug_class not in _NOT_REGIMEN),
                    key=lambda d: (d.start, d.ingredient)):
        paused = covered is not None and (d.start - covered).days >= pause_days
        added = start is not None and d.ingredient not in seen and \
            (d.start - start).days > window_days
        if start is None or paused or added:
            count += 1
            start, seen = d.start, set()
        seen.add(d.ingredient)
        covered = max(covered or d.end, d.end)
    return count


def finding_status(records: list[tuple[dt.date, str]], until: dt.date) -> str | None:
    """present | absent | None (not recorded) from (date, status) records up to ``until``."""
    statuses = {status for day, status in records if day <= until}
    if "present" in statuses:
        return "present"
    if "absent" in statuses:
        return "absent"
    return None


def nearest(values: list[tuple[dt.date, float | str | None]], day: dt.date, before: int,
            after: int) -> float | str | None:
    """The value nearest ``day`` within [day - before, day + after]; earlier wins a tie."""
    inside = [(abs((d - day).days), d, v) for d, v in values
              if v is not None and -before <= (d - day).days <= after]
    return min(inside, key=lambda t: (t[0], t[1]))[2] if inside else None


def median_interval(days: list[dt.date]) -> float | None:
    """Median of the gaps between successive sorted dates; None with fewer than two."""
    gaps = sorted((b - a).days for a, b in zip(days, days[1:], strict=False))
    if not gaps:
        return None
    mid = len(gaps) // 2
    return float(gaps[mid]) if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2


def _by_patient(conn: Connection, stmt, key_index: int = 0) -> dict[str, list[tuple]]:  # noqa: ANN001
    out: dict[str, list[tuple]] = defaultdict(list)
    for row in conn.execute(stmt):
        out[row[key_index]].append(tuple(row))
    return out


def derive_baseline(conn: Connection, site: str | None, rules: Rules) -> int:
    """Rewrite ``patient_baseline`` for ``site`` (or every site); returns the rows written."""
    where = [] if site is None else [CohortPatient.site == site]
    conn.execute(delete(PatientBaseline).where(
        *([] if site is None else [PatientBaseline.site == site])))
    patients = conn.execute(select(
        CohortPatient.site, CohortPatient.source_id, CohortPatient.index_date,
        CohortPatient.progression_date).where(CohortPatient.in_cohort.is_(True), *where)).all()
    rows = []
    sites = sorted({p[0] for p in patients})
    for name in sites:
        rows.extend(_site_rows(conn, name, [p for p in patients if p[0] == name], rules))
    if rows:
        conn.execute(insert(PatientBaseline), rows)
    return len(rows)


def _site_rows(conn: Connection, site: str, patients: list, rules: Rules) -> list[dict]:
    b = rules.baseline
    cohort_ids = select(CohortPatient.source_id).where(
        CohortPatient.site == site, CohortPatient.in_cohort.is_(True))
    conds = _by_patient(conn, select(
        ConditionRecord.patient_source_id, ConditionRecord.finding, ConditionRecord.onset_date,
        ConditionRecord.status).where(ConditionRecord.site == site,
                                      ConditionRecord.patient_source_id.in_(cohort_ids)))
    labs = _by_patient(conn, select(
        LabResult.patient_source_id, LabResult.analyte, LabResult.effective_date,
        LabResult.value, LabResult.value_code).where(
        LabResult.site == site, LabResult.analyte.in_(("ldh", "riss_stage",
                                                       *DENSITY_ANALYTES)),
        LabResult.patient_source_id.in_(cohort_ids)))
    harvests = _by_patient(conn, select(
        ProcedureEvent.patient_source_id, ProcedureEvent.performed_date).where(
        ProcedureEvent.site == site, ProcedureEvent.category == "car_t_harvest",
        ProcedureEvent.patient_source_id.in_(cohort_ids)))
    drugs = _by_patient(conn, select(
        MedicationExposure.patient_source_id, MedicationExposure.ingredient,
        MedicationExposure.drug_class, MedicationExposure.start_date,
        MedicationExposure.end_date).where(
        MedicationExposure.site == site, MedicationExposure.patient_source_id.in_(cohort_ids)))
    out = []
    for _, pid, index, progression in patients:
        row: dict = {"site": site, "source_id": pid, "prior_lines": None,
                     **dict.fromkeys(FINDINGS), "riss_stage": None, "ldh": None,
                     "ldh_elevated": None, "lab_interval_days": None}
        if index is not None:
            cut = max((d for _, d in harvests.get(pid, []) if d <= index),
                      default=index - dt.timedelta(days=rules.lymphodepletion.max_days_before))
            given = [DrugGiven(r[1], r[2], r[3], r[4] or r[3]) for r in drugs.get(pid, [])
                     if r[3] < cut]
            row["prior_lines"] = count_regimens(given, b.prior_pause_days,
                                                rules.lines.regimen_window_days)
        if progression is not None:
            until = progression + dt.timedelta(days=b.record_days_after)
            by_finding: dict[str, list[tuple[dt.date, str]]] = defaultdict(list)
            for _, finding, day, status in conds.get(pid, []):
                by_finding[finding].append((day, status))
            for finding in FINDINGS:
                row[finding] = finding_status(by_finding[finding], until)
            stages = sorted((r[2], r[4]) for r in labs.get(pid, [])
                            if r[1] == "riss_stage" and r[2] <= until and r[4])
            row["riss_stage"] = stages[-1][1] if stages else None
            ldh = nearest([(r[2], r[3]) for r in labs.get(pid, []) if r[1] == "ldh"],
                          progression, b.ldh_days_before, b.ldh_days_after)
            row["ldh"] = ldh
            row["ldh_elevated"] = None if ldh is None else bool(float(ldh) > b.ldh_upper_limit)
            row["lab_interval_days"] = median_interval(sorted(
                {r[2] for r in labs.get(pid, [])
                 if r[1] in DENSITY_ANALYTES and r[2] >= progression}))
        out.append(row)
    return out
