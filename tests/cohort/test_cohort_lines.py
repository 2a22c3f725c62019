"""Lines of therapy after progression (30-day window, 90-day gap, CAR-T, transplant...)."""

from __future__ import annotations

from cohort_builders import RELAPSE_SERUM, RULES, course, d, drug, index_cilta, proc, run

PROGRESSION = 150  # RELAPSE_SERUM gives a confirmed PD on day 150


def lines_of(exposures=(), procedures=(), labs=RELAPSE_SERUM, rules=RULES):  # noqa: ANN001, ANN201
    ex, pr = index_cilta(0)
    rec, lines = run(ex + list(exposures), pr + list(procedures), labs, rules=rules)
    assert rec.progression_date == d(PROGRESSION)
    return lines


def starts(lines) -> list:  # noqa: ANN001
    return [ln.start_date for ln in lines]


def test_drugs_started_within_the_window_form_one_regimen():
    ex = [drug("daratumumab", 160), drug("dexamethasone", 165), drug("pomalidomide", 185)]
    ex += course(["daratumumab", "pomalidomide", "dexamethasone"], 213, 400)
    lines = lines_of(ex)
    assert len(lines) == 1
    assert lines[0].start_date == d(160)
    assert lines[0].drugs == ["daratumumab", "dexamethasone", "pomalidomide"]
    assert lines[0].drugs_text == "daratumumab;dexamethasone;pomalidomide"
    assert lines[0].end_date == d(381)


def test_exposures_before_progression_are_not_lines():
    ex = course(["carfilzomib", "dexamethasone"], -60, -20)  # bridging before the CAR-T
    ex += course(["pomalidomide", "dexamethasone"], 160, 300)
    lines = lines_of(ex)
    assert [ln.drugs for ln in lines] == [["dexamethasone", "pomalidomide"]]


def test_new_drug_after_the_window_starts_a_new_line():
    ex = course(["carfilzomib", "pomalidomide", "dexamethasone"], 160, 400)
    ex += course(["selinexor"], 244, 400, every=7)
    lines = lines_of(ex)
    assert starts(lines) == [d(160), d(244)]
    # the drugs that go on belong to the new line; the first ends before it
    assert lines[1].drugs == ["carfilzomib", "dexamethasone", "pomalidomide", "selinexor"]
    assert lines[0].end_date == d(216)


def test_steroid_added_late_does_not_start_a_line():
    ex = course(["pomalidomide"], 160, 400) + course(["dexamethasone"], 244, 400)
    lines = lines_of(ex)
    assert len(lines) == 1
    assert lines[0].drugs == ["dexamethasone", "pomalidomide"]


def test_dropping_a_drug_does_not_start_a_line():
    ex = course(["daratumumab", "pomalidomide", "dexamethasone"], 160, 220)
    ex += course(["pomalidomide", "dexamethasone"], 244, 400)
    assert len(lines_of(ex)) == 1


def test_restart_after_a_gap_over_90_days_is_a_new_line():
    ex = course(["pomalidomide", "dexamethasone"], 160, 244)  # last dose day 244
    ex += course(["pomalidomide", "dexamethasone"], 244 + 91, 500)
    lines = lines_of(ex)
    assert starts(lines) == [d(160), d(335)]
    assert lines[0].end_date == d(244)
    assert lines[1].drugs == lines[0].drugs


def test_restart_after_a_gap_under_90_days_is_the_same_line():
    ex = course(["pomalidomide", "dexamethasone"], 160, 244)
    ex += course(["pomalidomide", "dexamethasone"], 244 + 85, 500)
    lines = lines_of(ex)
    assert starts(lines) == [d(160)]
    assert lines[0].end_date == d(497)


def test_gap_is_measured_from_the_end_of_a_course():
    ex = [drug("pomalidomide", 160, 300), drug("dexamethasone", 160, 300)]
    ex += [drug("pomalidomide", 380, 450), drug("dexamethasone", 380, 450)]  # 80 days after
    lines = lines_of(ex)
    assert len(lines) == 1 and lines[0].end_date == d(450)


