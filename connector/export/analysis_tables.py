"""Analysis-ready tables: one row per cohort patient and one per line, outcomes computed.

They carry the quantities the study's analyses use (``connector.analysis.frames``:
the same code computes OS, PFS and the response flags for the report), so an
analyst in R or DuckDB starts from ``Surv(os_months, os_event)`` instead of
re-deriving them from dates. Time to next treatment (TTNT) is computed here from
the lines and deaths; its definition is in the data dictionary and docs/export.md.

Only in-cohort patients appear (the derived ``cohort_patient`` table has everyone,
with the reason for exclusion). A duration that cannot be computed (a missing or
inconsistent date) is null, with its event flag null too, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from connector.analysis.frames import LINE_COLUMNS, PATIENT_COLUMNS, cohort_frames
from connector.analysis.settings import DAYS_PER_MONTH

F64, BOOL, STR, I64, DATE = pa.float64(), pa.bool_(), pa.string(), pa.int64(), pa.date32()

PATIENT_SCHEMA = pa.schema([
    ("site", STR), ("patient_key", STR), ("index_product", STR), ("index_date", DATE),
    ("progression_date", DATE), ("progression_basis", STR), ("death_date", DATE),
    ("last_contact_date", DATE), ("birth_year", I64), ("sex", STR), ("age_at_index", F64),
    ("cart_to_progression_months", F64), ("os_months", F64), ("os_event", BOOL),
    ("ttnt_months", F64), ("ttnt_event", BOOL), ("n_lines", I64), ("ever_tce", BOOL),
    ("first_tce_months", F64), ("first_line_therapy_class", STR),
    ("first_line_subclass", STR), ("first_line_best_response", STR),
    ("first_line_responder", BOOL),
])

LINE_SCHEMA = pa.schema([
    ("site", STR), ("patient_key", STR), ("line", I64), ("is_first", BOOL),
    ("start_date", DATE), ("end_date", DATE), ("start_months", F64), ("drugs", STR),
    ("therapy_class", STR), ("subclass", STR), ("tce_kind", STR), ("best_response", STR),
    ("response_note", STR), ("evaluable", BOOL), ("responder", BOOL), ("vgpr_or_better", BOOL),
    ("cr_or_better", BOOL), ("cr_determinable", BOOL), ("pfs_months", F64), ("pfs_event", BOOL),
    ("ttnt_months", F64), ("ttnt_event", BOOL), ("pfs_event_date", DATE),
    ("pfs_censor_date", DATE),
])


def _months(end: pd.Series, start: pd.Series) -> pd.Series:
    return (end - start).dt.days.astype("float64") / DAYS_PER_MONTH


def _time_to_event(start: pd.Series, next_start: pd.Series, death: pd.Series,
                   last_contact: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Months from ``start`` to the next treatment or death (event), else last contact.

    The event is whichever of next start and death comes first; without either, the
    time is censored at last contact. Null (time and flag) when the end is missing or
    before the start.
    """
    event_date = pd.concat([next_start, death], axis=1).min(axis=1)
    end = event_date.fillna(last_contact)
    months = _months(end, start)
    valid = end.notna() & start.notna() & (months >= 0)
    return months.where(valid), event_date.notna().where(valid)


def _patient_ttnt(patients: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """TTNT after CAR-T: the index infusion to the first later line's start or death."""
    first_start = lines.groupby("pid")["start_date"].min()
    next_start = patients["pid"].map(first_start)
    months, event = _time_to_event(patients["index_date"], next_start,
                                   patients["death_date"], patients["last_contact_date"])
    return patients.assign(ttnt_months=months, ttnt_event=event)


def analysis_frames(cohort_rows: Iterable[dict[str, Any]],
                    line_rows: Iterable[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(patients, lines) analysis-ready frames from derived rows (pseudonymized)."""
    patients = pd.DataFrame(list(cohort_rows), columns=PATIENT_COLUMNS)
    lines = pd.DataFrame(list(line_rows), columns=LINE_COLUMNS)
    view = cohort_frames(patients, lines)
    pats, lns = view.patients, view.lines
    pats = pats.assign(os_months=pats["os_months"].where(pats["os_valid"]),
                       os_event=pats["os_event"].where(pats["os_valid"]))
    lns = lns.assign(pfs_months=lns["pfs_months"].where(lns["pfs_valid"]),
                     pfs_event=lns["pfs_event"].where(lns["pfs_valid"]),
                     vgpr_or_better=lns["vgpr_plus"], cr_or_better=lns["cr_plus"],
                     tce_kind=lns["tce_kind"].replace("", None))
    # line TTNT as derived (therapy_line.ttnt_*; connector/analysis/nexttreatment.py)
    lns = lns.assign(ttnt_months=lns["ttnt_months"].where(lns["ttnt_valid"]),
                     ttnt_event=lns["ttnt_event"].where(lns["ttnt_valid"]))
    pats = _patient_ttnt(pats, lns)
    first = lns[lns["is_first"]].set_index("pid")
    for col in ("therapy_class", "subclass", "best_response", "responder"):
        pats[f"first_line_{col}"] = pats["pid"].map(first[col])
    pats["patient_key"] = pats["source_id"]
    lns["patient_key"] = lns["source_id"]
    pats = pats.sort_values(["site", "patient_key"], kind="mergesort")
    lns = lns.sort_values(["site", "patient_key", "line"], kind="mergesort")
    return pats.reset_index(drop=True), lns.reset_index(drop=True)


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame``'s columns of ``schema`` as an Arrow table of exactly that schema."""
    arrays = [pa.array(_values(frame[field.name], field.type), type=field.type)
              for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _values(series: pd.Series, arrow_type: pa.DataType) -> list[Any]:
    """Python values with None for missing, dates as ``datetime.date``."""
    if pa.types.is_date32(arrow_type):
        return [None if pd.isna(v) else pd.Timestamp(v).date() for v in series]
    out: list[Any] = []
    for v in series.astype(object):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
            out.append(None)
        elif pa.types.is_boolean(arrow_type):
            out.append(bool(v))
        elif pa.types.is_integer(arrow_type):
            out.append(int(v))
        elif pa.types.is_floating(arrow_type):
            out.append(float(v))
        else:
            out.append(str(v))
    return out


def analysis_tables(cohort_rows: Iterable[dict[str, Any]],
                    line_rows: Iterable[dict[str, Any]]) -> dict[str, pa.Table]:
    """The two analysis-ready tables as Arrow tables, by exported name."""
    patients, lines = analysis_frames(cohort_rows, line_rows)
    return {"analysis_patient": to_arrow(patients, PATIENT_SCHEMA),
            "analysis_line": to_arrow(lines, LINE_SCHEMA)}
