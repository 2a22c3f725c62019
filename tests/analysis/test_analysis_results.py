"""analyze_frames on hand-made cohorts: denominators, results.json shape, sources, speed."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from demo_cohort import demo_frames

from connector.analysis import (
    AnalysisSettings,
    analyze_frames,
    frames_from_ground_truth,
    load_cohort,
    load_quality,
    run_analysis,
)
from connector.analysis.settings import DAYS_PER_MONTH
from connector.report import results_text

D = dt.date
ESTIMATE_KEYS = ["estimate", "ci_low", "ci_high", "n"]
CONTRACT_KEYS = ["n_patients", "n_sites", "n_lines", "excluded", "first_line",
                 "os_median_months", "os_median_months_by_ever_tce"]


def _patient(site, sid, prog, *, death=None, last=None, in_cohort=True, reason=None,
             birth_year=1955, sex="female"):
    return {"site": site, "source_id": sid, "patient_key": f"key-{site}-{sid}",
            "in_cohort": in_cohort, "exclusion_reason": reason,
            "index_product": "idecabtagene vicleucel" if in_cohort else None,
            "index_date": prog - dt.timedelta(days=200) if prog else None,
            "progression_date": prog, "progression_basis": "imwg_labs" if prog else None,
            "death_date": death, "last_contact_date": last or death, "birth_year": birth_year,
            "sex": sex}


def _line(site, sid, n, start, cls, response, *, note="", event=None, censor=None,
          subclass=None):
    return {"site": site, "source_id": sid, "patient_key": f"key-{site}-{sid}", "line": n,
            "start_date": start, "end_date": event or censor, "drugs": "daratumumab",
            "therapy_class": cls,
            "subclass": subclass or ("bcma_bispecific" if cls == "tce" else "anti_cd38"),
            "best_response": response, "response_note": note, "pfs_event_date": event,
            "pfs_censor_date": censor}


@pytest.fixture
def hand_cohort():
    patients = pd.DataFrame([
        _patient("A", "1", D(2021, 1, 1), death=D(2021, 7, 1)),
        _patient("A", "2", D(2021, 2, 1), last=D(2022, 2, 1)),
        _patient("B", "3", D(2021, 3, 1), death=D(2021, 5, 1)),
        _patient("B", "4", D(2021, 1, 15), last=D(2021, 12, 15), sex="male"),
        _patient("B", "5", D(2021, 4, 1), last=D(2021, 6, 1), birth_year=None, sex=None),
        _patient("A", "x1", None, last=D(2021, 1, 1), in_cohort=False, reason="no_car_t"),
        _patient("B", "x2", None, last=D(2021, 1, 1), in_cohort=False, reason="no_car_t"),
        _patient("B", "x3", None, last=D(2021, 1, 1), in_cohort=False, reason="other_reason"),
    ])
    lines = pd.DataFrame([
        _line("A", "1", 1, D(2021, 1, 10), "non_tce", "PR", event=D(2021, 4, 10)),
        _line("A", "1", 2, D(2021, 4, 20), "tce", "CR", event=D(2021, 7, 1),
              subclass="car_t"),
        _line("A", "2", 1, D(2021, 2, 10), "tce", "VGPR", censor=D(2021, 12, 1),
              note="VGPR or better by labs; CR not determinable: serum_ife"),
        _line("B", "3", 1, D(2021, 3, 5), "non_tce", "NE", event=D(2021, 5, 1)),
        _line("B", "4", 1, D(2021, 2, 1), "non_tce", "SD", event=D(2021, 5, 1)),
        # a line of an excluded patient must not count
        _line("B", "x2", 1, D(2021, 2, 1), "non_tce", "PR", event=D(2021, 5, 1)),
    ])
    return patients, lines


def test_counts_and_exclusions(hand_cohort):
    r = analyze_frames(*hand_cohort).results
    assert (r["n_patients"], r["n_sites"], r["n_lines"]) == (5, 2, 5)
    assert r["excluded"] == {"no_car_t": 2, "non_bcma_car_t": 0, "no_progression": 0,
                             "other_reason": 1}


def test_first_line_orr_counts_evaluable_lines_only(hand_cohort):
    r = analyze_frames(*hand_cohort).results
    orr = r["first_line"]["orr"]
    # evaluable first lines: PR (non-TCE), VGPR (TCE), SD (non-TCE); NE left out
    assert orr["overall"]["n"] == 3 and orr["overall"]["estimate"] == pytest.approx(2 / 3,
                                                                                  abs=1e-6)
    assert orr["tce"]["n"] == 1 and orr["tce"]["estimate"] == 1.0
    assert orr["non_tce"]["n"] == 2 and orr["non_tce"]["estimate"] == 0.5
    assert r["first_line"]["vgpr_or_better"]["overall"]["estimate"] == pytest.approx(1 / 3,
                                                                                    abs=1e-6)
    detail = r["first_line_detail"]
    assert detail["orr_all_treated"]["overall"]["n"] == 4
    assert detail["orr_all_treated"]["overall"]["estimate"] == 0.5
    assert detail["n_not_evaluable"] == {"overall": 1, "tce": 0, "non_tce": 1}
    # the VGPR line whose CR could not be determined leaves the >=CR denominator
    assert detail["n_cr_not_determinable"] == 1
    assert detail["cr_or_better"]["overall"]["n"] == 2
    assert detail["cr_or_better"]["overall"]["estimate"] == 0.0


def test_first_line_is_the_lowest_numbered_line(hand_cohort):
    patients, lines = hand_cohort
    lines = lines.assign(line=lines["line"] + 1)  # numbering starting at 2
    r = analyze_frames(patients, lines).results
    assert r["first_line"]["orr"]["overall"]["n"] == 3


def test_os_and_pfs_durations_in_months(hand_cohort):
    a = analyze_frames(*hand_cohort)
    p1 = a.patients.set_index("source_id").loc["1"]
    assert p1["os_months"] == pytest.approx(181 / DAYS_PER_MONTH)
    assert bool(p1["os_event"]) and bool(p1["ever_tce"])
    assert p1["age_at_index"] == 2020 - 1955  # index date 200 days before 2021-01-01
    first = a.lines[(a.lines["source_id"] == "1") & (a.lines["line"] == 1)].iloc[0]
    assert first["pfs_months"] == pytest.approx(90 / DAYS_PER_MONTH)
    assert a.results["os_median_months"]["n"] == 5
    assert a.results["tce"]["ever_tce"]["x"] == 2
    assert a.results["tce"]["patient_response_evaluable"]["estimate"] == 1.0


def test_results_schema_has_every_contract_key_with_the_estimate_shape():
    patients, lines = demo_frames(79, seed=11)
    r = analyze_frames(patients, lines).results
    assert list(r)[:len(CONTRACT_KEYS)] == CONTRACT_KEYS
    for key in ("n_patients", "n_sites", "n_lines"):
        assert isinstance(r[key], int)
    assert all(isinstance(v, int) for v in r["excluded"].values())
    estimates = [r["os_median_months"], *r["os_median_months_by_ever_tce"].values()]
    assert set(r["os_median_months_by_ever_tce"]) == {"tce", "non_tce"}
    assert set(r["first_line"]) == {"orr", "vgpr_or_better", "pfs_median_months"}
    for measure in r["first_line"].values():
        assert set(measure) == {"overall", "tce", "non_tce"}
        estimates += measure.values()
    for est in estimates:
        assert list(est) == ESTIMATE_KEYS
        assert est["estimate"] is None or est["ci_low"] is None or (
            est["ci_low"] <= est["estimate"])
        assert est["estimate"] is None or est["ci_high"] is None or (
            est["estimate"] <= est["ci_high"])
    for est in [*r["first_line"]["orr"].values(), *r["first_line"]["vgpr_or_better"].values()]:
        assert 0 <= est["estimate"] <= 1
    json.loads(results_text(r))  # strict JSON: no NaN or infinity


def test_empty_input_gives_nulls_not_errors():
    r = analyze_frames(pd.DataFrame(), pd.DataFrame()).results
    assert r["n_patients"] == 0 and r["n_lines"] == 0
    assert r["first_line"]["orr"]["overall"] == {"estimate": None, "ci_low": None,
                                                 "ci_high": None, "n": 0}
    assert r["os_median_months"]["estimate"] is None


def test_same_input_same_bytes():
    patients, lines = demo_frames(120, seed=3)
    first = results_text(analyze_frames(patients, lines).results)
    shuffled = results_text(analyze_frames(patients.sample(frac=1, random_state=1),
                                           lines.sample(frac=1, random_state=2)).results)
    assert first == shuffled


def test_settings_change_the_landmark():
    patients, lines = demo_frames(79, seed=11)
    r = analyze_frames(patients, lines, AnalysisSettings(landmark_months=3)).results
    assert r["os"]["landmark"]["months"] == 3.0
    assert r["settings"]["landmark_months"] == 3.0


def _ground_truth(path):
    data = {"seed": 1, "parameters": {}, "patients": [
        {"site": "s1", "source_id": "p1", "in_cohort": True, "exclusion_reason": None,
         "index_product": "ciltacabtagene autoleucel", "index_date": "2020-01-05",
         "progression_date": "2020-09-01", "death_date": None,
         "last_contact_date": "2021-09-01",
         "lines": [{"line": 1, "start_date": "2020-09-10", "end_date": "2021-01-01",
                    "drugs": ["teclistamab"], "therapy_class": "tce",
                    "subclass": "bcma_bispecific", "best_response": "VGPR",
                    "pfs_event_date": None, "pfs_censor_date": "2021-08-01"},
                   {"line": 2, "start_date": "2021-08-10", "end_date": None,
                    "drugs": ["pomalidomide", "dexamethasone"], "therapy_class": "non_tce",
                    "subclass": "imid_pi", "best_response": "NE",
                    "pfs_event_date": None, "pfs_censor_date": None}]},
        {"site": "s2", "source_id": "p9", "in_cohort": True, "exclusion_reason": None,
         "index_product": "idecabtagene vicleucel", "index_date": "2019-03-01",
         "progression_date": "2019-12-01", "death_date": "2020-06-01",
         "last_contact_date": "2020-06-01",
         "lines": [{"line": 1, "start_date": "2019-12-15", "end_date": "2020-03-01",
                    "drugs": ["selinexor", "dexamethasone"], "therapy_class": "non_tce",
                    "subclass": "xpo1_inhibitor", "best_response": "PD",
                    "pfs_event_date": "2020-02-01", "pfs_censor_date": None}]},
        {"site": "s1", "source_id": "x1", "in_cohort": False,
         "exclusion_reason": "no_progression", "index_product": "idecabtagene vicleucel",
         "index_date": "2020-01-01", "progression_date": None, "death_date": None,
         "last_contact_date": "2021-01-01", "lines": []},
    ]}
    path.write_text(json.dumps(data))
    return path


def test_frames_from_ground_truth(tmp_path, monkeypatch):
    from connector.keys import patient_key

    monkeypatch.delenv("COHORT_KEY_SECRET_FILE", raising=False)
    monkeypatch.delenv("COHORT_KEY_SECRET", raising=False)
    path = _ground_truth(tmp_path / "ground_truth.json")
    patients, lines = frames_from_ground_truth(path)
    assert patients["source_id"].tolist() == ["p1", "p9"]  # in-cohort only, sorted
    assert patients.loc[0, "patient_key"] == patient_key("s1", "p1")
    assert patients["progression_date"].dtype.kind == "M"
    assert lines["drugs"].tolist() == ["teclistamab", "dexamethasone;pomalidomide",
                                       "dexamethasone;selinexor"]
    everyone, _ = frames_from_ground_truth(path, include_excluded=True)
    assert len(everyone) == 3
    r = analyze_frames(everyone, lines).results
    assert r["excluded"]["no_progression"] == 1
    assert r["n_patients"] == 2 and r["n_lines"] == 3
    assert r["first_line"]["orr"]["overall"]["estimate"] == 0.5


def test_run_analysis_reads_the_derived_tables(engine, db_url):
    from connector.analysis.frames import BASELINE_COLUMNS
    from connector.db import session_scope
    from connector.db.models import CohortPatient, PatientBaseline, TherapyLine

    patients, lines = demo_frames(40, seed=5)
    with session_scope(engine) as session:
        for row in patients.to_dict("records"):
            clean = {k: (None if pd.isna(v) else v) for k, v in row.items()}
            session.add(CohortPatient(**{k: v for k, v in clean.items()
                                         if k not in BASELINE_COLUMNS}))
            if clean["in_cohort"]:  # Table 1 covariates live in patient_baseline
                session.add(PatientBaseline(site=clean["site"], source_id=clean["source_id"],
                                            **{k: clean.get(k) for k in BASELINE_COLUMNS}))
        for row in lines.to_dict("records"):
            clean = {k: (None if pd.isna(v) else v) for k, v in row.items()}
            session.add(TherapyLine(**clean))
    from_db = run_analysis(engine).results
    # an empty database's counts are zeros (a frame without one says "not available")
    from_frames = analyze_frames(patients, lines, quality=load_quality(engine)).results
    assert results_text(from_db) == results_text(from_frames)
    assert from_db["data_completeness"]["overall"]["quarantined"] == 0
    assert analyze_frames(patients, lines).results["data_completeness"]["overall"][
        "quarantined"] is None

    cohort = load_cohort(db_url)
    table = cohort.response_rate("orr", by="therapy_class")
    assert table.loc["overall", "estimate"] == pytest.approx(
        from_db["first_line"]["orr"]["overall"]["estimate"])
    pfs = cohort.pfs()
    assert pfs["tce"].n == from_db["first_line"]["pfs_median_months"]["tce"]["n"]
    assert cohort.os()["overall"].n == from_db["os_median_months"]["n"]
    assert cohort.os_landmark()["months"] == 6.0
    assert "status" in cohort.os_tce_time_varying()
    assert "status" in cohort.pfs_hazard_ratio(first_line_only=False)
    assert results_text(cohort.analyze().results) == results_text(from_db)


def test_ten_thousand_patients_on_four_sites():
    """A large multi-site cohort runs every analysis (speed is measured by `make bench`);
    with four sites there is no two-level centre subgroup, but completeness has each."""
    patients, lines = demo_frames(10_000, n_sites=4, seed=2)
    r = analyze_frames(patients, lines).results
    assert r["n_patients"] == 10_000
    assert set(r["data_completeness"]["by_site"]) == {"site_a", "site_b", "site_c", "site_d"}
    assert "site_group" not in r["subgroups"]
    assert r["multivariable_cox"]["pfs_line_adjusted"]["status"] == "ok"
