"""The derived tables as pandas DataFrames, from the database or from ground truth.

Both sources end in the same two normalised frames (one row per patient, one per
line), so the statistics run unchanged on the connector's output and on the
synthetic generator's ground truth, and the two can be compared number by number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from connector.analysis.nexttreatment import add_next_treatment_columns
from connector.analysis.settings import DAYS_PER_MONTH
from connector.codes.codesets import FINDINGS
from connector.codes.rulesfile import study_terms

PATIENT_COLUMNS = [
    "site", "source_id", "patient_key", "in_cohort", "exclusion_reason", "index_product",
    "index_date", "progression_date", "progression_basis", "death_date", "last_contact_date",
    "birth_year", "sex", "deceased",
]
#: Table 1 covariates (patient_baseline; None = not recorded). Findings (those the code
#: sets know) are "present" / "absent"; ``riss_stage`` I / II / III; ``ldh`` in U/L.
BASELINE_COLUMNS = ["prior_lines", *FINDINGS, "riss_stage", "ldh", "ldh_elevated",
                    "lab_interval_days"]
PATIENT_DATES = ["index_date", "progression_date", "death_date", "last_contact_date"]
LINE_COLUMNS = [
    "site", "source_id", "patient_key", "line", "start_date", "end_date", "drugs",
    "therapy_class", "subclass", "best_response", "response_note", "pfs_event_date",
    "pfs_censor_date", "ttnt_event_date", "ttnt_censor_date",
]
LINE_DATES = ["start_date", "end_date", "pfs_event_date", "pfs_censor_date", "ttnt_event_date",
              "ttnt_censor_date"]
KEY = ["site", "source_id"]

RESPONSES = ("sCR", "CR", "VGPR", "PR", "MR", "SD", "PD", "NE")
EVALUABLE = frozenset(RESPONSES[:-1])  # every category but NE
AT_LEAST_PR = frozenset({"sCR", "CR", "VGPR", "PR"})
AT_LEAST_VGPR = frozenset({"sCR", "CR", "VGPR"})
AT_LEAST_CR = frozenset({"sCR", "CR"})


# ------------------------------------------------------------------ normalising


def _dates(frame: pd.DataFrame, columns: list[str]) -> None:
    for col in columns:
        frame[col] = pd.to_datetime(frame[col], errors="coerce").dt.normalize()


def _text(series: pd.Series) -> pd.Series:
    """Strings stripped, missing as None, so that CSVs and group-bys agree."""
    return series.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                      else str(v).strip())


def normalize_patients(patients: pd.DataFrame) -> pd.DataFrame:
    """Every patient column present with one dtype per column, rows in key order."""
    frame = patients.copy()
    for col in PATIENT_COLUMNS + BASELINE_COLUMNS:
        if col not in frame.columns:
            frame[col] = True if col == "in_cohort" else None
    frame = frame[PATIENT_COLUMNS + BASELINE_COLUMNS]
    _dates(frame, PATIENT_DATES)
    for col in ("site", "source_id", "patient_key", "exclusion_reason", "index_product",
                "progression_basis", "sex"):
        frame[col] = _text(frame[col])
    frame["in_cohort"] = frame["in_cohort"].fillna(True).astype(bool)
    # death known: a date, or the flag alone (Patient.deceasedBoolean without a date)
    frame["deceased"] = (frame["deceased"].astype(object).map(
        lambda v: bool(v) if isinstance(v, bool | int | np.bool_) else False)
        | frame["death_date"].notna()).astype(bool)
    frame["birth_year"] = pd.to_numeric(frame["birth_year"], errors="coerce").astype("Int64")
    frame["prior_lines"] = pd.to_numeric(frame["prior_lines"], errors="coerce").astype("Int64")
    for col in ("ldh", "lab_interval_days"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in [*FINDINGS, "riss_stage"]:
        frame[col] = _text(frame[col])
    frame["ldh_elevated"] = frame["ldh_elevated"].astype(object).map(
        lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else bool(v))
    return frame.sort_values(KEY, kind="mergesort").reset_index(drop=True)


def _join_drugs(value: Any) -> str:
    if isinstance(value, list | tuple | set):
        return ";".join(sorted(str(v).strip().lower() for v in value))
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def normalize_lines(lines: pd.DataFrame) -> pd.DataFrame:
    """Every line column present, drugs as the ';'-joined text, rows in key order."""
    frame = lines.copy()
    for col in LINE_COLUMNS:
        if col not in frame.columns:
            frame[col] = "" if col == "response_note" else None
    frame = frame[LINE_COLUMNS]
    _dates(frame, LINE_DATES)
    for col in ("site", "source_id", "patient_key", "therapy_class", "subclass",
                "best_response"):
        frame[col] = _text(frame[col])
    frame["drugs"] = frame["drugs"].map(_join_drugs)
    frame["response_note"] = _text(frame["response_note"]).fillna("")
    frame["best_response"] = frame["best_response"].fillna("NE")
    frame["line"] = pd.to_numeric(frame["line"], errors="coerce").astype("Int64")
    return frame.sort_values([*KEY, "line"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------- sources


def load_tables(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    """cohort_patient (every patient) and therapy_line, normalised."""
    from connector.db.models import CohortPatient, PatientBaseline, TherapyLine

    with engine.connect() as conn:
        patients = pd.read_sql(select(CohortPatient.__table__), conn)
        lines = pd.read_sql(select(TherapyLine.__table__), conn)
        baseline = pd.read_sql(select(PatientBaseline.__table__), conn)
    baseline = baseline[[*KEY, *[c for c in BASELINE_COLUMNS if c in baseline.columns]]]
    patients = patients.merge(baseline, on=KEY, how="left")
    return normalize_patients(patients), normalize_lines(lines)


def frames_from_ground_truth(
    path: str | Path, *, include_excluded: bool = False, secret: bytes | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ground_truth.json as the (patients, lines) frames the database would give.

    In-cohort patients only unless ``include_excluded``; patient keys are computed
    as the connector computes them (``connector.keys``), with the site secret from
    the environment when ``secret`` is not given.
    """
    from connector.keys import load_secret, patient_key

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    key_secret = secret if secret is not None else load_secret()
    patient_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    for record in data.get("patients", []):
        in_cohort = bool(record.get("in_cohort", True))
        if not in_cohort and not include_excluded:
            continue
        site, source_id = str(record["site"]), str(record["source_id"])
        pkey = record.get("patient_key") or patient_key(site, source_id, key_secret)
        row = {col: record.get(col) for col in PATIENT_COLUMNS}
        row.update(site=site, source_id=source_id, patient_key=pkey, in_cohort=in_cohort)
        row.update({k: v for k, v in (record.get("baseline") or {}).items()
                    if k in BASELINE_COLUMNS})
        row["prior_lines"] = record.get("prior_lines")
        patient_rows.append(row)
        for line in record.get("lines") or []:
            line_row = {col: line.get(col) for col in LINE_COLUMNS}
            line_row.update(site=site, source_id=source_id, patient_key=pkey)
            line_rows.append(line_row)
    patients = pd.DataFrame(patient_rows, columns=PATIENT_COLUMNS + BASELINE_COLUMNS)
    lines = pd.DataFrame(line_rows, columns=LINE_COLUMNS)
    return normalize_patients(patients), normalize_lines(lines)


