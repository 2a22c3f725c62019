"""Issue 15 item 6: newer CAR-T products in the derive rules (targets by class)."""

from __future__ import annotations

from cohort_builders import RELAPSE_SERUM, d, drug, index_cilta, proc, run

from connector.cohort import Exposure


def test_a_gprc5d_car_t_after_bcma_car_t_is_a_tce_car_t_line_but_never_an_index():
    ex, pr = index_cilta(0)
    ex += [drug(i, 200 + k) for k in (0, 1, 2) for i in ("fludarabine", "cyclophosphamide")]
    ex.append(Exposure("mcarh109", "other_car_t", d(205)))
    rec, lines = run(ex, pr, RELAPSE_SERUM)
    assert rec.index_product == "ciltacabtagene autoleucel"
    assert [(ln.therapy_class, ln.subclass) for ln in lines] == [("tce", "car_t")]
    only_gprc5d, _ = run([Exposure("mcarh109", "other_car_t", d(0))], [], RELAPSE_SERUM)
    assert only_gprc5d.exclusion_reason == "non_bcma_car_t"


def test_an_investigational_bcma_car_t_named_by_a_procedure_is_an_index():
    rec, _ = run([], [proc("car_t_administration", 0, "equecabtagene autoleucel")],
                 RELAPSE_SERUM)
    assert (rec.index_date, rec.index_product) == (d(0), "equecabtagene autoleucel")
    gprc5d, _ = run([], [proc("car_t_administration", 0, "arlocabtagene autoleucel")],
                    RELAPSE_SERUM)
    assert gprc5d.exclusion_reason == "non_bcma_car_t"