def test_conditioning_transplant_and_maintenance_are_one_line():
    induction = course(["bortezomib", "lenalidomide", "dexamethasone"], 160, 260, every=21)
    transplant = [drug("melphalan", 318)]
    maintenance = course(["lenalidomide"], 360, 700)
    procedures = [proc("apheresis", 290), proc("auto_transplant", 320)]
    lines = lines_of(induction + transplant + maintenance, procedures)
    assert starts(lines) == [d(160), d(318)]
    assert lines[1].drugs == ["lenalidomide", "melphalan"]
    assert (lines[1].therapy_class, lines[1].subclass) == ("non_tce", "autologous_transplant")
    assert lines[1].end_date == d(696)
    assert lines[0].subclass == "imid_pi"


def test_maintenance_after_a_transplant_gap_over_90_days_still_continues():
    procedures = [proc("auto_transplant", 200)]
    ex = [drug("melphalan", 198)] + course(["lenalidomide"], 300, 600)
    lines = lines_of(ex, procedures)
    assert len(lines) == 1 and lines[0].drugs == ["lenalidomide", "melphalan"]


def test_melphalan_far_from_a_transplant_is_chemotherapy():
    ex = [drug("melphalan", 160), drug("dexamethasone", 160)]
    lines = lines_of(ex)
    assert lines[0].subclass == "chemotherapy"


def test_second_car_t_with_lymphodepletion_is_one_tce_line():
    ex = [drug(i, day) for day in (245, 246, 247) for i in ("fludarabine", "cyclophosphamide")]
    ex.append(drug("idecabtagene vicleucel", 250))
    lines = lines_of(ex, [proc("car_t_administration", 250, "idecabtagene vicleucel")])
    assert len(lines) == 1
    line = lines[0]
    assert line.start_date == d(245)
    assert line.drugs == ["cyclophosphamide", "fludarabine", "idecabtagene vicleucel"]
    assert (line.therapy_class, line.subclass) == ("tce", "car_t")
    assert line.end_date == d(250)


def test_car_t_after_bridging_starts_its_own_line():
    ex = course(["carfilzomib", "dexamethasone"], 200, 230, every=7)
    ex += [drug("cyclophosphamide", 245), drug("fludarabine", 245)]
    lines = lines_of(ex, [proc("car_t_administration", 250, "ciltacabtagene autoleucel")])
    assert starts(lines) == [d(200), d(245)]
    assert lines[1].drugs == ["ciltacabtagene autoleucel", "cyclophosphamide", "fludarabine"]
    assert lines[0].subclass == "imid_pi"


def test_productless_car_t_procedure_makes_a_tce_line():
    lines = lines_of([], [proc("car_t_administration", 250)])
    assert len(lines) == 1
    assert (lines[0].therapy_class, lines[0].subclass, lines[0].drugs) == ("tce", "car_t", [])


def test_lymphodepletion_started_early_is_joined_by_its_car_t():
    # fludarabine 20 days before (outside the lymphodepletion window) opens a line of
    # lymphodepletion only; the infusion within 30 days joins it instead of starting one
    ex = [drug("fludarabine", 230), drug("tisagenlecleucel", 250)]
    lines = lines_of(ex)
    assert len(lines) == 1 and lines[0].start_date == d(230)
    assert lines[0].subclass == "car_t"


def test_maintenance_after_a_multi_drug_regimen_continues_the_line():
    ex = course(["carfilzomib", "lenalidomide", "dexamethasone"], 160, 330)
    ex += course(["ixazomib"], 400, 600)
    lines = lines_of(ex)
    assert len(lines) == 1
    assert "ixazomib" in lines[0].drugs


def test_a_doublet_after_a_triplet_is_a_new_line_not_maintenance():
    ex = course(["daratumumab", "lenalidomide", "dexamethasone"], 160, 330)
    ex += course(["pomalidomide", "dexamethasone"], 358, 600)
    assert starts(lines_of(ex)) == [d(160), d(358)]


def test_short_single_drug_is_not_maintenance():
    ex = course(["carfilzomib", "lenalidomide", "dexamethasone"], 160, 330)
    ex += course(["ixazomib"], 400, 440)
    assert starts(lines_of(ex)) == [d(160), d(400)]


def test_daratumumab_is_maintenance_only_after_a_regimen_with_daratumumab():
    ex = course(["bortezomib", "lenalidomide", "dexamethasone"], 160, 330)
    ex += course(["daratumumab"], 400, 600)
    assert len(lines_of(ex)) == 2


