"""Time-to-event estimates: Kaplan–Meier medians, log-rank tests, Cox models, landmarks.

Durations are in months of 30.4375 days. A median is the smallest time at which
the Kaplan–Meier estimate is at or below 0.5 (lifelines' convention); its 95% CI
is where the pointwise log(-log) (exponential Greenwood) band crosses 0.5, and an
unreached bound is reported as null ("not estimable"). A median that is not
reached is null as well, with ``reached`` False so the report can say which.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxTimeVaryingFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times

from connector.analysis.estimates import clean, clean_p, empty, estimate
from connector.analysis.phfitter import PHFitter


@dataclass
class KMResult:
    """One Kaplan–Meier fit and its median; ``fitter`` is None when there were no subjects."""

    label: str
    fitter: KaplanMeierFitter | None
    n: int
    events: int
    median: float | None
    ci_low: float | None
    ci_high: float | None
    reached: bool

    def as_estimate(self, **extra: Any) -> dict[str, Any]:
        """The median as an estimate object with events and whether it was reached."""
        return estimate(self.median, self.ci_low, self.ci_high, self.n, events=self.events,
                        reached=self.reached, **extra)


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def kaplan_meier(durations: pd.Series | np.ndarray, events: pd.Series | np.ndarray,
                 label: str, alpha: float = 0.05) -> KMResult:
    """A Kaplan–Meier fit of (duration, event) pairs; empty input gives an empty result."""
    t = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=bool)
    if t.size == 0:
        return KMResult(label, None, 0, 0, None, None, None, False)
    fitter = KaplanMeierFitter(alpha=alpha, label=label).fit(t, e)
    median = _finite(fitter.median_survival_time_)
    bounds = median_survival_times(fitter.confidence_interval_).iloc[0]
    return KMResult(label=label, fitter=fitter, n=int(t.size), events=int(e.sum()),
                    median=median, ci_low=_finite(bounds.iloc[0]),
                    ci_high=_finite(bounds.iloc[1]), reached=median is not None)


def kaplan_meier_by(frame: pd.DataFrame, duration: str, event: str, by: str,
                    groups: list[str], alpha: float = 0.05) -> dict[str, KMResult]:
    """One fit per named group of column ``by`` (an absent group gives an empty fit)."""
    out = {}
    for name in groups:
        part = frame[frame[by] == name]
        out[name] = kaplan_meier(part[duration], part[event], name, alpha)
    return out


def reverse_km_median(durations: pd.Series, events: pd.Series, label: str,
                      alpha: float = 0.05) -> KMResult:
    """Median follow-up by the reverse Kaplan–Meier method (censoring as the event).

    Deaths are censored follow-up here, so short survivors do not pull the
    follow-up down the way a plain median of observed times would.
    """
    return kaplan_meier(durations, ~np.asarray(events, dtype=bool), label, alpha)


def logrank(frame: pd.DataFrame, duration: str, event: str, by: str) -> dict[str, Any]:
    """Log-rank test across the groups of ``by``; p is null with fewer than two groups."""
    data = frame[[duration, event, by]].dropna()
    groups = sorted(data[by].unique().tolist())
    summary = {str(g): {"n": int((data[by] == g).sum()),
                        "events": int(data.loc[data[by] == g, event].sum())} for g in groups}
    if len(groups) < 2 or int(data[event].sum()) == 0:
        return {"p": None, "statistic": None, "df": None, "groups": summary}
    result = multivariate_logrank_test(data[duration], data[by], data[event])
    return {"p": clean_p(result.p_value), "statistic": clean_p(result.test_statistic),
            "df": int(len(groups) - 1), "groups": summary}


# Newton–Raphson trouble as lifelines words it; its other ConvergenceWarnings are
# pre-fit heuristics (e.g. "low variance", always raised for a time-varying
# exposure) that say nothing about whether the fit itself converged.
_FAILED_FIT = ("failed to converge", "norm(delta) is still high")
_MAX_ABS_LOG_HR = 10.0  # |log HR| beyond this signals (quasi-)separation, not an effect


def _fit_quietly(fit: Any, covariate: str = "x") -> tuple[Any, str]:
    """Run a lifelines fit, turning convergence trouble into a status instead of a crash."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = fit()
        except (ConvergenceError, np.linalg.LinAlgError, ValueError, ZeroDivisionError,
                FloatingPointError) as exc:
            return None, f"not_estimable: {type(exc).__name__}"
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning) and any(
                text in str(warning.message) for text in _FAILED_FIT):
            return None, "not_estimable: the Cox fit did not converge"
    row = model.summary.loc[covariate]
    coef, se = float(row["coef"]), float(row["se(coef)"])
    if not (math.isfinite(coef) and math.isfinite(se)) or abs(coef) > _MAX_ABS_LOG_HR:
        return None, "not_estimable: separation (hazard ratio diverges)"
    return model, "ok"


