"""Best response per line (IMWG from labs) and PFS per line."""

from __future__ import annotations

from cohort_builders import course, d, drug, flc, index_cilta, lab, run, serum, urine

START = 160  # the only later line starts here; with no earlier labs this is the progression


def lines_of(labs, exposures=None, death=None):  # noqa: ANN001, ANN201
    ex, pr = index_cilta(0)
    if exposures is None:
        exposures = course(["pomalidomide", "dexamethasone"], START, 400)
    rec, lines = run(ex + exposures, pr, labs, death=death)
    assert rec.in_cohort and rec.progression_date == d(START)
    return lines


def one(labs, **kw):  # noqa: ANN001, ANN201
    lines = lines_of(labs, **kw)
    assert len(lines) == 1
    return lines[0]


def test_pr_needs_two_consecutive_assessments():
    line = one(serum((START, 2.0), (190, 0.9), (220, 0.8), (250, 0.9)))
    assert line.best_response == "PR"
    assert line.pfs_event_date is None and line.pfs_censor_date == d(250)


def test_single_response_reading_is_not_confirmed():
    line = one(serum((START, 2.0), (190, 0.9), (220, 1.8), (250, 1.9)))
    assert line.best_response == "SD"


def test_best_of_consecutive_pairs():
    line = one(serum((START, 2.0), (190, 0.9), (220, 0.15), (250, 0.1), (280, 0.5)))
    assert line.best_response == "VGPR"


def test_mr():
    assert one(serum((START, 2.0), (190, 1.4), (220, 1.3))).best_response == "MR"


def test_cr_needs_negative_ife_and_marrow():
    labs = serum((START, 2.0), (190, 0.3), (220, 0.0), (250, 0.0))
    line = one(labs)
    assert line.best_response == "VGPR"
    assert "CR not determinable" in line.response_note
    assert "immunofixation" in line.response_note and "marrow" in line.response_note
    evidence = [lab("serum_ife", 250, code="negative"), lab("marrow_plasma_cells", 250, 2.0)]
    line = one(labs + evidence)
    assert (line.best_response, line.response_note) == ("CR", "")


def test_positive_ife_keeps_vgpr_without_a_note():
    labs = serum((START, 2.0), (190, 0.3), (220, 0.0), (250, 0.0))
    labs += [lab("serum_ife", 250, code="positive"), lab("marrow_plasma_cells", 250, 2.0)]
    line = one(labs)
    assert (line.best_response, line.response_note) == ("VGPR", "")


def test_marrow_without_ife_notes_only_the_ife():
    labs = serum((START, 2.0), (220, 0.0), (250, 0.0)) + [lab("marrow_plasma_cells", 250, 1.0)]
    line = one(labs)
    assert line.best_response == "VGPR"
    assert "immunofixation" in line.response_note and "marrow" not in line.response_note


def test_confirmed_pd_is_the_best_response_without_a_response_and_ends_pfs():
    line = one(serum((START, 2.0), (190, 2.6), (220, 2.8), (250, 3.0)))
    assert line.best_response == "PD"
    assert (line.pfs_event_date, line.pfs_censor_date) == (d(190), None)


def test_response_then_progression():
    labs = serum((START, 2.0), (190, 0.9), (220, 0.7), (250, 0.6), (280, 1.2), (310, 1.4))
    line = one(labs)
    assert line.best_response == "PR"
    assert line.pfs_event_date == d(280)  # confirmed nadir 0.7; 1.2 is +0.5 and +71 %


def test_unconfirmed_pd_reading_in_a_line_is_not_an_event():
    line = one(serum((START, 2.0), (190, 1.9), (220, 2.6), (250, 2.0)))
    assert line.best_response == "SD"
    assert line.pfs_event_date is None and line.pfs_censor_date == d(250)


def test_fewer_than_two_assessments_is_ne():
    line = one(serum((START, 2.0), (200, 0.5)))
    assert line.best_response == "NE"
    assert line.pfs_censor_date == d(200)


def test_regimen_without_labs_is_ne_censored_at_its_start():
    line = one([])
    assert line.best_response == "NE"
    assert (line.pfs_event_date, line.pfs_censor_date) == (None, d(START))


def test_no_measurable_baseline_is_ne():
    line = one(serum((START, 0.5), (190, 0.2), (220, 0.1)))
    assert line.best_response == "NE"
    assert "measurable" in line.response_note