def test_steroid_alone_does_not_open_a_line():
    assert lines_of([drug("dexamethasone", 160)]) == []
    lines = lines_of([drug("dexamethasone", 160), drug("pomalidomide", 175)])
    assert lines[0].start_date == d(160)
    assert lines[0].drugs == ["dexamethasone", "pomalidomide"]


def test_drug_continuing_across_progression_joins_the_first_line_when_a_drug_is_added():
    ex = course(["lenalidomide"], -56, 400)  # runs through the CAR-T and the progression
    ex += course(["daratumumab", "dexamethasone"], 200, 400)
    lines = lines_of(ex)
    assert starts(lines) == [d(200)]
    assert lines[0].drugs == ["daratumumab", "dexamethasone", "lenalidomide"]


def test_drug_continuing_across_progression_alone_is_no_line():
    assert lines_of(course(["lenalidomide"], -56, 400)) == []


def test_course_spanning_progression_joins_the_first_line():
    ex = [drug("lenalidomide", -30, 400)] + course(["daratumumab", "dexamethasone"], 200, 400)
    lines = lines_of(ex)
    assert lines[0].drugs == ["daratumumab", "dexamethasone", "lenalidomide"]
    assert lines[0].start_date == d(200)


def test_late_add_rule_is_off_by_default_and_can_be_switched_on():
    ex = course(["carfilzomib", "dexamethasone"], 160, 400) + course(["pomalidomide"], 216, 400)
    assert len(lines_of(ex)) == 2
    rules = RULES.replace("lines", late_add_days=90)
    assert len(lines_of(ex, rules=rules)) == 1


def test_end_date_is_the_last_administration_of_the_line():
    ex = course(["talquetamab"], 160, 300, every=7) + [drug("selinexor", 340)]
    lines = lines_of(ex)
    assert lines[0].end_date == d(300)
    assert lines[0].end_date < lines[1].start_date


def test_end_date_of_an_overlapping_course_stops_before_the_next_line():
    ex = [drug("pomalidomide", 160, 400), drug("dexamethasone", 160, 400),
          drug("teclistamab", 300)]
    lines = lines_of(ex)
    assert lines[0].end_date == d(299)
    assert (lines[1].therapy_class, lines[1].subclass) == ("tce", "bcma_bispecific")


def test_short_maintenance_after_a_transplant_still_continues_the_line():
    ex = [drug("melphalan", 200)] + course(["lenalidomide"], 280, 300)  # two short periods
    lines = lines_of(ex, [proc("auto_transplant", 202)])
    assert len(lines) == 1 and lines[0].drugs == ["lenalidomide", "melphalan"]


def test_maintenance_stopped_before_the_next_regimen_is_still_monotherapy():
    # lenalidomide for 5 days, then venetoclax-dex 30 days after it started: the
    # lenalidomide was given alone, so it is maintenance and venetoclax starts line 2
    ex = [drug("melphalan", 160), drug("lenalidomide", 256, 260)]
    ex += course(["venetoclax", "dexamethasone"], 286, 330)
    lines = lines_of(ex, [proc("auto_transplant", 162)])
    assert starts(lines) == [d(160), d(286)]
    assert lines[0].drugs == ["lenalidomide", "melphalan"]


def test_drug_started_alongside_a_would_be_maintenance_makes_a_regimen():
    ex = [drug("melphalan", 160), drug("lenalidomide", 256, 300)]
    ex += course(["daratumumab", "dexamethasone"], 270, 330)
    lines = lines_of(ex, [proc("auto_transplant", 162)])
    assert starts(lines) == [d(160), d(256)]
    assert lines[1].drugs == ["daratumumab", "dexamethasone", "lenalidomide"]


def test_drug_of_an_earlier_line_restarted_later_is_a_new_drug():
    # KPd, then VDT-PACE (no pomalidomide) from day 216, then cyclophosphamide-pom-dex
    # 70 days later: pomalidomide left with KPd, so its return starts line 3
    ex = course(["carfilzomib", "pomalidomide", "dexamethasone"], 160, 190)
    ex += course(["bortezomib", "thalidomide", "cisplatin", "cyclophosphamide",
                  "dexamethasone"], 216, 250)
    ex += course(["cyclophosphamide", "pomalidomide", "dexamethasone"], 286, 400)
    assert starts(lines_of(ex)) == [d(160), d(216), d(286)]
