"""Kaplan–Meier medians, log-rank, Cox and the immortal-time handling on hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines.exceptions import ConvergenceError
from scipy import stats

from connector.analysis.survival import (
    _fit_quietly,
    cox_hazard_ratio,
    kaplan_meier,
    landmark_os,
    logrank,
    reverse_km_median,
    tce_exposure_intervals,
    time_varying_tce_cox,
)


def test_km_median_all_events():
    fit = kaplan_meier([1, 2, 3, 4, 5], [1, 1, 1, 1, 1], "x")
    assert fit.median == 3.0  # S(3) = 0.4 is the first value <= 0.5
    assert fit.n == 5 and fit.events == 5 and fit.reached


def test_km_median_with_censoring_by_hand():
    # S(1)=5/6, S(2)=4/6, 3 censored, S(4)=4/6*2/3=0.444 -> median 4
    fit = kaplan_meier([1, 2, 3, 4, 5, 6], [1, 1, 0, 1, 1, 1], "x")
    assert fit.median == 4.0
    assert fit.events == 5


def _loglog_band(times, events, z):
    """Independent exponential-Greenwood band: (time, lower, upper) after each event time."""
    times, events = np.asarray(times, float), np.asarray(events, bool)
    s, greenwood, out = 1.0, 0.0, []
    for t in np.unique(times[events]):
        at_risk = (times >= t).sum()
        d = (events & (times == t)).sum()
        s *= 1 - d / at_risk
        if at_risk > d:
            greenwood += d / (at_risk * (at_risk - d))
        if 0 < s < 1:
            v = greenwood / math.log(s) ** 2
            c = math.log(-math.log(s))
            out.append((t, math.exp(-math.exp(c + z * math.sqrt(v))),
                        math.exp(-math.exp(c - z * math.sqrt(v)))))
        else:
            out.append((t, 0.0, 0.0))
    return out


def test_km_median_ci_matches_hand_computed_loglog_band():
    times = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    events = [1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0]
    fit = kaplan_meier(times, events, "x")
    band = _loglog_band(times, events, stats.norm.ppf(0.975))
    lower = next(t for t, lo, _ in band if lo <= 0.5)
    upper = next((t for t, _, hi in band if hi <= 0.5), None)
    assert fit.ci_low == lower
    assert fit.ci_high == upper
    assert fit.ci_low <= fit.median


def test_km_median_not_reached_and_empty():
    fit = kaplan_meier([1, 5, 6, 7, 8], [1, 0, 0, 0, 0], "x")
    assert fit.median is None and not fit.reached
    est = fit.as_estimate()
    assert est["estimate"] is None and est["n"] == 5 and est["reached"] is False
    empty = kaplan_meier([], [], "x")
    assert empty.fitter is None and empty.n == 0 and empty.as_estimate()["estimate"] is None


def test_reverse_km_counts_censoring_as_the_event():
    # follow-up: censored at 10, 12, 14; deaths at 1, 2 -> reverse KM median 12
    fit = reverse_km_median(pd.Series([1, 2, 10, 12, 14]),
                            pd.Series([True, True, False, False, False]), "fu")
    assert fit.median == 12.0


def _two_groups(n=40, seed=1, ratio=4.0, sites=1):
    rng = np.random.default_rng(seed)
    fast = rng.exponential(2.0, n)
    slow = rng.exponential(2.0 * ratio, n)
    return pd.DataFrame({
        "t": np.concatenate([slow, fast]), "e": True,
        "flag": [True] * n + [False] * n, "g": ["tce"] * n + ["non_tce"] * n,
        "site": [f"s{i % sites}" for i in range(2 * n)],
        "pid": [f"p{i // 2}" for i in range(2 * n)],
    })


def test_logrank_separates_and_tolerates_one_group():
    frame = _two_groups()
    result = logrank(frame, "t", "e", "g")
    assert result["p"] < 0.01 and result["df"] == 1
    assert result["groups"]["tce"] == {"n": 40, "events": 40}
    same = logrank(frame[frame["g"] == "tce"], "t", "e", "g")
    assert same["p"] is None


def test_cox_hazard_ratio_direction_and_site_strata():
    frame = _two_groups(sites=2)
    hr = cox_hazard_ratio(frame, "t", "e", "flag", min_events=10)
    assert hr["status"] == "ok"
    assert hr["estimate"] < 0.5 and hr["ci_low"] < hr["estimate"] < hr["ci_high"] < 1
    assert hr["adjusted_for"] == ["site (strata)"] and hr["events"] == 80
    one_site = cox_hazard_ratio(frame.assign(site="s0"), "t", "e", "flag")
    assert one_site["adjusted_for"] == []
    clustered = cox_hazard_ratio(frame, "t", "e", "flag", cluster="pid")
    assert clustered["robust_se"] is True
    assert clustered["estimate"] == pytest.approx(hr["estimate"], rel=1e-6)


def test_cox_refuses_too_few_events_or_an_eventless_group():
    frame = _two_groups(n=4)
    few = cox_hazard_ratio(frame, "t", "e", "flag", min_events=10)
    assert few["estimate"] is None and few["status"].startswith("not_estimable")
    frame = _two_groups(n=20)
    frame.loc[frame["flag"], "e"] = False
    none = cox_hazard_ratio(frame, "t", "e", "flag", min_events=5)
    assert none["estimate"] is None and "no events" in none["status"]


def test_fit_failures_become_a_status():
    def boom():
        raise ConvergenceError("diverged")

    model, status = _fit_quietly(boom)
    assert model is None and "ConvergenceError" in status


def test_separation_is_reported_not_returned():
    # every event in the flagged group happens before any in the other: the partial
    # likelihood has no maximum and the hazard ratio diverges
    frame = pd.DataFrame({"t": list(range(1, 13)) + list(range(20, 32)), "e": True,
                          "flag": [True] * 12 + [False] * 12, "site": "s"})
    frame.loc[frame.index[-6:], "e"] = False
    hr = cox_hazard_ratio(frame, "t", "e", "flag", min_events=5)
    assert hr["estimate"] is None and hr["ci_low"] is None and hr["p"] is None
    assert hr["status"].startswith("not_estimable")
    assert hr["n"] == 24 and hr["events"] == 18


def _patients(rows):
    frame = pd.DataFrame(rows, columns=["pid", "site", "os_months", "os_event",
                                        "first_tce_months"])
    frame["os_valid"] = True
    frame["ever_tce"] = frame["first_tce_months"].notna()
    return frame


def test_exposure_intervals_split_at_the_first_tce_line():
    patients = _patients([("a", "s", 10.0, True, 5.0), ("b", "s", 8.0, False, None),
                          ("c", "s", 4.0, True, 0.0), ("d", "s", 3.0, True, 6.0)])
    rows = tce_exposure_intervals(patients)
    a = rows[rows["id"] == "a"].to_dict("records")
    assert [(r["start"], r["stop"], bool(r["event"]), r["tce"]) for r in a] == [
        (0.0, 5.0, False, 0), (5.0, 10.0, True, 1)]
    assert rows[rows["id"] == "b"][["tce", "event"]].values.tolist() == [[0, False]]
    assert rows[rows["id"] == "c"][["start", "tce"]].values.tolist() == [[0.0, 1]]
    # TCE recorded after the end of follow-up never switches exposure on
    assert rows[rows["id"] == "d"]["tce"].tolist() == [0]


def test_landmark_excludes_early_deaths_and_groups_by_tce_before_it():
    patients = _patients([("early", "s", 2.0, True, None), ("tce", "s", 20.0, True, 3.0),
                          ("late_tce", "s", 20.0, False, 9.0), ("none", "s", 12.0, True, None)])
    mark = landmark_os(patients, 6.0)
    assert mark.n_not_at_risk == 1
    groups = dict(zip(mark.frame["pid"], mark.frame["tce_by_landmark"], strict=True))
    assert groups == {"tce": True, "late_tce": False, "none": False}
    assert mark.frame.set_index("pid").at["none", "os_from_landmark"] == 6.0
    assert mark.results()["n"] == 3


def test_time_varying_cox_removes_the_immortal_time_advantage():
    # TCE has no effect on death here, but only patients who live long get it: the
    # naive comparison favours TCE, the time-varying model should not.
    rng = np.random.default_rng(5)
    n = 600
    os_months = rng.exponential(18 / math.log(2), n)
    planned = rng.uniform(0, 24, n)
    gets_tce = planned < os_months
    patients = pd.DataFrame({
        "pid": [f"p{i}" for i in range(n)], "site": ["s"] * n, "os_months": os_months,
        "os_event": True, "os_valid": True,
        "first_tce_months": np.where(gets_tce, planned, np.nan),
    })
    patients["ever_tce"] = gets_tce
    naive = cox_hazard_ratio(patients, "os_months", "os_event", "ever_tce")
    tv = time_varying_tce_cox(patients)
    assert naive["estimate"] < 0.6
    assert tv["status"] == "ok"
    assert tv["ci_low"] < 1.0 < tv["ci_high"] or abs(tv["estimate"] - 1) < 0.25