def test_baseline_older_than_60_days_is_not_used():
    line = one(serum((START - 61, 2.0), (190, 0.5), (220, 0.4)))
    assert line.best_response == "NE"


def test_flc_only_disease_uses_dflc():
    base = flc((START, 600, 10))  # kappa involved, dFLC 590
    pr = one(base + flc((190, 250, 10), (220, 200, 10)))
    assert pr.best_response == "PR"
    vgpr = one(base + flc((190, 60, 10), (220, 50, 10)))  # dFLC 50 and 40: > 90 % down
    assert vgpr.best_response == "VGPR"
    mr_range = one(base + flc((190, 400, 10), (220, 420, 10)))  # ~30 %: no MR for dFLC
    assert mr_range.best_response == "SD"


def test_flc_needs_an_abnormal_ratio_to_be_measurable():
    line = one(flc((START, 150, 100), (190, 60, 50), (220, 50, 40)))
    assert line.best_response == "NE"


def test_urine_only_disease():
    line = one(urine((START, 800), (190, 150), (220, 120), (250, 80), (280, 90)))
    assert line.best_response == "VGPR"


def test_serum_and_urine_measurable_take_the_worse():
    labs = serum((START, 2.0), (190, 0.8), (220, 0.8)) + urine((START, 1000), (190, 500),
                                                                (220, 500))
    assert one(labs).best_response == "MR"


def test_death_before_any_assessment():
    line = one(serum((START, 2.0)), death=175)
    assert line.best_response == "NE"
    assert (line.pfs_event_date, line.pfs_censor_date) == (d(175), None)


def test_death_counts_for_the_line_it_falls_in_only():
    ex = course(["pomalidomide", "dexamethasone"], START, 280)
    ex += course(["teclistamab"], 300, 420, every=7)
    labs = serum((START, 2.0), (190, 1.9), (220, 1.9), (250, 1.8), (300, 1.8), (330, 0.15),
                 (360, 0.1))
    lines = lines_of(labs, exposures=ex, death=430)
    assert [ln.start_date for ln in lines] == [d(START), d(300)]
    assert (lines[0].pfs_event_date, lines[0].pfs_censor_date) == (None, d(250))
    assert lines[1].pfs_event_date == d(430)
    assert lines[1].best_response == "VGPR"


def test_pd_confirmed_after_the_next_line_started_still_ends_the_line():
    ex = course(["pomalidomide", "dexamethasone"], START, 280) + [drug("selinexor", 300)]
    labs = serum((START, 2.0), (190, 1.9), (220, 1.9), (280, 2.7), (310, 2.9))
    lines = lines_of(labs, exposures=ex)
    assert lines[0].pfs_event_date == d(280)
    assert lines[0].best_response == "SD"  # stable at two assessments before the PD


def test_stable_then_progression_is_sd_but_progression_first_is_pd():
    stable = one(serum((START, 2.0), (190, 1.9), (220, 1.8), (250, 2.6), (270, 2.8)))
    assert (stable.best_response, stable.pfs_event_date) == ("SD", d(250))
    early = one(serum((START, 2.0), (190, 1.9), (220, 2.6), (240, 2.8)))
    assert (early.best_response, early.pfs_event_date) == ("PD", d(220))


def test_lab_values_in_other_units_are_converted_or_ignored():
    labs = [lab("serum_m_protein", START, 20.0, unit="g/L"),      # 2.0 g/dL
            lab("serum_m_protein", 190, 0.9, unit="g/dL"),
            lab("serum_m_protein", 220, 800.0, unit="mg/dL"),     # 0.8 g/dL
            lab("serum_m_protein", 250, 5.0, unit="furlongs")]    # dropped, not a rise
    line = one(labs)
    assert line.best_response == "PR"
    assert line.pfs_event_date is None and line.pfs_censor_date == d(220)


def test_canonical_values_of_any_magnitude_are_taken_as_they_are():
    # 24-h urine arrives converted (1.2 g/24h -> 1200 mg/24h); a value already in the
    # canonical unit is never rescaled, however large
    labs = [lab("urine_m_protein", START, 1200.0, unit="mg/24h"),
            lab("urine_m_protein", 190, 1.0, unit="g/24h"),        # 1000 mg: still SD
            lab("urine_m_protein", 220, 1100.0, unit="mg/(24.h)")]
    assert one(labs).best_response == "SD"