# --------------------------------------------------------------- analysis view


@dataclass
class CohortFrames:
    """The in-cohort view with the per-patient and per-line quantities every analysis uses.

    ``patients``: in-cohort patients with ``os_months``, ``os_event``, ``os_valid``,
    ``n_lines``, ``ever_tce``, ``first_tce_months``, ``age_at_index``,
    ``cart_to_progression_months``. ``lines``: their lines with ``evaluable``,
    ``responder``, ``vgpr_plus``, ``cr_plus``, ``cr_determinable``, ``is_first``,
    ``pfs_months``, ``pfs_event``, ``pfs_valid``, ``start_months`` (from
    progression), ``tce_kind``. Both carry ``pid`` (site|source_id), a patient
    identity for grouping that never leaves the process. ``all_patients``: every
    patient given, for counting exclusions.
    """

    patients: pd.DataFrame
    lines: pd.DataFrame
    all_patients: pd.DataFrame


def _months(delta: pd.Series) -> pd.Series:
    return delta.dt.days.astype("float64") / DAYS_PER_MONTH


def _line_view(lines: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    frame = lines.merge(patients[[*KEY, "progression_date", "death_date",
                                  "last_contact_date"]], on=KEY, how="inner")
    frame = frame.sort_values([*KEY, "line"], kind="mergesort").reset_index(drop=True)
    add_next_treatment_columns(frame)
    response = frame["best_response"]
    frame["evaluable"] = response.isin(EVALUABLE)
    frame["responder"] = response.isin(AT_LEAST_PR)
    frame["vgpr_plus"] = response.isin(AT_LEAST_VGPR)
    frame["cr_plus"] = response.isin(AT_LEAST_CR)
    undetermined = (response == "VGPR") & frame["response_note"].str.contains(
        "not determinable", case=False, regex=False)
    frame["cr_determinable"] = frame["evaluable"] & ~undetermined
    first = frame.groupby(KEY, sort=False)["line"].transform("min")
    frame["is_first"] = (frame["line"] == first).fillna(False).astype(bool)
    pfs_end = frame["pfs_event_date"].fillna(frame["pfs_censor_date"])
    frame["pfs_months"] = _months(pfs_end - frame["start_date"])
    frame["pfs_event"] = frame["pfs_event_date"].notna()
    frame["pfs_valid"] = pfs_end.notna() & (frame["pfs_months"] >= 0)
    frame["start_months"] = _months(frame["start_date"] - frame["progression_date"])
    # which subclasses are a bispecific or a CAR-T line: rules.toml [[subclass]] tce_kind
    frame["tce_kind"] = frame["subclass"].map(study_terms().tce_kinds).fillna("").astype(str)
    frame["pid"] = frame["site"] + "|" + frame["source_id"]
    frame = frame.drop(columns=["progression_date", "death_date", "last_contact_date"])
    return frame.sort_values([*KEY, "line"], kind="mergesort").reset_index(drop=True)


def _patient_view(patients: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    frame = patients.copy()
    frame["pid"] = frame["site"] + "|" + frame["source_id"]
    os_end = frame["death_date"].fillna(frame["last_contact_date"])
    frame["os_months"] = _months(os_end - frame["progression_date"])
    frame["os_event"] = frame["death_date"].notna()
    frame["os_valid"] = frame["progression_date"].notna() & os_end.notna() & (
        frame["os_months"] >= 0)
    per_patient = lines.groupby(KEY, sort=False).agg(n_lines=("line", "size"))
    tce = lines[lines["therapy_class"] == "tce"].groupby(KEY, sort=False).agg(
        n_tce_lines=("line", "size"), first_tce_months=("start_months", "min"))
    frame = frame.merge(per_patient, on=KEY, how="left").merge(tce, on=KEY, how="left")
    frame["n_lines"] = frame["n_lines"].fillna(0).astype(int)
    frame["ever_tce"] = frame["n_tce_lines"].fillna(0) > 0
    frame = frame.drop(columns=["n_tce_lines"])
    frame["age_at_index"] = (frame["index_date"].dt.year.astype("Float64")
                             - frame["birth_year"].astype("Float64"))
    frame["cart_to_progression_months"] = _months(frame["progression_date"]
                                                  - frame["index_date"])
    return frame.sort_values(KEY, kind="mergesort").reset_index(drop=True)


def cohort_frames(patients: pd.DataFrame, lines: pd.DataFrame) -> CohortFrames:
    """Normalise both frames and add the analysis columns, for in-cohort patients only."""
    all_patients = normalize_patients(patients)
    in_cohort = all_patients[all_patients["in_cohort"]].reset_index(drop=True)
    line_view = _line_view(normalize_lines(lines), in_cohort)
    return CohortFrames(patients=_patient_view(in_cohort, line_view), lines=line_view,
                        all_patients=all_patients)