def _eligibility(frame: pd.DataFrame, event: str, flag: str, min_events: int) -> str | None:
    """Why a two-group Cox model should not be fitted, or None when it may."""
    events = int(frame[event].sum())
    if events < min_events:
        return f"not_estimable: {events} events, fewer than {min_events}"
    for value in (True, False):
        part = frame[frame[flag] == value]
        if len(part) < 2 or int(part[event].sum()) == 0:
            return "not_estimable: a group has fewer than 2 subjects or no events"
    return None


def cox_hazard_ratio(frame: pd.DataFrame, duration: str, event: str, flag: str,
                     *, site: str = "site", cluster: str | None = None, alpha: float = 0.05,
                     min_events: int = 10) -> dict[str, Any]:
    """Hazard ratio of ``flag`` (True vs False), stratified by site when there are several.

    Stratifying by site adjusts for site without assuming the sites' baseline
    hazards are proportional. ``cluster`` names a column of correlated rows (lines of
    one patient) and switches to robust (sandwich) standard errors.
    """
    data = frame[[duration, event, flag, site] + ([cluster] if cluster else [])].dropna()
    data = data.assign(**{flag: data[flag].astype(bool)})
    n, events = len(data), int(data[event].sum())
    multi_site = data[site].nunique() > 1
    adjusted = ["site (strata)"] if multi_site else []
    meta = {"events": events, "p": None, "adjusted_for": adjusted}
    problem = _eligibility(data, event, flag, min_events)
    if problem:
        return empty(n, **meta, status=problem)
    model_data = pd.DataFrame({"T": data[duration].astype(float),
                               "E": data[event].astype(int), "x": data[flag].astype(int)})
    if multi_site:
        model_data["site"] = data[site].astype(str)
    if cluster:
        model_data["cluster"] = data[cluster].astype(str)
    model_data = canonical_order(model_data)
    fitter = PHFitter(alpha=alpha)

    def fit() -> PHFitter:
        return fitter.fit(model_data, duration_col="T", event_col="E",
                          strata=["site"] if multi_site else None,
                          cluster_col="cluster" if cluster else None)

    model, status = _fit_quietly(fit)
    if model is None:
        return empty(n, **meta, status=status)
    return hazard_ratio(model, "x", n, events=events, adjusted_for=adjusted,
                        robust_se=bool(cluster), status="ok")


def canonical_order(model_data: pd.DataFrame,
                    values: Sequence[str] = ("site", "T", "E", "x")) -> pd.DataFrame:
    """Rows in an order that depends only on the data, never on ids or input order.

    lifelines' robust (clustered) variance sums in row order, so the last digits of a CI
    change with the order of rows and the spelling of cluster labels. A merged central
    database holds pseudonymous keys instead of source ids; ordering rows by their values
    and naming clusters by their content keeps its results identical to the sites' own.
    """
    value_cols = [c for c in values if c in model_data.columns]
    data = model_data.sort_values(value_cols, kind="mergesort").reset_index(drop=True)
    if "cluster" not in data.columns:
        return data
    # ``data`` is sorted by the value columns, so each cluster's rows arrive already in
    # the order of its signature; one pass builds them all (a groupby-apply with a sort
    # per cluster took seconds for thousands of patients)
    rows_of: dict[Any, list[tuple]] = {}
    for label, row in zip(data["cluster"].tolist(), data[value_cols].to_numpy().tolist(),
                          strict=True):
        rows_of.setdefault(label, []).append(tuple(row))
    signature = {label: tuple(rows) for label, rows in rows_of.items()}
    rank = {label: i for i, label in enumerate(sorted(signature,
                                                      key=lambda c: (signature[c], c)))}
    data["cluster"] = data["cluster"].map(rank)
    return data.sort_values(["cluster", *value_cols], kind="mergesort").reset_index(drop=True)


def tce_exposure_intervals(patients: pd.DataFrame) -> pd.DataFrame:
    """Counting-process rows for OS with TCE exposure switching on at the first TCE line.

    Before the first TCE line a patient counts as unexposed, after it as exposed, so
    the time a patient had to survive to receive TCE is credited to the unexposed
    group: this is what removes the immortal-time bias of an ever/never comparison.
    """
    data = patients[patients["os_valid"]].copy()
    data = data[data["os_months"] > 0]
    switch = data["first_tce_months"].clip(lower=0)
    switches = data["ever_tce"] & (switch < data["os_months"])
    pre = pd.DataFrame({
        "id": data["pid"], "site": data["site"],
        "start": 0.0, "stop": np.where(switches, switch, data["os_months"]),
        "event": np.where(switches, False, data["os_event"]), "tce": 0,
    })
    post = pd.DataFrame({
        "id": data.loc[switches, "pid"], "site": data.loc[switches, "site"],
        "start": switch[switches], "stop": data.loc[switches, "os_months"],
        "event": data.loc[switches, "os_event"], "tce": 1,
    })
    rows = pd.concat([pre, post], ignore_index=True)
    rows = rows[rows["stop"] > rows["start"]]
    return rows.sort_values(["id", "start"], kind="mergesort").reset_index(drop=True)


