"""The study-grade estimates (issue 16 items 3–6) against lifelines and hand-computed values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from demo_cohort import demo_frames
from lifelines import CoxPHFitter, CoxTimeVaryingFitter, KaplanMeierFitter

from connector.analysis import analyze_frames, load_quality, run_analysis
from connector.analysis.cox import covariate_frame, os_multivariable, pfs_line_adjusted
from connector.analysis.endpoints import pfs2, pfs2_frame
from connector.analysis.frames import cohort_frames
from connector.analysis.settings import DAYS_PER_MONTH
from connector.analysis.studyrules import study_rules
from connector.analysis.survival import tce_exposure_intervals

D = dt.date


@pytest.fixture(scope="module")
def demo():
    """80 patients on two sites, with every baseline covariate the generator draws."""
    patients, lines = demo_frames(80, seed=11)
    return patients, lines, analyze_frames(patients, lines)


def _km_median(durations: pd.Series, events: pd.Series) -> float:
    fit = KaplanMeierFitter().fit(durations.astype(float), events.astype(bool))
    return float(fit.median_survival_time_)


def test_subgroup_medians_and_hazard_ratio_match_lifelines(demo):
    _, _, analysis = demo
    group = analysis.results["subgroups"]["product"]
    cf_patients = analysis.patients
    first = analysis.lines[analysis.lines["is_first"] & analysis.lines["pfs_valid"]]
    for value, product in (("cilta_cel", "ciltacabtagene autoleucel"),
                           ("ide_cel", "idecabtagene vicleucel")):
        pids = set(cf_patients.loc[cf_patients["index_product"] == product, "pid"])
        level = group["levels"][value]
        assert level["n_patients"] == len(pids)
        os_rows = cf_patients[cf_patients["pid"].isin(pids) & cf_patients["os_valid"]]
        expected = _km_median(os_rows["os_months"], os_rows["os_event"])
        got = level["os_median_months"]["estimate"]
        assert got == pytest.approx(expected, abs=1e-5) if np.isfinite(expected) else got is None
        rows = first[first["pid"].isin(pids)]
        evaluable = rows[rows["evaluable"]]
        assert level["orr"]["x"] == int(evaluable["responder"].sum())
        assert level["orr"]["n"] == len(evaluable)
    # the OS hazard ratio: cilta-cel vs ide-cel, stratified by site
    valid = cf_patients[cf_patients["os_valid"]]
    data = pd.DataFrame({"T": valid["os_months"].astype(float),
                         "E": valid["os_event"].astype(int),
                         "x": (valid["index_product"] == "ciltacabtagene autoleucel").astype(int),
                         "site": valid["site"]})
    model = CoxPHFitter().fit(data, "T", "E", strata=["site"])
    assert group["os_hazard_ratio"]["estimate"] == pytest.approx(
        float(np.exp(model.params_["x"])), rel=1e-4)
    assert group["os_hazard_ratio"]["n"] == len(valid)


def test_bcma_retreatment_group_comes_from_the_drug_classes(demo):
    rules = study_rules()
    # BCMA CAR-T, BCMA bispecifics and the BCMA ADC are BCMA-targeted; a GPRC5D one is not
    assert {"teclistamab", "elranatamab", "belantamab mafodotin",
            "ciltacabtagene autoleucel"} <= rules.bcma_ingredients
    assert "talquetamab" not in rules.bcma_ingredients
    _, _, analysis = demo
    first = analysis.lines[analysis.lines["is_first"]]
    bcma = first["drugs"].fillna("").map(
        lambda d: bool(set(d.split(";")) & rules.bcma_ingredients))
    levels = analysis.results["subgroups"]["first_salvage_target"]["levels"]
    assert levels["bcma"]["n_patients"] == int(bcma.sum()) > 0
    assert levels["other"]["n_patients"] == int((~bcma).sum()) > 0


def test_os_multivariable_is_complete_case_and_matches_a_hand_built_model(demo):
    _, _, analysis = demo
    patients = analysis.patients
    got = analysis.results["multivariable_cox"]["os"]
    assert got["status"] == "ok"
    covs = covariate_frame(patients, 6.0)
    complete = covs.dropna()
    assert got["n_used"] == len(set(complete["pid"]) & set(patients.loc[
        patients["os_valid"] & (patients["os_months"] > 0), "pid"]))
    assert got["n_left_out_incomplete"] == got["n_patients_with_os"] - got["n_used"]
    rows = tce_exposure_intervals(patients).merge(complete, left_on="id", right_on="pid")
    names = [c for c in complete.columns if c != "pid" and rows[c].nunique() > 1]
    data = rows[["id", "start", "stop", "event", "tce", "site", *names]].assign(
        event=lambda f: f["event"].astype(int))
    model = CoxTimeVaryingFitter().fit(data, id_col="id", event_col="event", start_col="start",
                                       stop_col="stop", strata=["site"])
    for name in ["tce", *names]:
        assert got["hazard_ratios"][name]["estimate"] == pytest.approx(
            float(np.exp(model.params_[name])), rel=1e-3), name
    assert "not the effect" in got["caveat"]


def test_os_multivariable_drops_a_constant_covariate_and_refuses_too_few_events(demo):
    _, _, analysis = demo
    patients = analysis.patients.assign(index_product="idecabtagene vicleucel")
    got = os_multivariable(patients, 6.0, min_events=10)
    assert got["covariates_dropped_constant"] == [
        "ciltacabtagene autoleucel (vs idecabtagene vicleucel)"]
    assert "cilta_cel" not in got["hazard_ratios"]
    few = os_multivariable(analysis.patients.head(8), 6.0, min_events=10)
    assert few["status"].startswith("not_estimable") and few["hazard_ratios"] == {}


def test_pfs_line_adjusted_matches_a_clustered_cox_model(demo):
    _, _, analysis = demo
    lines = analysis.lines
    got = pfs_line_adjusted(lines)
    valid = lines[lines["pfs_valid"]]
    # the model as a reader would fit it from the lines table, in the table's own order
    data = valid[["pfs_months", "pfs_event", "line", "pid"]].astype(
        {"pfs_months": float, "pfs_event": int, "line": float, "pid": str})
    data["tce"] = valid["therapy_class"].eq("tce").astype(int)
    model = CoxPHFitter().fit(data.rename(columns={"line": "line_number"}), "pfs_months",
                              "pfs_event", cluster_col="pid")
    assert got["status"] == "ok" and got["n_lines"] == len(valid)
    for name in ("tce", "line_number"):
        hr = got["hazard_ratios"][name]
        assert hr["estimate"] == pytest.approx(float(np.exp(model.params_[name])), rel=1e-4)
        assert hr["ci_low"] < hr["estimate"] < hr["ci_high"]


def _small() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three patients: two lines (PR then VGPR), one line (SD), one line (PD, NE second)."""
    def patient(i: int, death: dt.date | None, last: dt.date) -> dict:
        return {"site": "s", "source_id": f"p{i}", "patient_key": f"k{i}", "in_cohort": True,
                "index_product": "idecabtagene vicleucel", "index_date": D(2020, 1, 1),
                "progression_date": D(2020, 6, 1), "death_date": death,
                "last_contact_date": last, "birth_year": 1955, "sex": "male"}

    def line(i: int, n: int, start: dt.date, best: str, event: dt.date | None,
             censor: dt.date | None) -> dict:
        return {"site": "s", "source_id": f"p{i}", "patient_key": f"k{i}", "line": n,
                "start_date": start, "drugs": "pomalidomide", "therapy_class": "non_tce",
                "subclass": "imid_pi", "best_response": best, "pfs_event_date": event,
                "pfs_censor_date": censor}

    patients = pd.DataFrame([patient(1, None, D(2021, 6, 1)),
                             patient(2, D(2021, 1, 1), D(2021, 1, 1)),
                             patient(3, None, D(2021, 3, 1))])
    lines = pd.DataFrame([
        line(1, 1, D(2020, 6, 10), "PR", D(2020, 9, 10), None),
        line(1, 2, D(2020, 9, 20), "VGPR", D(2021, 2, 1), None),
        line(2, 1, D(2020, 6, 15), "SD", None, D(2020, 12, 1)),
        line(3, 1, D(2020, 6, 20), "PD", D(2020, 7, 20), None),
        line(3, 2, D(2020, 8, 1), "NE", None, D(2020, 10, 1)),
    ])
    return patients, lines


