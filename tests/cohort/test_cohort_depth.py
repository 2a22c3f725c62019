"""Response depth (issue 15 item 7): urine immunofixation for CR, sCR, and which test
was missing when a deeper response could not be confirmed."""

from __future__ import annotations

from cohort_builders import RULES, course, index_cilta, lab, run, serum, urine

START = 160


def _line(labs, rules=RULES):  # noqa: ANN001, ANN201
    ex, pr = index_cilta(0)
    rec, lines = run(ex + course(["pomalidomide", "dexamethasone"], START, 400), pr, labs,
                     rules=rules)
    assert rec.progression_date is not None and len(lines) == 1
    return lines[0]


CR_SERUM = serum((START, 2.0), (190, 0.3), (220, 0.0), (250, 0.0))
EVIDENCE = [lab("serum_ife", 250, code="negative"), lab("marrow_plasma_cells", 250, 2.0)]


def _flc(day: int, kappa: float, lam: float) -> list:
    return [lab("kappa_flc", day, kappa, unit="mg/L"), lab("lambda_flc", day, lam, unit="mg/L"),
            lab("flc_ratio", day, round(kappa / lam, 2))]


def test_urine_followed_needs_a_negative_urine_immunofixation_for_cr():
    labs = CR_SERUM + urine((START, 300.0), (220, 0.0), (250, 0.0)) + EVIDENCE
    line = _line(labs)
    assert line.best_response == "VGPR"
    assert line.response_note == ("VGPR or better by labs; CR not determinable: "
                                  "no urine immunofixation")
    line = _line(labs + [lab("urine_ife", 250, code="negative")])
    assert line.best_response == "CR"


def test_urine_never_followed_does_not_block_cr_unless_always_required():
    assert _line(CR_SERUM + EVIDENCE).best_response == "CR"
    always = RULES.replace("imwg", cr_needs_urine_ife="always")
    line = _line(CR_SERUM + EVIDENCE, always)
    assert (line.best_response, line.response_note) == (
        "VGPR", "VGPR or better by labs; CR not determinable: no urine immunofixation")


def test_scr_needs_a_normal_flc_ratio_and_no_clonal_marrow_cells():
    labs = CR_SERUM + EVIDENCE + _flc(START, 300, 10) + _flc(220, 12, 11) + _flc(250, 13, 12)
    line = _line(labs)
    assert (line.best_response, line.response_note) == (
        "CR", "CR; sCR not determinable: no marrow clonality assessment")
    line = _line(labs + [lab("marrow_clonality", 250, code="negative")])
    assert (line.best_response, line.response_note) == ("sCR", "")
    # an abnormal ratio at a CR assessment: CR is the best, and nothing was missing
    abnormal = CR_SERUM + EVIDENCE + _flc(220, 40, 10) + _flc(250, 45, 10)
    line = _line(abnormal + [lab("marrow_clonality", 250, code="negative")])
    assert (line.best_response, line.response_note) == ("CR", "")
