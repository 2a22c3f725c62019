"""run_derive: reads the normalized tables, rewrites the derived ones in one transaction."""

from __future__ import annotations

import pytest
from cohort_builders import RELAPSE_SERUM, course, d, index_cilta
from sqlalchemy import func, select
from sqlmodel import Session

import connector.cohort.derived as derived
from connector.cohort import run_derive
from connector.db import get_engine, init_db
from connector.db.models import (
    CohortPatient,
    LabResult,
    MedicationExposure,
    Patient,
    ProcedureEvent,
    TherapyLine,
)


def _add_patient(session: Session, site: str, pid: str, *, car_t: bool = True,
                 death: int | None = None) -> None:
    session.add(Patient(site=site, source_id=pid, patient_key=f"k-{site}-{pid}",
                        birth_year=1950, sex="male",
                        death_date=d(death) if death is not None else None))
    ex, pr = index_cilta(0) if car_t else ([], [])
    ex += course(["pomalidomide", "dexamethasone"], 160, 300)
    ex += course(["teclistamab"], 330, 400, every=7)
    for e in ex:
        session.add(MedicationExposure(
            site=site, patient_source_id=pid, source_type="MedicationAdministration",
            source_id=f"m-{e.ingredient}-{e.start}", ingredient=e.ingredient,
            drug_class=e.drug_class, start_date=e.start, end_date=e.end))
    for p in pr:
        session.add(ProcedureEvent(site=site, patient_source_id=pid, source_id=f"p-{p.date}",
                                   category=p.category, product=p.product,
                                   performed_date=p.date))
    for lab in RELAPSE_SERUM:
        session.add(LabResult(site=site, patient_source_id=pid, source_id=f"l-{lab.date}",
                              analyte=lab.analyte, effective_date=lab.date, value=lab.value,
                              unit=lab.unit))


def _load(engine):  # noqa: ANN001, ANN202
    with Session(engine) as s:
        _add_patient(s, "site_a", "1")
        _add_patient(s, "site_a", "2", car_t=False)
        _add_patient(s, "site_b", "1", death=420)
        s.commit()
    return engine


@pytest.fixture
def loaded(engine):
    return _load(engine)


def _rows(engine, model) -> list[tuple]:
    with Session(engine) as s:
        rows = s.execute(select(model).order_by(model.site, model.source_id)).scalars().all()
        return sorted(tuple(str(v) for k, v in sorted(r.model_dump().items()) if k != "id")
                      for r in rows)


def test_run_derive_writes_every_patient_and_the_lines(loaded):
    summary = run_derive(loaded)
    assert (summary.patients, summary.in_cohort, summary.lines) == (3, 2, 4)
    assert summary.excluded == {"no_car_t": 1}
    assert summary.sites == ["site_a", "site_b"]
    text = str(summary)
    assert "2 patients in cohort of 3" in text and "no_car_t 1" in text and "4 lines" in text
    with Session(loaded) as s:
        pats = {(p.site, p.source_id): p for p in s.execute(select(CohortPatient)).scalars()}
        assert pats[("site_a", "2")].exclusion_reason == "no_car_t"
        a1 = pats[("site_a", "1")]
        assert (a1.in_cohort, a1.index_date, a1.progression_date) == (True, d(0), d(150))
        assert a1.progression_basis == "imwg_labs" and a1.patient_key == "k-site_a-1"
        assert pats[("site_b", "1")].death_date == d(420)
        lines = s.execute(select(TherapyLine).where(TherapyLine.site == "site_b")
                          .order_by(TherapyLine.line)).scalars().all()
        assert [ln.drugs for ln in lines] == ["dexamethasone;pomalidomide", "teclistamab"]
        assert [ln.therapy_class for ln in lines] == ["non_tce", "tce"]
        assert lines[1].pfs_event_date == d(420)


def test_rerun_gives_the_same_tables(loaded):
    run_derive(loaded)
    first = (_rows(loaded, CohortPatient), _rows(loaded, TherapyLine))
    run_derive(loaded)
    assert (_rows(loaded, CohortPatient), _rows(loaded, TherapyLine)) == first


def test_site_run_leaves_other_sites_alone(loaded):
    run_derive(loaded)
    with Session(loaded) as s:
        s.execute(TherapyLine.__table__.update().where(TherapyLine.site == "site_b")
                  .values(subclass="marker"))
        s.commit()
    summary = run_derive(loaded, site="site_a")
    assert summary.patients == 2 and summary.sites == ["site_a"]
    with Session(loaded) as s:
        marks = s.execute(select(TherapyLine.site, TherapyLine.subclass)).all()
    assert {sc for site, sc in marks if site == "site_b"} == {"marker"}
    assert "marker" not in {sc for site, sc in marks if site == "site_a"}


