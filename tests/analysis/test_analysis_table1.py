"""Table 1 and the patient flow on small hand-made cohorts (issue 16)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from connector.analysis import analyze_frames

D = dt.date


def _patient(i: int, **extra) -> dict:  # noqa: ANN003
    base = {"site": "site_a" if i % 2 else "site_b", "source_id": f"p{i}",
            "patient_key": f"k{i}", "in_cohort": True, "index_product": "idecabtagene vicleucel",
            "index_date": D(2020, 1, 1), "progression_date": D(2020, 7, 1),
            "last_contact_date": D(2021, 7, 1), "birth_year": 1950, "sex": "female"}
    base.update(extra)
    return base


def _line(i: int) -> dict:
    return {"site": "site_a" if i % 2 else "site_b", "source_id": f"p{i}", "patient_key": f"k{i}",
            "line": 1, "start_date": D(2020, 7, 10), "drugs": "teclistamab",
            "therapy_class": "tce", "subclass": "bcma_bispecific", "best_response": "PR",
            "pfs_censor_date": D(2020, 12, 1)}


def _cohort() -> tuple[pd.DataFrame, pd.DataFrame]:
    patients = pd.DataFrame([
        _patient(1, del_17p="present", t_4_14="absent", t_14_16="absent", gain_1q="absent",
                 riss_stage="III", ldh=300.0, ldh_elevated=True, prior_lines=2,
                 extramedullary="present"),
        _patient(2, del_17p="absent", t_4_14="absent", t_14_16="absent", gain_1q="absent",
                 riss_stage="I", ldh=180.0, ldh_elevated=False, prior_lines=4, sex="male"),
        _patient(3, del_17p="absent", t_4_14=None, t_14_16=None, gain_1q=None),
        _patient(4, index_product="ciltacabtagene autoleucel"),
        _patient(5, in_cohort=False, exclusion_reason="no_car_t"),
        _patient(6, in_cohort=False, exclusion_reason="no_progression"),
        _patient(7, in_cohort=False, exclusion_reason="no_progression"),
    ])
    lines = pd.DataFrame([_line(1), _line(2), _line(3)])  # patient 4 received no line
    return patients, lines


def test_table1_counts_known_values_and_not_recorded():
    t = analyze_frames(*_cohort()).results["table1"]
    assert t["n_patients"] == 4
    assert t["sex"] == {"female": 3, "male": 1, "not_recorded": 0}
    assert t["del_17p"] == {"present": 1, "absent": 2, "not_recorded": 1}
    # high risk: any present; standard: all four absent; else not recorded (patient 3: one
    # absent, three unknown, patient 4: nothing)
    assert t["high_risk_cytogenetics"] == {"present": 1, "absent": 1, "not_recorded": 2}
    assert t["extramedullary"] == {"present": 1, "absent": 0, "not_recorded": 3}
    assert t["riss_stage"] == {"I": 1, "II": 0, "III": 1, "not_recorded": 2}
    assert t["ldh_u_per_l"]["median"] == 240.0 and t["ldh_u_per_l"]["not_recorded"] == 2
    assert t["ldh_above_upper_limit"] == {"elevated": 1, "normal": 1, "not_recorded": 2}
    assert t["prior_lines_before_car_t"]["median"] == 3.0
    assert t["car_t_to_progression_months"]["median"] == round(182 / 30.4375, 6)
    assert t["car_t_product"] == {"ciltacabtagene autoleucel": 1,
                                  "idecabtagene vicleucel": 3, "not_recorded": 0}


def test_patient_flow_steps_and_reasons_per_site():
    flow = analyze_frames(*_cohort()).results["patient_flow"]
    steps = flow["overall"]["steps"]
    assert [s["n"] for s in steps] == [7, 6, 6, 4, 3]
    assert steps[1]["excluded"] == [{"reason": "No CAR-T infusion on record", "n": 1}]
    assert steps[3]["excluded"] == [
        {"reason": "No progression recorded after the BCMA CAR-T", "n": 2}]
    assert steps[4]["excluded"] == [
        {"reason": "No line of therapy recorded after progression", "n": 1}]
    # site_a: patients 1, 3, 5, 7; site_b: 2, 4, 6
    assert [s["n"] for s in flow["by_site"]["site_a"]["steps"]] == [4, 3, 3, 2, 2]
    assert [s["n"] for s in flow["by_site"]["site_b"]["steps"]] == [3, 3, 3, 2, 1]