def _months(a: dt.date, b: dt.date) -> float:
    return (b - a).days / DAYS_PER_MONTH


def test_pfs2_duration_of_response_and_best_response_by_hand():
    e = analyze_frames(*_small()).results["endpoints"]
    # PFS2: p1 second line progresses 2021-02-01 (event); p2 no second line, dies
    # 2021-01-01 (event); p3 second line censored 2020-10-01
    p1 = _months(D(2020, 6, 10), D(2021, 2, 1))
    p2 = _months(D(2020, 6, 15), D(2021, 1, 1))
    assert e["pfs2"]["n_with_second_line"] == 2
    assert e["pfs2"]["median_months"]["n"] == 3 and e["pfs2"]["median_months"]["events"] == 2
    # p3 is censored first (3.4 mo), then p2 dies (6.6 mo: S = 1/2, the median), then p1
    # progresses (7.8 mo: S = 0)
    assert e["pfs2"]["median_months"]["estimate"] == pytest.approx(round(p2, 6), abs=1e-5)
    assert p1 > p2
    # duration of response: only p1's lines responded (PR, VGPR); first line PR 3.0 months
    dor = e["duration_of_response_months"]
    assert dor["first_line"]["n"] == 1 and dor["all_lines"]["n"] == 2
    assert dor["first_line"]["estimate"] == pytest.approx(
        round(_months(D(2020, 6, 10), D(2020, 9, 10)), 6), abs=1e-5)
    best = e["best_response_over_all_lines"]
    assert best["counts"]["VGPR"] == 1 and best["counts"]["SD"] == 1
    assert best["counts"]["PD"] == 1 and best["n_patients"] == 3
    assert (best["orr"]["x"], best["orr"]["n"]) == (1, 3)
    assert (best["vgpr_or_better"]["x"], best["vgpr_or_better"]["n"]) == (1, 3)