def test_failed_run_leaves_the_old_tables(loaded, monkeypatch):
    run_derive(loaded)
    before = (_rows(loaded, CohortPatient), _rows(loaded, TherapyLine))
    calls = {"n": 0}
    real = derived.derive_normalized

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(derived, "derive_normalized", flaky)
    with pytest.raises(RuntimeError):
        run_derive(loaded)
    assert (_rows(loaded, CohortPatient), _rows(loaded, TherapyLine)) == before


def test_full_run_drops_derived_rows_of_vanished_patients(loaded):
    run_derive(loaded)
    with Session(loaded) as s:
        s.execute(Patient.__table__.delete().where(Patient.site == "site_b"))
        s.commit()
    run_derive(loaded)
    with Session(loaded) as s:
        assert s.execute(select(func.count()).select_from(CohortPatient)
                         .where(CohortPatient.site == "site_b")).scalar() == 0


def test_compare_with_truth_reports_each_disagreement(loaded):
    from truth_compare import compare_with_truth

    run_derive(loaded)
    line1 = {"line": 1, "start_date": "2022-08-08", "end_date": "2022-12-26",
             "drugs": ["dexamethasone", "pomalidomide"], "therapy_class": "non_tce",
             "subclass": "imid_pi", "best_response": "SD", "pfs_event_date": None,
             "pfs_censor_date": "2022-08-28"}
    truth = {"patients": [
        {"site": "site_a", "source_id": "1", "in_cohort": True, "exclusion_reason": None,
         "index_date": d(0).isoformat(), "progression_date": d(160).isoformat(),  # 10 days
         "lines": [line1, {**line1, "line": 2, "start_date": d(300).isoformat(),  # 30 days
                           "therapy_class": "tce", "subclass": "bcma_bispecific",
                           "best_response": "PR"}]},
        {"site": "site_a", "source_id": "2", "in_cohort": True, "exclusion_reason": None,
         "index_date": None, "progression_date": None, "lines": []},
    ]}
    report = compare_with_truth(loaded, truth)
    assert report.patients == 2 and report.all_agree == 0
    assert report.agree["cohort"] == 1 and report.agree["progression_date"] == 2
    assert report.agree["line_start"] == 1 and report.agree["n_lines"] == 2
    assert report.agree["best_response"] == 1
    assert any("line_start" in what for _, _, what in report.problems)
    assert "all items 0.0%" in str(report)


@pytest.mark.postgres
def test_run_derive_on_postgresql(pg_url):
    engine = get_engine(pg_url)
    init_db(engine)
    try:
        _load(engine)
        first = run_derive(engine)
        assert (first.patients, first.in_cohort, first.lines) == (3, 2, 4)
        rows = _rows(engine, TherapyLine)
        run_derive(engine, site="site_b")
        assert _rows(engine, TherapyLine) == rows
    finally:
        engine.dispose()


def test_labs_no_rule_reads_only_set_last_contact(loaded):
    """run_derive loads a haemoglobin series as its latest day alone; the row must match
    derive_patient over every lab (the late haemoglobin is the last contact)."""
    from connector.cohort import derive_patient, load_rules
    from connector.cohort.build import load_timelines

    with Session(loaded) as s:
        for day, value in ((500, 11.0), (650, 10.5), (600, 12.0)):
            s.add(LabResult(site="site_a", patient_source_id="1", source_id=f"hb-{day}",
                            analyte="hemoglobin", effective_date=d(day), value=value,
                            unit="g/dL"))
        s.commit()
    rules = load_rules()
    with loaded.connect() as conn:
        full = {tl.patient.source_id: tl for tl in load_timelines(conn, "site_a")}
        lean = {tl.patient.source_id: tl for tl in load_timelines(conn, "site_a", rules)}
    hb = [lab for lab in lean["1"].labs if lab.analyte == "hemoglobin"]
    assert [(lab.date, lab.value) for lab in hb] == [(d(650), None)]
    assert len(full["1"].labs) == len(lean["1"].labs) + 2
    tl = full["1"]
    expected, lines = derive_patient(tl.patient, tl.exposures, tl.procedures, tl.labs, rules)
    assert expected.last_contact_date == d(650)
    run_derive(loaded, site="site_a")
    with Session(loaded) as s:
        row = s.execute(select(CohortPatient).where(CohortPatient.site == "site_a",
                                                    CohortPatient.source_id == "1")).scalar_one()
        n_lines = s.execute(select(func.count()).select_from(TherapyLine).where(
            TherapyLine.site == "site_a", TherapyLine.source_id == "1")).scalar_one()
    assert row.last_contact_date == d(650)
    assert row.progression_date == expected.progression_date
    assert n_lines == len(lines)
