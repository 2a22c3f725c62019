"""Index CAR-T: the first BCMA infusion, duplicates folded, exclusions with a reason."""

from __future__ import annotations

from cohort_builders import D0, RELAPSE_SERUM, d, drug, index_cilta, proc, run


def test_procedure_and_exposure_on_nearby_days_are_one_infusion():
    ex = [drug("idecabtagene vicleucel", 1)]
    pr = [proc("car_t_administration", 0)]  # no product: matched to the exposure
    rec, _ = run(ex, pr, RELAPSE_SERUM)
    assert rec.in_cohort
    assert rec.index_date == D0
    assert rec.index_product == "idecabtagene vicleucel"


def test_index_is_the_infusion_not_the_apheresis():
    ex, pr = index_cilta(0)
    pr.append(proc("car_t_harvest", -40))
    rec, _ = run(ex, pr, RELAPSE_SERUM)
    assert rec.index_date == D0


def test_productless_procedure_alone_counts_as_bcma():
    rec, _ = run([], [proc("car_t_administration", 0)], RELAPSE_SERUM)
    assert rec.in_cohort and rec.index_date == D0
    assert rec.index_product is None


def test_productless_procedure_with_other_car_t_on_record_is_not_bcma():
    ex = [drug("axicabtagene ciloleucel", -400)]
    rec, _ = run(ex, [proc("car_t_administration", 0)], RELAPSE_SERUM)
    assert not rec.in_cohort
    assert rec.exclusion_reason == "non_bcma_car_t"


def test_no_car_t():
    rec, lines = run([drug("lenalidomide", 0)], [proc("car_t_harvest", 5)], RELAPSE_SERUM)
    assert (rec.in_cohort, rec.exclusion_reason, rec.index_date) == (False, "no_car_t", None)
    assert lines == []


def test_only_other_target_car_t():
    rec, _ = run([], [proc("car_t_administration", 0, "tisagenlecleucel")], RELAPSE_SERUM)
    assert rec.exclusion_reason == "non_bcma_car_t"


def test_index_is_first_bcma_even_after_an_earlier_cd19_car_t():
    ex = [drug("axicabtagene ciloleucel", -300)]
    pr = [proc("car_t_administration", -300, "axicabtagene ciloleucel"),
          proc("car_t_administration", 0, "idecabtagene vicleucel")]
    rec, _ = run(ex, pr, RELAPSE_SERUM)
    assert rec.in_cohort
    assert (rec.index_date, rec.index_product) == (D0, "idecabtagene vicleucel")


def test_two_bcma_infusions_index_is_the_first():
    ex, pr = index_cilta(0)
    ex2, pr2 = index_cilta(250)
    rec, lines = run(ex + ex2, pr + pr2, RELAPSE_SERUM)
    assert rec.index_date == D0
    assert len(lines) == 1 and lines[0].start_date == d(245)


def test_every_patient_gets_a_row_with_last_contact():
    rec, _ = run([drug("lenalidomide", 10, 40)], [], [])
    assert rec.last_contact_date == d(40)
    rec, _ = run([], [], [], death=70)
    assert rec.last_contact_date == d(70) and rec.death_date == d(70)