def time_varying_tce_cox(patients: pd.DataFrame, *, alpha: float = 0.05,
                         min_events: int = 10) -> dict[str, Any]:
    """Hazard ratio of death for TCE exposure as a time-varying covariate, by site strata."""
    rows = tce_exposure_intervals(patients)
    n = int(rows["id"].nunique()) if len(rows) else 0
    events = int(rows["event"].sum()) if len(rows) else 0
    multi_site = rows["site"].nunique() > 1 if len(rows) else False
    adjusted = ["site (strata)"] if multi_site else []
    meta = {"events": events, "p": None, "adjusted_for": adjusted}
    if events < min_events:
        return empty(n, **meta, status=f"not_estimable: {events} events, fewer than {min_events}")
    exposed = rows[rows["tce"] == 1]
    if exposed.empty or int(exposed["event"].sum()) == 0 or int(
            rows.loc[rows["tce"] == 0, "event"].sum()) == 0:
        return empty(n, **meta, status="not_estimable: no deaths in one exposure state")
    data = rows.assign(event=rows["event"].astype(int))
    if not multi_site:
        data = data.drop(columns=["site"])
    model, status = fit_time_varying(data, alpha=alpha, multi_site=multi_site)
    if model is None:
        return empty(n, **meta, status=status)
    return hazard_ratio(model, "tce", n, events=events, adjusted_for=adjusted, status="ok")


def fit_time_varying(data: pd.DataFrame, *, alpha: float, multi_site: bool
                     ) -> tuple[Any, str]:
    """A Cox model with time-varying TCE exposure (one row per patient and interval:
    ``id``, ``start``, ``stop``, ``event``, ``tce``, covariates), stratified by site when
    there are several; (None, why) when it cannot be estimated."""
    fitter = CoxTimeVaryingFitter(alpha=alpha)

    def fit() -> CoxTimeVaryingFitter:
        return fitter.fit(data, id_col="id", event_col="event", start_col="start",
                          stop_col="stop", strata=["site"] if multi_site else None)

    return _fit_quietly(fit, "tce")


def hazard_ratio(model: Any, covariate: str, n: int, events: int,
                 **extra: Any) -> dict[str, Any]:
    """The fitted hazard ratio of ``covariate`` with its confidence interval and p-value
    (then ``extra``, in results.json's order)."""
    row = model.summary.loc[covariate]
    lower = [c for c in model.summary.columns if c.startswith("exp(coef) lower")][0]
    upper = [c for c in model.summary.columns if c.startswith("exp(coef) upper")][0]
    return estimate(row["exp(coef)"], row[lower], row[upper], n, events=events,
                    p=clean_p(row["p"]), **extra)


@dataclass
class Landmark:
    """OS from a landmark time, by whether a TCE line had started by then."""

    months: float
    frame: pd.DataFrame  # eligible patients with os_from_landmark and tce_by_landmark
    fits: dict[str, KMResult]
    n_not_at_risk: int  # died or lost to follow-up before the landmark

    def results(self, alpha: float = 0.05, min_events: int = 10) -> dict[str, Any]:
        test = logrank(self.frame.assign(group=np.where(self.frame["tce_by_landmark"],
                                                        "tce", "non_tce")),
                       "os_from_landmark", "os_event", "group")
        return {"months": clean(self.months), "n": int(len(self.frame)),
                "n_not_at_risk_at_landmark": self.n_not_at_risk,
                "median_months_from_landmark": {k: v.as_estimate()
                                                for k, v in self.fits.items()},
                "logrank": test,
                # the hazard ratio printed on the landmark figure beside the log-rank p
                "cox": cox_hazard_ratio(self.frame, "os_from_landmark", "os_event",
                                        "tce_by_landmark", alpha=alpha,
                                        min_events=min_events)}


def landmark_os(patients: pd.DataFrame, months: float, alpha: float = 0.05) -> Landmark:
    """Patients still followed at ``months`` after progression, grouped by TCE before it."""
    valid = patients[patients["os_valid"]]
    eligible = valid[valid["os_months"] > months].copy()
    eligible["tce_by_landmark"] = eligible["ever_tce"] & (eligible["first_tce_months"] <= months)
    eligible["os_from_landmark"] = eligible["os_months"] - months
    fits = {}
    for name, flag in (("tce", True), ("non_tce", False)):
        part = eligible[eligible["tce_by_landmark"] == flag]
        fits[name] = kaplan_meier(part["os_from_landmark"], part["os_event"],
                                  f"{'TCE' if flag else 'no TCE'} by {months:g} months", alpha)
    return Landmark(months=months, frame=eligible, fits=fits,
                    n_not_at_risk=int(len(valid) - len(eligible)))
