"""Table 1 covariates at progression (connector/cohort/baseline.py, issue 16)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa

from connector.cohort.baseline import DrugGiven, count_regimens, finding_status, nearest

D = dt.date
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cohort"


def _drug(name: str, start: D, days: int = 1, drug_class: str = "imid") -> DrugGiven:
    return DrugGiven(name, drug_class, start, start + dt.timedelta(days=days - 1))


def test_regimens_split_by_a_pause_or_a_new_drug_after_the_window():
    cycle = [_drug("pomalidomide", D(2020, 1, 1) + dt.timedelta(days=28 * i), 21)
             for i in range(4)]
    dex = [_drug("dexamethasone", D(2020, 1, 1) + dt.timedelta(days=7 * i), 1, "steroid")
           for i in range(16)]
    # 28-day cycles of 21 days: a 7-day gap is no pause; one regimen
    assert count_regimens(cycle + dex, pause_days=14, window_days=30) == 1
    # daratumumab added on day 45 is a new drug after the 30-day window: a second regimen
    late = [_drug("daratumumab", D(2020, 2, 15), 1, "anti_cd38")]
    assert count_regimens(cycle + late, pause_days=14, window_days=30) == 2
    # the same drugs again after a 20-day pause: a new regimen (planned treatment ended)
    again = [_drug("pomalidomide", D(2020, 5, 11), 21)]
    assert count_regimens(cycle + again, pause_days=14, window_days=30) == 2
    # steroids and lymphodepletion alone are no regimen
    assert count_regimens(dex + [_drug("fludarabine", D(2020, 6, 1), 3, "lymphodepletion")],
                          pause_days=14, window_days=30) == 0


def test_finding_present_wins_absent_counts_and_nothing_is_not_recorded():
    until = D(2021, 6, 30)
    assert finding_status([(D(2020, 1, 1), "absent"), (D(2021, 1, 1), "present")],
                          until) == "present"
    assert finding_status([(D(2020, 1, 1), "absent")], until) == "absent"
    assert finding_status([(D(2020, 1, 1), "uncertain")], until) is None
    assert finding_status([(D(2021, 7, 1), "present")], until) is None  # after the window
    assert finding_status([], until) is None


def test_nearest_value_in_the_window():
    day = D(2021, 3, 1)
    values = [(D(2021, 1, 1), 100.0), (D(2021, 2, 20), 200.0), (D(2021, 3, 5), 300.0)]
    assert nearest(values, day, before=60, after=14) == 300.0  # 4 days after beats 9 before
    assert nearest(values, day, before=60, after=3) == 200.0
    assert nearest(values[:1], day, before=30, after=14) is None


def test_fixture_baseline_matches_ground_truth(built_engine):
    truth = json.loads((FIXTURES / "ground_truth.json").read_text())
    with built_engine.connect() as conn:
        rows = {(r.site, r.source_id): r._asdict() for r in conn.execute(
            sa.text("SELECT * FROM patient_baseline"))}
    cohort = [p for p in truth["patients"] if p["in_cohort"]]
    assert len(rows) == len(cohort)
    keys = ["del_17p", "t_4_14", "t_14_16", "gain_1q", "extramedullary", "riss_stage", "ldh"]
    for p in cohort:
        got = rows[(p["site"], p["source_id"])]
        assert got["prior_lines"] == p["prior_lines"]
        assert {k: got[k] for k in keys} == {k: p["baseline"][k] for k in keys}
        assert (None if got["ldh_elevated"] is None else bool(got["ldh_elevated"])) == \
            p["baseline"]["ldh_elevated"]
    # the fixture exercises every value kind, "not recorded" included
    assert {r["del_17p"] for r in rows.values()} == {"present", "absent", None}
    assert {r["riss_stage"] for r in rows.values()} == {"I", "II", "III", None}
    assert {r["extramedullary"] for r in rows.values()} == {"present", None}


def test_median_interval_between_lab_dates():
    from connector.cohort.baseline import median_interval

    days = [D(2021, 1, 1), D(2021, 1, 29), D(2021, 2, 26), D(2021, 4, 23)]
    assert median_interval(days) == 28.0  # gaps 28, 28, 56
    assert median_interval(days[:3] + [D(2021, 3, 5)]) == 28.0
    assert median_interval([D(2021, 1, 1), D(2021, 1, 11), D(2021, 2, 10), D(2021, 2, 20)
                            ]) == 10.0
    assert median_interval(days[:2] + [D(2021, 3, 1)]) == 29.5  # gaps 28, 31
    assert median_interval(days[:1]) is None
