"""Progression after the index CAR-T: confirmed IMWG PD, disease status, new-line fallback."""

from __future__ import annotations

from cohort_builders import (
    RELAPSE_SERUM,
    RULES,
    course,
    d,
    drug,
    flc,
    index_cilta,
    lab,
    run,
    serum,
    urine,
)


def _index():
    return index_cilta(0)


def test_confirmed_serum_pd_dates_the_first_of_the_two_readings():
    ex, pr = _index()
    rec, _ = run(ex, pr, RELAPSE_SERUM)
    assert rec.in_cohort
    assert (rec.progression_date, rec.progression_basis) == (d(150), "imwg_labs")


def test_single_unconfirmed_pd_reading_is_not_progression():
    ex, pr = _index()
    # 0.8 on day 150 is PD against the nadir 0.2, but the next reading falls back
    labs = serum((-7, 3.0), (30, 1.0), (60, 0.3), (90, 0.2), (120, 0.2), (150, 0.8),
                 (180, 0.3), (210, 0.25))
    rec, _ = run(ex, pr, labs)
    assert not rec.in_cohort
    assert rec.exclusion_reason == "no_progression"
    assert rec.index_date == d(0)


def test_rise_below_the_absolute_threshold_is_not_pd():
    ex, pr = _index()
    labs = serum((-7, 3.0), (30, 0.2), (60, 0.2), (90, 0.6), (120, 0.65))  # +0.45 g/dL
    rec, _ = run(ex, pr, labs)
    assert rec.exclusion_reason == "no_progression"


def test_high_nadir_needs_a_rise_of_one_g_per_dl():
    # with the default 25 % the 1 g/dL rule cannot bind (25 % of 5 is 1.25), so lower it
    rules = RULES.replace("imwg", pd_relative=0.10)
    ex, pr = _index()
    high = serum((-7, 8.0), (30, 5.0), (60, 5.0), (90, 5.8), (120, 5.9))  # +0.8 from 5.0
    assert run(ex, pr, high, rules=rules)[0].exclusion_reason == "no_progression"
    low = serum((-7, 8.0), (30, 4.0), (60, 4.0), (90, 4.6), (120, 4.7))  # +0.6 from 4.0
    assert run(ex, pr, low, rules=rules)[0].progression_date == d(90)
    labs = serum((-7, 8.0), (30, 5.0), (60, 5.0), (90, 6.25), (120, 6.4))  # exactly 25 %
    assert run(ex, pr, labs)[0].progression_date == d(90)


def test_urine_pd():
    ex, pr = _index()
    labs = urine((-7, 900), (30, 300), (60, 250), (90, 250), (120, 500), (150, 600))
    rec, _ = run(ex, pr, labs)
    assert rec.progression_date == d(120)


def test_flc_only_patient_progresses_by_dflc():
    ex, pr = _index()
    # serum and urine unmeasurable at baseline; lambda involved
    labs = serum((-7, 0.0), (30, 0.0), (60, 0.0), (90, 0.0), (120, 0.0), (150, 0.0))
    labs += flc((-7, 10, 800), (30, 12, 150), (60, 11, 60), (90, 10, 60), (120, 10, 190),
                (150, 12, 260))
    rec, _ = run(ex, pr, labs)
    # nadir dFLC 50; day 120: 180 (> +100 and >= 25 %), confirmed on day 150
    assert (rec.progression_date, rec.progression_basis) == (d(120), "imwg_labs")


def test_dflc_rise_of_exactly_100_mg_per_l_is_not_pd():
    ex, pr = _index()
    labs = flc((-7, 10, 800), (30, 10, 60), (60, 10, 60), (90, 10, 160), (120, 10, 160))
    assert run(ex, pr, labs)[0].exclusion_reason == "no_progression"


def test_dflc_is_not_used_when_serum_is_measurable():
    ex, pr = _index()
    labs = serum((-7, 2.0), (30, 0.5), (60, 0.5), (90, 0.5), (120, 0.5))
    labs += flc((-7, 10, 800), (30, 10, 60), (60, 10, 60), (90, 10, 400), (120, 10, 500))
    assert run(ex, pr, labs)[0].exclusion_reason == "no_progression"


def test_disease_status_fallback():
    ex, pr = _index()
    labs = [lab("disease_status", 40, code="268910001"),  # improved: not progression
            lab("disease_status", 200, code="271299001")]
    rec, _ = run(ex, pr, labs)
    assert (rec.progression_date, rec.progression_basis) == (d(200), "disease_status")


def test_disease_status_before_the_index_is_ignored():
    ex, pr = _index()
    rec, _ = run(ex, pr, [lab("disease_status", -30, code="271299001")])
    assert rec.exclusion_reason == "no_progression"


def test_new_line_fallback():
    ex, pr = _index()
    ex += course(["carfilzomib", "dexamethasone"], 210, 300)
    rec, lines = run(ex, pr, [])
    assert rec.in_cohort
    assert (rec.progression_date, rec.progression_basis) == (d(210), "new_line_fallback")
    assert lines[0].start_date == d(210)


def test_new_line_fallback_ignores_steroids_and_the_index_records():
    ex, pr = _index()
    ex.append(drug("ciltacabtagene autoleucel", 1))  # a second record of the same infusion
    ex.append(drug("dexamethasone", 20))             # e.g. for CRS
    ex += course(["selinexor", "dexamethasone"], 240, 300, every=7)
    rec, lines = run(ex, pr, [])
    assert rec.progression_date == d(240)
    assert [ln.drugs for ln in lines] == [["dexamethasone", "selinexor"]]


def test_lab_rise_after_the_next_line_started_does_not_date_progression():
    ex, pr = _index()
    ex += course(["carfilzomib", "dexamethasone"], 100, 300)
    labs = serum((-7, 3.0), (30, 0.2), (60, 0.2), (200, 1.5), (230, 1.9))
    rec, _ = run(ex, pr, labs)
    assert (rec.progression_date, rec.progression_basis) == (d(100), "new_line_fallback")


def test_pd_reading_on_the_day_the_next_line_starts_counts():
    ex, pr = _index()
    ex += course(["carfilzomib", "dexamethasone"], 150, 300)
    rec, _ = run(ex, pr, RELAPSE_SERUM)
    assert (rec.progression_date, rec.progression_basis) == (d(150), "imwg_labs")


def test_running_min_nadir_option():
    ex, pr = _index()
    # one low outlier (0.05) between readings of 0.4: against the confirmed nadir 0.4,
    # 0.85 is no PD (+0.45); against the running minimum 0.05 it is
    labs = serum((-7, 3.0), (30, 0.4), (60, 0.05), (90, 0.4), (120, 0.85), (150, 0.88))
    assert run(ex, pr, labs)[0].exclusion_reason == "no_progression"
    rules = RULES.replace("imwg", nadir="running_min")
    assert run(ex, pr, labs, rules=rules)[0].progression_date == d(120)
