"""More endpoints (issue 16 item 5): duration of response, PFS2, best response over all
lines, and OS at fixed times with CIs. Time to next treatment is in nexttreatment.py.

- Duration of response: lines with best response >= PR, from the line's start to
  progression or death, censored at the last assessment. The derived tables do not
  hold the date the response was first reached, so it is measured from the line's
  start (the report says so); it is PFS restricted to responding lines.
- PFS2: from the start of the first line after progression to progression or death
  on the second line; without a second line, death is an event and the patient is
  censored at last contact (EMA's PFS2: second objective progression or death).
- Best response over all lines: each patient's best category across their lines;
  ORR counts patients with any evaluable line.
- OS at t months: the Kaplan-Meier estimate S(t) with its log(-log) pointwise CI;
  null when the follow-up does not reach t.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from connector.analysis.estimates import clean, estimate
from connector.analysis.frames import AT_LEAST_PR, EVALUABLE, RESPONSES
from connector.analysis.rates import rate_of
from connector.analysis.settings import DAYS_PER_MONTH
from connector.analysis.survival import KMResult, kaplan_meier

#: best first (sCR) to worst (NE)
RANK = {name: i for i, name in enumerate(RESPONSES)}


def duration_of_response(lines: pd.DataFrame, alpha: float) -> tuple[dict, KMResult]:
    """KM median duration of response over responding lines (pooled) and first lines."""
    responding = lines[lines["responder"] & lines["pfs_valid"]]
    fit = kaplan_meier(responding["pfs_months"], responding["pfs_event"], "all lines", alpha)
    first = responding[responding["is_first"]]
    first_fit = kaplan_meier(first["pfs_months"], first["pfs_event"], "first line", alpha)
    return {"first_line": first_fit.as_estimate(), "all_lines": fit.as_estimate()}, first_fit


#: the line columns PFS2 reads (only these are sorted and grouped)
LINE_FIELDS = ["pid", "line", "site", "start_date", "pfs_event_date", "pfs_censor_date"]


def _first_two_lines(lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each patient's first and second line (by line number), indexed by ``pid``.

    Both come from one ordering so that "second" means the line after "first"; the
    first frame is in ``pid`` order, which is the order of the PFS2 rows.
    """
    ordered = lines[LINE_FIELDS].sort_values(["pid", "line"])
    by_patient = ordered.groupby("pid", sort=True)
    return by_patient.nth(0).set_index("pid"), by_patient.nth(1).set_index("pid")


def pfs2_frame(patients: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """One row per patient with a first line: ``pfs2_months``, ``pfs2_event``.

    Built column-wise (aligned on ``pid``), not patient by patient: at 10,000
    patients a Python loop over rows took seconds of the analysis. With a second
    line, PFS2 ends at its progression (event) or its censoring; without one, at
    death (event) or last contact (censored). Rows without an end date, or ending
    before the first line started, are left out.
    """
    first, second = _first_two_lines(lines)
    pids = first.index
    has_second = pids.isin(second.index)
    nxt = second.reindex(pids)
    info = patients[["pid", "death_date", "last_contact_date"]].set_index("pid").reindex(pids)
    second_event = nxt["pfs_event_date"].notna()
    second_end = nxt["pfs_event_date"].where(second_event, nxt["pfs_censor_date"])
    died = info["death_date"].notna()
    no_second_end = info["death_date"].where(died, info["last_contact_date"])
    end = second_end.where(has_second, no_second_end)
    event = second_event.where(has_second, died)
    months = (end - first["start_date"]).dt.days / DAYS_PER_MONTH
    frame = pd.DataFrame({
        "pid": pids.to_numpy(dtype=object), "site": first["site"].to_numpy(dtype=object),
        "pfs2_months": months.to_numpy(dtype="float64"),
        "pfs2_event": event.to_numpy(dtype=bool), "has_second_line": has_second,
    })
    return frame[frame["pfs2_months"].notna() & (frame["pfs2_months"] >= 0)]


def pfs2(patients: pd.DataFrame, lines: pd.DataFrame, alpha: float) -> tuple[dict, KMResult]:
    """results.json's ``endpoints.pfs2``: the KM median, and how many patients had a
    second line (the rest end at death or last contact, not at a second progression)."""
    frame = pfs2_frame(patients, lines)
    fit = kaplan_meier(frame["pfs2_months"], frame["pfs2_event"], "PFS2", alpha)
    return {"median_months": fit.as_estimate(),
            "n_with_second_line": int(frame["has_second_line"].sum())}, fit


def best_response_over_lines(lines: pd.DataFrame, alpha: float) -> dict[str, Any]:
    """Each patient's best response across lines: counts, and ORR among patients with an
    evaluable line."""
    best = lines.assign(rank=lines["best_response"].map(RANK).fillna(len(RANK))).groupby(
        "pid")["rank"].min().map(lambda r: RESPONSES[int(r)] if r < len(RESPONSES) else "NE")
    counts = {k: int((best == k).sum()) for k in RESPONSES}
    evaluable = best[best.isin(EVALUABLE)]
    return {"counts": counts, "n_patients": int(best.size),
            "orr": rate_of(evaluable.isin(AT_LEAST_PR), alpha),
            "vgpr_or_better": rate_of(evaluable.isin({"sCR", "CR", "VGPR"}), alpha)}


def survival_at(fit: KMResult, months: float) -> dict[str, Any]:
    """S(t) with its pointwise CI; null (with the reason) when follow-up ends before t."""
    if fit.fitter is None:
        return estimate(None, None, None, 0, at_months=months)
    f = fit.fitter
    if months > float(f.timeline.max()):
        return estimate(None, None, None, fit.n, at_months=months,
                        status="follow-up ends before this time")
    value = float(f.survival_function_at_times(months).iloc[0])
    band = f.confidence_interval_survival_function_
    row = band[band.index <= months].iloc[-1]
    at_risk = int((f.durations >= months).sum())
    return estimate(clean(value), clean(row.iloc[0]), clean(row.iloc[1]), fit.n,
                    at_months=months, at_risk=at_risk)


def more_endpoints(patients: pd.DataFrame, lines: pd.DataFrame, os_fit: KMResult,
                   landmarks: tuple[float, ...], alpha: float
                   ) -> tuple[dict[str, Any], dict[str, KMResult]]:
    """results.json's ``endpoints`` and the fits the report draws."""
    dor, dor_fit = duration_of_response(lines, alpha)
    pfs2_result, pfs2_fit = pfs2(patients, lines, alpha)
    out = {
        "duration_of_response_months": dor,
        "pfs2": pfs2_result,
        "best_response_over_all_lines": best_response_over_lines(lines, alpha),
        "os_at_months": {f"{m:g}": survival_at(os_fit, m) for m in landmarks},
    }
    return out, {"duration_of_response": dor_fit, "pfs2": pfs2_fit}
