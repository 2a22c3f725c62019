"""Multivariable Cox models (issue 16 item 4).

- OS from progression with TCE exposure as a time-varying covariate (switching on at
  the first TCE line, so no immortal time) and the baseline covariates where recorded:
  age at CAR-T (per 10 years), relapse within the first early-relapse threshold,
  cilta-cel (vs ide-cel), extramedullary disease recorded, high-risk cytogenetics
  present, R-ISS stage III and LDH above the upper limit. Complete-case: a patient
  missing any covariate is left out, and the number used is reported. A covariate
  that does not vary among those left is dropped (and named).
- PFS of every line with TCE and the line number as covariates (lines of one patient
  are correlated: robust errors clustered by patient).

TCE versus non-TCE compares patients who were chosen for each treatment: the hazard
ratios describe associations in this cohort, not the effect of giving TCE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from connector.analysis.estimates import clean, clean_p
from connector.analysis.phfitter import PHFitter
from connector.analysis.survival import (
    _fit_quietly,
    canonical_order,
    fit_time_varying,
    tce_exposure_intervals,
)
from connector.analysis.table1 import high_risk

CAVEAT = ("TCE and non-TCE treatment were chosen for different patients (by fitness, "
          "disease pace and what was available), so these hazard ratios describe who did "
          "better in this cohort; they are not the effect of giving TCE.")
COVARIATES = {
    "tce": "TCE received (time-varying)",
    "age_per_10_years": "age at CAR-T, per 10 years",
    "early_relapse": "relapse within {m:g} months of CAR-T",
    "cilta_cel": "ciltacabtagene autoleucel (vs idecabtagene vicleucel)",
    "extramedullary": "extramedullary disease recorded",
    "high_risk_cytogenetics": "high-risk cytogenetics",
    "riss_stage_iii": "R-ISS stage III",
    "ldh_elevated": "LDH above the upper limit",
}


def covariate_frame(patients: pd.DataFrame, early_months: float) -> pd.DataFrame:
    """Per patient (``pid``): the baseline covariates, NaN where not recorded."""
    risk = high_risk(patients)
    stage = patients["riss_stage"]
    return pd.DataFrame({
        "pid": patients["pid"],
        "age_per_10_years": pd.to_numeric(patients["age_at_index"], errors="coerce") / 10.0,
        "early_relapse": np.where(patients["cart_to_progression_months"].isna(), np.nan,
                                  (patients["cart_to_progression_months"]
                                   < early_months).astype(float)),
        "cilta_cel": patients["index_product"].map({"ciltacabtagene autoleucel": 1.0,
                                                    "idecabtagene vicleucel": 0.0}),
        # extramedullary disease is only ever recorded as present: no record counts as none
        "extramedullary": (patients["extramedullary"] == "present").astype(float),
        "high_risk_cytogenetics": risk.map({"present": 1.0, "absent": 0.0}).astype(float),
        "riss_stage_iii": np.where(stage.isna(), np.nan, (stage == "III").astype(float)),
        "ldh_elevated": patients["ldh_elevated"].map(
            lambda v: np.nan if v is None else float(bool(v))).astype(float),
    })


def _rows(model: Any, names: list[str], labels: dict[str, str]) -> dict[str, Any]:
    summary = model.summary
    lower = [c for c in summary.columns if c.startswith("exp(coef) lower")][0]
    upper = [c for c in summary.columns if c.startswith("exp(coef) upper")][0]
    return {name: {"label": labels[name], "estimate": clean(summary.loc[name, "exp(coef)"]),
                   "ci_low": clean(summary.loc[name, lower]),
                   "ci_high": clean(summary.loc[name, upper]),
                   "p": clean_p(summary.loc[name, "p"])} for name in names}


def os_multivariable(patients: pd.DataFrame, early_months: float, *, alpha: float = 0.05,
                     min_events: int = 10) -> dict[str, Any]:
    """Time-varying TCE plus baseline covariates, complete-case, site strata."""
    labels = {**COVARIATES, "early_relapse": COVARIATES["early_relapse"].format(m=early_months)}
    intervals = tce_exposure_intervals(patients)
    covs = covariate_frame(patients, early_months)
    n_all = int(intervals["id"].nunique()) if len(intervals) else 0
    data = intervals.merge(covs, left_on="id", right_on="pid", how="left").drop(columns="pid")
    names = [c for c in COVARIATES if c != "tce"]
    complete = data.dropna(subset=names)
    used = int(complete["id"].nunique()) if len(complete) else 0
    events = int(complete["event"].sum()) if len(complete) else 0
    kept = [c for c in names if complete[c].nunique() > 1]
    dropped = [c for c in names if c not in kept]
    meta = {"n_patients_with_os": n_all, "n_used": used, "n_left_out_incomplete": n_all - used,
            "events": events, "covariates_dropped_constant": [labels[c] for c in dropped],
            "caveat": CAVEAT}
    if events < max(min_events, 2 * (len(kept) + 1)):
        return {**meta, "status": f"not_estimable: {events} events for {len(kept) + 1} "
                                  "covariates", "hazard_ratios": {}}
    multi_site = complete["site"].nunique() > 1
    model_data = complete[["id", "start", "stop", "event", "tce", *kept]
                          + (["site"] if multi_site else [])].assign(
        event=lambda f: f["event"].astype(int))
    model, status = fit_time_varying(model_data, alpha=alpha, multi_site=multi_site)
    if model is None:
        return {**meta, "status": status, "hazard_ratios": {}}
    return {**meta, "status": "ok", "adjusted_for": ["site (strata)"] if multi_site else [],
            "hazard_ratios": _rows(model, ["tce", *kept], labels)}


def pfs_line_adjusted(lines: pd.DataFrame, *, alpha: float = 0.05,
                      min_events: int = 10) -> dict[str, Any]:
    """PFS of every line: TCE vs non-TCE adjusted for the line number, clustered by patient."""
    valid = lines[lines["pfs_valid"]]
    data = pd.DataFrame({"T": valid["pfs_months"].astype(float),
                         "E": valid["pfs_event"].astype(int),
                         "tce": (valid["therapy_class"] == "tce").astype(int),
                         "line_number": valid["line"].astype(float),
                         "cluster": valid["pid"].astype(str)})
    # rows and clusters in an order set by the data alone, so a merged database (keys
    # instead of source ids) gives the sites' own confidence intervals
    data = canonical_order(data, ("T", "E", "tce", "line_number"))
    labels = {"tce": "TCE line (vs non-TCE)", "line_number": "line number, per line later"}
    meta = {"n_lines": int(len(data)), "n_patients": int(data["cluster"].nunique()),
            "events": int(data["E"].sum()), "caveat": CAVEAT}
    if meta["events"] < min_events or data["tce"].nunique() < 2:
        return {**meta, "status": "not_estimable: too few events or one class only",
                "hazard_ratios": {}}
    fitter = PHFitter(alpha=alpha)

    def fit() -> PHFitter:
        return fitter.fit(data, duration_col="T", event_col="E", cluster_col="cluster")

    model, status = _fit_quietly(fit, "tce")
    if model is None:
        return {**meta, "status": status, "hazard_ratios": {}}
    return {**meta, "status": "ok", "robust_se": True,
            "hazard_ratios": _rows(model, ["tce", "line_number"], labels)}
