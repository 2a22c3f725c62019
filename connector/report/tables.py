"""patients.csv and therapy_lines.csv, with the contract's columns and nothing else.

Rows are sorted by site, source id (and line) and values are written by hand
(ISO dates, empty when unknown, integers without ".0"), so the same database
always gives byte-identical files whatever pandas version wrote them.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path
from typing import Any

import pandas as pd

PATIENTS_CSV = ["site", "source_id", "patient_key", "birth_year", "sex", "index_product",
                "index_date", "progression_date", "death_date", "last_contact_date"]
LINES_CSV = ["site", "source_id", "patient_key", "line", "start_date", "end_date", "drugs",
             "therapy_class", "subclass", "best_response", "pfs_event_date", "pfs_censor_date"]


def cell(value: Any) -> str:
    """One CSV cell: ISO date, integer, text, or empty for anything missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp | dt.datetime):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def write_csv(frame: pd.DataFrame, columns: list[str], sort: list[str], path: Path) -> Path:
    ordered = frame.sort_values(sort, kind="mergesort")[columns]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in ordered.itertuples(index=False, name=None):
            writer.writerow([cell(v) for v in row])
    return path


def write_tables(patients: pd.DataFrame, lines: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The in-cohort patients and their lines (the frames are the analysis's own views)."""
    return [write_csv(patients, PATIENTS_CSV, ["site", "source_id"], out_dir / "patients.csv"),
            write_csv(lines, LINES_CSV, ["site", "source_id", "line"],
                      out_dir / "therapy_lines.csv")]
