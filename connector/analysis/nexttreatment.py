"""Time to next treatment and PFS with a switch counted as an event (per line).

Both sit beside the study's PFS (issue 15, item 3). PFS, as published, is
censored at the last response assessment, so a line stopped for a new regimen
without a measured progression simply drops out; in real-world data that
happens often (progression judged clinically, labs not drawn). Two
complementary views:

- **TTNT** (time to next treatment): line start → next line's start, or death
  when no line follows; censored at the last contact. Derived per line by
  ``connector.cohort`` (``ttnt_event_date`` / ``ttnt_censor_date``); for frames
  without those columns (an older ground truth, the demo) it is computed here
  by the same rule.
- **PFS, switch as event** (sensitivity): the line's PFS event (confirmed PD or
  death), else the next line's start as an event, else the PFS censoring date.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from connector.analysis.settings import DAYS_PER_MONTH

KEY = ["site", "source_id"]


def _months(delta: pd.Series) -> pd.Series:
    return delta.dt.days.astype("float64") / DAYS_PER_MONTH


def add_next_treatment_columns(frame: pd.DataFrame) -> None:
    """Add ``next_start``, ``ttnt_*`` and ``pfs_switch_*`` columns to a line frame.

    ``frame`` is sorted by patient and line and carries the patient's
    ``death_date`` and ``last_contact_date``.
    """
    frame["next_start"] = frame.groupby(KEY, sort=False)["start_date"].shift(-1)
    _ttnt(frame)
    _switch(frame)


def _ttnt(frame: pd.DataFrame) -> None:
    derived = frame["ttnt_event_date"].notna() | frame["ttnt_censor_date"].notna()
    death = frame["death_date"].where(frame["death_date"] >= frame["start_date"])
    event_date = frame["next_start"].fillna(death)
    censor_date = frame["last_contact_date"].where(
        frame["last_contact_date"] >= frame["start_date"], frame["start_date"])
    event_date = frame["ttnt_event_date"].where(derived, event_date)
    censor_date = frame["ttnt_censor_date"].where(derived, censor_date.where(event_date.isna()))
    end = event_date.fillna(censor_date)
    frame["ttnt_months"] = _months(end - frame["start_date"])
    frame["ttnt_event"] = event_date.notna()
    frame["ttnt_valid"] = end.notna() & (frame["ttnt_months"] >= 0)


def _switch(frame: pd.DataFrame) -> None:
    event_date = frame["pfs_event_date"].fillna(frame["next_start"])
    end = event_date.fillna(frame["pfs_censor_date"])
    frame["pfs_switch_months"] = _months(end - frame["start_date"])
    frame["pfs_switch_event"] = event_date.notna()
    frame["pfs_switch_valid"] = end.notna() & (frame["pfs_switch_months"] >= 0)


# ------------------------------------------------------------------------ results

CLASSES = ["tce", "non_tce"]


def _medians(lines: pd.DataFrame, prefix: str, alpha: float) -> dict[str, Any]:
    from connector.analysis.survival import kaplan_meier, kaplan_meier_by

    valid = lines[lines[f"{prefix}_valid"]]
    fits = {"overall": kaplan_meier(valid[f"{prefix}_months"], valid[f"{prefix}_event"], "all",
                                    alpha),
            **kaplan_meier_by(valid, f"{prefix}_months", f"{prefix}_event", "therapy_class",
                              CLASSES, alpha)}
    return {"median_months": {k: v.as_estimate() for k, v in fits.items()},
            "n_not_usable": int((~lines[f"{prefix}_valid"]).sum())}


def next_treatment_results(lines: pd.DataFrame, alpha: float) -> dict[str, Any]:
    """results.json ``time_to_next_treatment`` and ``pfs_switch_as_event``."""
    first = lines[lines["is_first"]]
    return {
        "time_to_next_treatment": {
            "first_line": _medians(first, "ttnt", alpha),
            "all_lines": _medians(lines, "ttnt", alpha),
        },
        "pfs_switch_as_event": {
            "first_line": _medians(first, "pfs_switch", alpha),
            "all_lines": _medians(lines, "pfs_switch", alpha),
        },
    }


def per_site_counts(patients: pd.DataFrame) -> dict[str, dict[str, int]]:
    """In-cohort patients whose progression came from the new-line fallback, and whose
    death is known without a date, by site (every site listed, zeros included)."""
    sites = sorted(patients["site"].dropna().unique().tolist())
    fallback = patients["progression_basis"] == "new_line_fallback"
    undated = patients["deceased"] & patients["death_date"].isna()
    return {
        "new_line_fallback_by_site": {s: int((fallback & (patients["site"] == s)).sum())
                                      for s in sites},
        "deaths_without_date_by_site": {s: int((undated & (patients["site"] == s)).sum())
                                        for s in sites},
    }
