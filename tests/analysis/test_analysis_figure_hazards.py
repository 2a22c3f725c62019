"""The two hazard ratios added for the OS figures (issue 16 item 7), against lifelines
fitted directly: the naive ever-TCE HR and the landmark HR, both stratified by site."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from demo_cohort import demo_frames
from lifelines import CoxPHFitter

from connector.analysis import analyze_frames


def _lifelines_hr(frame: pd.DataFrame, duration: str, flag: str) -> tuple[float, float, float]:
    data = pd.DataFrame({"T": frame[duration].astype(float),
                         "E": frame["os_event"].astype(int),
                         "x": frame[flag].astype(bool).astype(int),
                         "site": frame["site"].astype(str)})
    model = CoxPHFitter().fit(data, "T", "E", strata=["site"])
    row = model.summary.loc["x"]
    return (float(row["exp(coef)"]), float(row["exp(coef) lower 95%"]),
            float(row["exp(coef) upper 95%"]))


@pytest.fixture(scope="module")
def analysis():
    return analyze_frames(*demo_frames(120, seed=31))


def test_naive_ever_tce_hr_matches_lifelines(analysis):
    patients = analysis.patients[analysis.patients["os_valid"]]
    expected = _lifelines_hr(patients, "os_months", "ever_tce")
    got = analysis.results["os"]["ever_tce_cox"]
    assert got["status"] == "ok" and got["n"] == len(patients)
    assert (got["estimate"], got["ci_low"], got["ci_high"]) == pytest.approx(expected, rel=1e-4)


def test_landmark_hr_matches_lifelines_on_the_landmark_frame(analysis):
    months = analysis.settings.landmark_months
    valid = analysis.patients[analysis.patients["os_valid"]]
    eligible = valid[valid["os_months"] > months].copy()
    eligible["tce_by_landmark"] = eligible["ever_tce"] & (eligible["first_tce_months"] <= months)
    eligible["from_landmark"] = eligible["os_months"] - months
    expected = _lifelines_hr(eligible, "from_landmark", "tce_by_landmark")
    got = analysis.results["os"]["landmark"]["cox"]
    assert got["n"] == len(eligible) == analysis.results["os"]["landmark"]["n"]
    assert (got["estimate"], got["ci_low"], got["ci_high"]) == pytest.approx(expected, rel=1e-4)


def test_too_few_events_is_not_estimated():
    patients, lines = demo_frames(12, seed=2)
    patients["death_date"] = None
    patients.loc[patients.index[:2], "death_date"] = patients["progression_date"].iloc[:2] \
        + pd.Timedelta(days=60)
    got = analyze_frames(patients, lines).results["os"]["ever_tce_cox"]
    assert got["estimate"] is None and got["events"] < 10
    assert not np.isnan(got["n"])
