"""Line rules closer to IMWG (Rajkumar 2011), issue 15 item 5: a drug added without
progression, bridging between apheresis and CAR-T, induction + melphalan + ASCT."""

from __future__ import annotations

from cohort_builders import RELAPSE_SERUM, RULES, course, d, drug, index_cilta, proc, run, serum

# progression after CAR-T on day 150 (RELAPSE_SERUM); the first line starts on day 160
START = 160
RESPONDING = serum((START, 2.0), (185, 1.2), (210, 0.9), (240, 0.8), (270, 0.8))


def _run(extra, labs):  # noqa: ANN001, ANN201
    ex, pr = index_cilta(0)
    ex += [e for e in extra if not hasattr(e, "category")]
    pr += [p for p in extra if hasattr(p, "category")]
    return run(ex, pr, RELAPSE_SERUM + labs)


def test_a_drug_added_to_an_ongoing_line_without_progression_extends_it():
    pd = course(["pomalidomide", "dexamethasone"], START, 300)
    dara = course(["daratumumab"], START + 45, 300, every=14)
    rec, lines = _run(pd + dara, RESPONDING)
    assert [(ln.start_date, ln.drugs) for ln in lines] == [
        (d(START), ["daratumumab", "dexamethasone", "pomalidomide"])]
    assert lines[0].subclass == "anti_cd38"


def test_a_drug_added_after_a_pd_reading_or_without_labs_starts_a_new_line():
    pd = course(["pomalidomide", "dexamethasone"], START, 300)
    dara = course(["daratumumab"], START + 45, 300, every=14)
    progressing = serum((START, 2.0), (185, 2.7), (200, 3.0))
    _, lines = _run(pd + dara, progressing)
    assert [ln.start_date for ln in lines] == [d(START), d(START + 45)]
    _, lines = _run(pd + dara, [])  # no labs in the line: the 30-day window decides
    assert [ln.start_date for ln in lines] == [d(START), d(START + 45)]
    off = RULES.replace("lines", add_without_progression_days=0)
    ex, pr = index_cilta(0)
    _, lines = run(ex + pd + dara, pr, RELAPSE_SERUM + RESPONDING, rules=off)
    assert len(lines) == 2


def test_bridging_between_apheresis_and_car_t_belongs_to_the_car_t_line():
    # a second CAR-T: apheresis on day 165, bridging KPd from day 170, LD days 210-212
    bridging = course(["carfilzomib", "dexamethasone"], 170, 200, every=7)
    ld = [drug(i, 210 + k) for k in (0, 1, 2) for i in ("fludarabine", "cyclophosphamide")]
    car_t = [drug("idecabtagene vicleucel", 215), proc("car_t_harvest", 165),
             proc("car_t_administration", 215, "idecabtagene vicleucel")]
    labs = serum((168, 2.0), (190, 2.2), (230, 1.0), (260, 0.5), (290, 0.5))
    rec, lines = _run(bridging + ld + car_t, labs)
    assert rec.progression_date == d(150)
    assert len(lines) == 1
    line = lines[0]
    assert (line.start_date, line.subclass) == (d(170), "car_t")
    assert line.drugs == ["carfilzomib", "cyclophosphamide", "dexamethasone", "fludarabine",
                          "idecabtagene vicleucel"]
    # the response baseline is the last value before bridging (2.0 on day 168): PR
    assert line.best_response == "PR"


def test_induction_high_dose_melphalan_and_asct_are_one_line():
    induction = course(["carfilzomib", "pomalidomide", "dexamethasone"], START, 260)
    asct = [drug("melphalan", 290), proc("auto_transplant", 292)]
    labs = RESPONDING + serum((300, 0.7), (330, 0.7))
    _, lines = _run(induction + asct, labs)
    assert [(ln.start_date, ln.subclass) for ln in lines] == [
        (d(START), "autologous_transplant")]
    # progression before the transplant: the transplant is salvage, a line of its own
    progressing = serum((START, 2.0), (185, 1.0), (215, 1.0), (245, 1.8), (270, 2.2))
    _, lines = _run(induction + asct, progressing)
    assert [ln.start_date for ln in lines] == [d(START), d(290)]
