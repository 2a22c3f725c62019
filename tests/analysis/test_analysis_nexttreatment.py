"""Time to next treatment, PFS with a switch as event, and the per-site counts (issue 15)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from connector.analysis import analyze_frames
from connector.analysis.settings import DAYS_PER_MONTH

D = dt.date


def _patient(site, sid, *, death=None, last=None, deceased=False, basis="imwg_labs"):
    return {"site": site, "source_id": sid, "patient_key": f"k-{sid}", "in_cohort": True,
            "index_product": "idecabtagene vicleucel", "index_date": D(2020, 6, 1),
            "progression_date": D(2021, 1, 1), "progression_basis": basis,
            "death_date": death, "last_contact_date": last or death, "deceased": deceased,
            "birth_year": 1955, "sex": "female"}


def _line(site, sid, n, start, *, event=None, censor=None, cls="non_tce"):
    return {"site": site, "source_id": sid, "patient_key": f"k-{sid}", "line": n,
            "start_date": start, "end_date": None, "drugs": "daratumumab",
            "therapy_class": cls, "subclass": "anti_cd38", "best_response": "PR",
            "pfs_event_date": event, "pfs_censor_date": censor}


@pytest.fixture
def cohort():
    patients = pd.DataFrame([
        _patient("A", "1", death=D(2021, 9, 1)),
        _patient("A", "2", last=D(2021, 12, 1), deceased=True),  # dead, date unknown
        _patient("B", "3", last=D(2021, 11, 1), basis="new_line_fallback"),
    ])
    lines = pd.DataFrame([
        # line 1 of patient 1 ends with a switch, no PD measured: censored in PFS
        _line("A", "1", 1, D(2021, 1, 10), censor=D(2021, 3, 1)),
        _line("A", "1", 2, D(2021, 4, 1), event=D(2021, 6, 1), cls="tce"),
        _line("A", "2", 1, D(2021, 2, 1), censor=D(2021, 10, 1)),
        _line("B", "3", 1, D(2021, 1, 5), event=D(2021, 3, 5)),
        _line("B", "3", 2, D(2021, 4, 1), censor=D(2021, 10, 1)),
    ])
    return patients, lines


def _row(a, sid, n):
    lines = a.lines
    return lines[(lines["source_id"] == sid) & (lines["line"] == n)].iloc[0]


def test_ttnt_is_the_next_start_or_death_else_last_contact(cohort):
    a = analyze_frames(*cohort)
    l11, l12, l21 = _row(a, "1", 1), _row(a, "1", 2), _row(a, "2", 1)
    assert (l11["ttnt_months"], bool(l11["ttnt_event"])) == (81 / DAYS_PER_MONTH, True)
    assert (l12["ttnt_months"], bool(l12["ttnt_event"])) == (153 / DAYS_PER_MONTH, True)
    # death without a date: censored at the last contact
    assert (l21["ttnt_months"], bool(l21["ttnt_event"])) == (303 / DAYS_PER_MONTH, False)


def test_derived_ttnt_columns_win_over_the_computed_rule(cohort):
    patients, lines = cohort
    lines = lines.assign(ttnt_event_date=None, ttnt_censor_date=None)
    lines.loc[2, "ttnt_censor_date"] = D(2021, 11, 1)
    a = analyze_frames(patients, lines)
    assert _row(a, "2", 1)["ttnt_months"] == 273 / DAYS_PER_MONTH


def test_switch_counts_as_an_event_only_in_the_sensitivity_analysis(cohort):
    a = analyze_frames(*cohort)
    l11 = _row(a, "1", 1)
    assert (bool(l11["pfs_event"]), l11["pfs_months"]) == (False, 50 / DAYS_PER_MONTH)
    assert (bool(l11["pfs_switch_event"]), l11["pfs_switch_months"]) == (True,
                                                                          81 / DAYS_PER_MONTH)
    l31 = _row(a, "3", 1)  # a measured PD stays the event
    assert l31["pfs_switch_months"] == l31["pfs_months"]
    r = a.results
    first = r["pfs_switch_as_event"]["first_line"]["median_months"]["overall"]
    assert (first["n"], first["events"]) == (3, 2)
    assert r["first_line_detail"]["pfs_median_months"]["overall"]["events"] == 1
    ttnt = r["time_to_next_treatment"]["all_lines"]["median_months"]["overall"]
    assert (ttnt["n"], ttnt["events"]) == (5, 3)


def test_per_site_counts_of_fallback_and_undated_deaths(cohort):
    r = analyze_frames(*cohort).results
    assert r["cohort"]["new_line_fallback_by_site"] == {"A": 0, "B": 1}
    assert r["cohort"]["deaths_without_date_by_site"] == {"A": 1, "B": 0}
    # OS: the undated death is censored at the last contact
    assert r["os"]["median_months"]["events"] == 1