def _pfs2_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seven patients, one per way PFS2 can end (or be left out); rows out of line order."""
    def patient(i: int, death: dt.date | None, last: dt.date) -> dict:
        return {"site": "s", "source_id": f"p{i}", "patient_key": f"k{i}", "in_cohort": True,
                "index_date": D(2020, 1, 1), "progression_date": D(2020, 6, 1),
                "death_date": death, "last_contact_date": last}

    def line(i: int, n: int, start: dt.date, event: dt.date | None,
             censor: dt.date | None) -> dict:
        return {"site": "s", "source_id": f"p{i}", "patient_key": f"k{i}", "line": n,
                "start_date": start, "therapy_class": "non_tce", "best_response": "SD",
                "pfs_event_date": event, "pfs_censor_date": censor}

    patients = pd.DataFrame([
        patient(1, None, D(2022, 1, 1)),          # second line progresses: event
        patient(2, D(2021, 3, 1), D(2021, 3, 1)),  # one line, dies: event at death
        patient(3, None, D(2021, 5, 1)),          # one line, alive: censored at last contact
        patient(4, None, D(2022, 1, 1)),          # second line censored, third progresses
        patient(5, None, D(2021, 1, 1)),          # no line at all: no row
        patient(6, None, D(2021, 1, 1)),          # second line without any end date: left out
        patient(7, None, D(2020, 6, 1)),          # last contact before the line: left out
    ])
    lines = pd.DataFrame([
        line(1, 2, D(2020, 10, 1), D(2021, 2, 1), None),
        line(1, 1, D(2020, 6, 10), D(2020, 9, 10), None),
        line(2, 1, D(2020, 6, 15), None, D(2020, 12, 1)),
        line(3, 1, D(2020, 6, 20), None, D(2020, 11, 1)),
        line(4, 1, D(2020, 6, 5), D(2020, 8, 1), None),
        line(4, 3, D(2021, 1, 1), D(2021, 4, 1), None),
        line(4, 2, D(2020, 8, 20), None, D(2020, 12, 20)),
        line(6, 1, D(2020, 6, 1), D(2020, 7, 1), None),
        line(6, 2, D(2020, 7, 10), None, None),
        line(7, 1, D(2020, 7, 1), None, D(2020, 8, 1)),
    ])
    return patients, lines


def test_pfs2_frame_by_hand_for_each_way_it_ends():
    cf = cohort_frames(*_pfs2_case())
    frame = pfs2_frame(cf.patients, cf.lines)
    assert list(frame["pid"]) == ["s|p1", "s|p2", "s|p3", "s|p4"]
    got = frame.set_index("pid")
    expected = {  # pid: (from line 1's start, to, event, has a second line)
        "s|p1": (D(2020, 6, 10), D(2021, 2, 1), True, True),
        "s|p2": (D(2020, 6, 15), D(2021, 3, 1), True, False),
        "s|p3": (D(2020, 6, 20), D(2021, 5, 1), False, False),
        "s|p4": (D(2020, 6, 5), D(2020, 12, 20), False, True),
    }
    for pid, (start, end, event, second) in expected.items():
        row = got.loc[pid]
        assert row["pfs2_months"] == pytest.approx(_months(start, end), abs=1e-12)
        assert bool(row["pfs2_event"]) is event and bool(row["has_second_line"]) is second
        assert row["site"] == "s"
    assert frame["pfs2_months"].dtype == np.float64
    assert frame["pfs2_event"].dtype == bool and frame["has_second_line"].dtype == bool
    n = pfs2(cf.patients, cf.lines, 0.05)[0]
    assert n["n_with_second_line"] == 2
    assert (n["median_months"]["n"], n["median_months"]["events"]) == (4, 2)


def test_os_at_fixed_months_reads_the_kaplan_meier_curve(demo):
    _, _, analysis = demo
    valid = analysis.patients[analysis.patients["os_valid"]]
    fit = KaplanMeierFitter().fit(valid["os_months"].astype(float), valid["os_event"])
    for months in ("12", "24"):
        got = analysis.results["endpoints"]["os_at_months"][months]
        expected = float(fit.survival_function_at_times(float(months)).iloc[0])
        assert got["estimate"] == pytest.approx(expected, abs=1e-5)
        assert got["ci_low"] <= got["estimate"] <= got["ci_high"]
        assert got["at_risk"] == int((valid["os_months"] >= float(months)).sum())
    # beyond the follow-up: not estimated, with the reason
    short = analyze_frames(*_small()).results["endpoints"]["os_at_months"]["24"]
    assert short["estimate"] is None and "follow-up" in short["status"]


def test_data_completeness_by_hand():
    patients, lines = _small()
    patients = patients.assign(lab_interval_days=[20.0, 30.0, None],
                               progression_basis=["imwg_labs", "new_line_fallback",
                                                  "imwg_labs"])
    patients.loc[2, "death_date"] = None
    c = analyze_frames(patients, lines, quality={"s": {"quarantined": 4}}).results[
        "data_completeness"]
    site = c["by_site"]["s"]
    assert site["lab_interval_days"]["median"] == 25.0 and site["lab_interval_days"]["n"] == 2
    assert site["lines_not_evaluable"] == 1  # p3's NE second line
    assert (site["progression_from_new_line"]["x"], site["progression_from_new_line"]["n"]) \
        == (1, 3)
    assert site["quarantined"] == 4 and site["unmapped_observations"] == 0
    assert site["data_cutoff"] == "2021-06-01"
    assert c["overall"]["quarantined"] == 4


def test_quarantined_and_unmapped_counts_come_from_the_database(built_cohort, tmp_path):
    import shutil

    from sqlalchemy import create_engine

    from connector.db import session_scope
    from connector.db.models import Quarantine

    path = tmp_path / "copy.db"
    shutil.copy(built_cohort.removeprefix("sqlite:///"), path)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with session_scope(engine) as session:
            for i in range(3):
                session.add(Quarantine(site="site_b", resource_type="Observation",
                                       resource_id=f"bad{i}", stage="map",
                                       reason="invalid: test", content_hash=f"h{i}",
                                       raw="{}"))
        quality = load_quality(engine)
        assert quality["site_b"]["quarantined"] == 3
        c = run_analysis(engine).results["data_completeness"]
        assert c["by_site"]["site_b"]["quarantined"] == 3
        assert c["by_site"]["site_a"]["quarantined"] == 0
        assert c["overall"]["quarantined"] == 3
        # a run restricted to one site counts only that site's
        only_a = run_analysis(engine, sites=["site_a"]).results["data_completeness"]
        assert only_a["overall"]["quarantined"] == 0
    finally:
        engine.dispose()


def test_cohort_frames_keep_the_covariates_the_models_need(demo):
    patients, lines, _ = demo
    cf = cohort_frames(patients, lines)
    covs = covariate_frame(cf.patients, 12.0)
    # every covariate is recorded for some and the generator leaves some unrecorded
    assert covs.drop(columns="pid").notna().any().all()
    assert covs.drop(columns="pid").isna().any(axis=1).any()
