"""Issue 15: maintenance after CAR-T, one rule for PD on the next start day, TTNT, deaths
without a date, last contact from every resource (hand-built timelines)."""

from __future__ import annotations

import dataclasses

from cohort_builders import RELAPSE_SERUM, RULES, course, d, drug, index_cilta, patient, run, serum

from connector.cohort import derive_patient

# response to CAR-T, a long plateau at 0.2, then confirmed PD on day 400 (0.9) and 430 (1.2)
LATE_RELAPSE = serum((-7, 3.0), (30, 1.0), (60, 0.3), (90, 0.2), (150, 0.2), (240, 0.2),
                     (330, 0.2), (400, 0.9), (430, 1.2))


def _maintenance(start: int, stop: int, ingredient: str = "lenalidomide") -> list:
    """Oral cycles: 21 days on, every 28 days."""
    return [drug(ingredient, day, day + 20) for day in range(start, stop, 28)]


def test_maintenance_after_car_t_does_not_hide_a_later_lab_progression():
    ex, pr = index_cilta(0)
    ex += _maintenance(90, 440)
    ex += course(["teclistamab"], 450, 600, every=7)
    rec, lines = run(ex, pr, LATE_RELAPSE)
    assert (rec.progression_date, rec.progression_basis) == (d(400), "imwg_labs")
    assert [ln.start_date for ln in lines] == [d(450)]
    assert lines[0].drugs == ["teclistamab"]  # maintenance stopped before: not in the line


def test_maintenance_alone_without_progression_is_not_a_progression():
    ex, pr = index_cilta(0)
    ex += _maintenance(90, 500)
    labs = serum((-7, 3.0), (30, 0.5), (60, 0.2), (120, 0.2), (300, 0.2))
    rec, lines = run(ex, pr, labs)
    assert rec.exclusion_reason == "no_progression" and lines == []


def test_maintenance_then_a_new_regimen_without_lab_pd_is_the_fallback():
    ex, pr = index_cilta(0)
    ex += _maintenance(90, 300)
    ex += course(["carfilzomib", "dexamethasone"], 320, 420)
    rec, lines = run(ex, pr, serum((-7, 3.0), (30, 0.2), (60, 0.2)))
    assert (rec.progression_date, rec.progression_basis) == (d(320), "new_line_fallback")
    assert lines[0].drugs == ["carfilzomib", "dexamethasone"]


def test_a_doublet_or_a_late_single_drug_still_ends_the_search():
    ex, pr = index_cilta(0)
    rd = ex + course(["lenalidomide", "dexamethasone"], 90, 300)
    rec, _ = run(rd, pr, LATE_RELAPSE)
    assert (rec.progression_date, rec.progression_basis) == (d(90), "new_line_fallback")
    late = ex + _maintenance(250, 500, "pomalidomide")  # > 180 days after the infusion
    rec, _ = run(late, pr, LATE_RELAPSE)
    assert (rec.progression_date, rec.progression_basis) == (d(250), "new_line_fallback")


def test_maintenance_rule_can_be_switched_off():
    ex, pr = index_cilta(0)
    ex += _maintenance(90, 440)
    off = RULES.replace("progression", maintenance_max_days_after_index=0)
    rec, _ = run(ex, pr, LATE_RELAPSE, rules=off)
    assert (rec.progression_date, rec.progression_basis) == (d(90), "new_line_fallback")


def test_pd_on_the_day_the_next_line_starts_ends_the_line_pfs_as_for_car_t():
    ex, pr = index_cilta(0)
    ex += course(["pomalidomide", "dexamethasone"], 200, 300)
    ex += course(["selinexor", "dexamethasone"], 330, 400, every=7)
    labs = RELAPSE_SERUM[:-2] + serum((150, 0.8), (180, 1.1), (199, 1.2), (230, 1.2),
                                      (260, 1.2), (330, 2.0), (345, 2.3))
    rec, lines = run(ex, pr, labs)
    assert rec.progression_date == d(150)
    assert [ln.start_date for ln in lines] == [d(200), d(330)]
    # the reading drawn on day 330 (before selinexor) is the first PD of line 1
    assert (lines[0].pfs_event_date, lines[0].pfs_censor_date) == (d(330), None)


def test_time_to_next_treatment():
    ex, pr = index_cilta(0)
    ex += course(["pomalidomide", "dexamethasone"], 200, 300)
    ex += course(["selinexor", "dexamethasone"], 330, 400, every=7)
    rec, lines = run(ex, pr, RELAPSE_SERUM, death=500)
    assert [(ln.ttnt_event_date, ln.ttnt_censor_date) for ln in lines] == [
        (d(330), None), (d(500), None)]
    rec, lines = run(ex, pr, RELAPSE_SERUM)
    assert (lines[1].ttnt_event_date, lines[1].ttnt_censor_date) == (None, d(400))
    assert rec.last_contact_date == d(400)


def test_death_without_a_date_is_known_but_censored_at_last_contact():
    ex, pr = index_cilta(0)
    ex += course(["pomalidomide", "dexamethasone"], 200, 300)
    info = dataclasses.replace(patient(), deceased=True)
    rec, lines = derive_patient(info, ex, pr, RELAPSE_SERUM, RULES)
    assert (rec.deceased, rec.death_date, rec.last_contact_date) == (True, None, d(284))
    assert (lines[0].ttnt_event_date, lines[0].ttnt_censor_date) == (None, d(284))
    alive, _ = run(ex, pr, RELAPSE_SERUM)
    assert alive.deceased is False
    dated, _ = run(ex, pr, RELAPSE_SERUM, death=320)
    assert (dated.deceased, dated.death_date) == (True, d(320))


def test_last_contact_takes_records_no_code_set_maps():
    ex, pr = index_cilta(0)
    ex += course(["pomalidomide", "dexamethasone"], 200, 300)
    info = dataclasses.replace(patient(), last_record=d(350))
    rec, lines = derive_patient(info, ex, pr, RELAPSE_SERUM, RULES)
    assert rec.last_contact_date == d(350)
    assert lines[0].ttnt_censor_date == d(350)
