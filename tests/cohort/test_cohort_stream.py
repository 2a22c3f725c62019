"""Streamed derive: the normalized tables are walked patient by patient (and, for large
runs, in worker processes), giving the same derived tables as deriving each hand-built
timeline on its own, whatever order the database sorts patient ids in."""

from __future__ import annotations

import logging
import random
import tracemalloc
from collections import Counter

import pytest
from cohort_builders import RULES, course, d, drug, flc, index_cilta, lab, proc, serum
from sqlalchemy import insert, select
from sqlmodel import Session

import connector.cohort.build as build
import connector.cohort.derived as derived
import connector.cohort.timelines as reading
import connector.cohort.workers as pool
from connector.cohort import derive_patient, run_derive
from connector.cohort.model import PatientInfo, PatientTimeline
from connector.db import get_engine, init_db
from connector.db.models import (
    CohortPatient,
    LabResult,
    MedicationExposure,
    Patient,
    ProcedureEvent,
    TherapyLine,
)

# ids whose order differs between byte order, numeric order and case-blind collations
IDS = ["10", "9", "a", "B", "_x", "a-2", "A1", "p 3", "Zed", "zz", "ä1", "0"]
SITES = ["site_b", "site_a", "Site_C"]


def _timeline(rng: random.Random, site: str, pid: str) -> PatientTimeline:
    """A varied course: CAR-T or not, relapse by serum or FLC or none, later lines, death."""
    kind = rng.choice(["relapse", "relapse", "flc", "no_car_t", "no_progression"])
    death = rng.choice([None, None, 420 + rng.randint(0, 200)])
    info = PatientInfo(site, pid, f"key-{site}-{pid}", 1940 + rng.randint(0, 30),
                       rng.choice(["male", "female", None]),
                       d(death) if death is not None else None)
    exposures, procedures = index_cilta(0) if kind != "no_car_t" else ([], [])
    start = 160 + rng.randint(0, 20)
    exposures += course(["pomalidomide", "dexamethasone"], start, start + 140)
    exposures += course(["teclistamab"], start + 170, start + 240, every=7)
    if rng.random() < 0.5:
        exposures.append(drug("daratumumab", start + 300, start + 330))
        procedures.append(proc("radiation", start + 310))
    labs = []
    if kind in ("relapse", "no_car_t"):
        labs += serum((-7, 3.0), (30, 1.0), (60, 0.3), (90, 0.2), (120, 0.2), (150, 0.8),
                      (180, 1.1), (start + 200, 0.6))
    elif kind == "flc":
        labs += flc((-7, 400, 10), (30, 60, 10), (60, 20, 10), (120, 200, 10), (150, 300, 10))
    else:
        labs += serum((-7, 3.0), (30, 1.0), (60, 0.3), (90, 0.2))
    labs += [lab("hemoglobin", day, 11.0 + rng.random(), unit="g/dL")
             for day in range(0, 400 + rng.randint(0, 300), 45)]
    if rng.random() < 0.3:
        labs.append(lab("serum_ife", 200, code="negative"))
    return PatientTimeline(info, exposures, procedures, labs)


def _cohort(seed: int = 5) -> list[PatientTimeline]:
    rng = random.Random(seed)
    return [_timeline(rng, site, pid) for site in SITES for pid in IDS]


def _orphans() -> list[PatientTimeline]:
    """Rows whose patient has no patient row: before, between and after the real keys."""
    rng = random.Random(9)
    return [_timeline(rng, site, pid) for site, pid in
            [("Aaa", "1"), ("site_a", "!first"), ("site_a", "9b"), ("site_b", "~last"),
             ("zzz", "1")]]


def _fill(engine, timelines: list[PatientTimeline], orphans: list[PatientTimeline]) -> None:  # noqa: ANN001
    patients, exposures, procedures, labs = [], [], [], []
    for tl, known in [(tl, True) for tl in timelines] + [(tl, False) for tl in orphans]:
        p = tl.patient
        if known:
            patients.append({"site": p.site, "source_id": p.source_id,
                             "patient_key": p.patient_key, "birth_year": p.birth_year,
                             "sex": p.sex, "death_date": p.death_date})
        common = {"site": p.site, "patient_source_id": p.source_id}
        exposures += [{**common, "source_type": "MedicationAdministration",
                       "source_id": f"m{n}", "ingredient": e.ingredient,
                       "drug_class": e.drug_class, "start_date": e.start, "end_date": e.end}
                      for n, e in enumerate(tl.exposures)]
        procedures += [{**common, "source_id": f"p{n}", "category": pr.category,
                        "product": pr.product, "performed_date": pr.date, "end_date": pr.end}
                       for n, pr in enumerate(tl.procedures)]
        labs += [{**common, "source_id": f"l{n}", "analyte": x.analyte,
                  "effective_date": x.date, "value": x.value, "unit": x.unit,
                  "value_code": x.value_code} for n, x in enumerate(tl.labs)]
    with engine.begin() as conn:
        for model, rows in ((Patient, patients), (MedicationExposure, exposures),
                            (ProcedureEvent, procedures), (LabResult, labs)):
            rows.reverse()  # the database must order them, not the insertion
            conn.execute(insert(model.__table__), rows)


def _expected(timelines: list[PatientTimeline]) -> tuple[list[tuple], list[tuple]]:
    """Each hand-built timeline derived on its own, as rows like ``_rows`` gives them."""
    patients, lines = [], []
    for tl in timelines:
        rec, recs = derive_patient(
            tl.patient, sorted(tl.exposures, key=lambda e: (e.start, e.ingredient)),
            sorted(tl.procedures, key=lambda p: (p.date, p.category, p.product)),
            sorted(tl.labs, key=lambda x: (x.date, x.analyte)), RULES)
        patients.append(derived.patient_row(rec))
        lines += [derived.line_row(rec, line) for line in recs]
    return _as_rows(patients), _as_rows(lines)


def _as_rows(dicts: list[dict]) -> list[tuple]:
    return sorted(tuple(str(v) for _, v in sorted(row.items())) for row in dicts)


def _rows(engine, model) -> list[tuple]:  # noqa: ANN001
    with Session(engine) as s:
        rows = s.execute(select(model)).scalars().all()
        return _as_rows([{k: v for k, v in r.model_dump().items() if k != "id"} for r in rows])


@pytest.fixture
def cohort_db(engine):
    timelines = _cohort()
    _fill(engine, timelines, _orphans())
    return engine, timelines


def _check(engine, timelines: list[PatientTimeline], workers: int, caplog) -> None:  # noqa: ANN001
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="connector.cohort.timelines"):
        summary = run_derive(engine, workers=workers)
    patients, lines = _expected(timelines)
    assert _rows(engine, CohortPatient) == patients
    assert _rows(engine, TherapyLine) == lines
    assert summary.patients == len(timelines) and summary.lines == len(lines)
    assert summary.sites == sorted(SITES)
    assert 0 < summary.in_cohort < len(timelines)
    orphans = _orphans()
    counts = Counter()
    for tl in orphans:
        counts["medication_exposure"] += len(tl.exposures)
        counts["procedure_event"] += len(tl.procedures)
        counts["lab_result"] += len(tl.labs)
    logged = sorted(r.getMessage() for r in caplog.records)
    assert logged == sorted(f"{n} {table} rows have no patient row; ignored"
                            for table, n in counts.items())


def test_streamed_derive_equals_each_timeline_derived_alone(cohort_db, caplog):
    engine, timelines = cohort_db
    _check(engine, timelines, 1, caplog)


def test_worker_processes_give_the_same_tables(cohort_db, caplog, monkeypatch):
    engine, timelines = cohort_db
    monkeypatch.setattr(pool, "CHUNK_PATIENTS", 5)  # ranges start and end mid-site
    _check(engine, timelines, 2, caplog)
    _check(engine, timelines, 1, caplog)  # and a rerun in-process replaces them exactly


def test_a_failing_worker_leaves_the_old_tables(cohort_db, monkeypatch):
    engine, timelines = cohort_db
    run_derive(engine, workers=1)
    before = (_rows(engine, CohortPatient), _rows(engine, TherapyLine))
    with engine.begin() as conn:  # a date no driver or converter can read
        conn.exec_driver_sql(
            "INSERT INTO medication_exposure (site, patient_source_id, source_type, source_id,"
            " ingredient, drug_class, start_date) VALUES ('site_b', 'zz', 'x', 'bad',"
            " 'dexamethasone', 'steroid', 'not a date')")
    monkeypatch.setattr(pool, "CHUNK_PATIENTS", 5)
    with pytest.raises(ValueError):
        run_derive(engine, workers=2)
    assert (_rows(engine, CohortPatient), _rows(engine, TherapyLine)) == before


def test_a_site_run_reads_only_that_site(cohort_db):
    engine, timelines = cohort_db
    run_derive(engine, site="site_a")
    site_a = [tl for tl in timelines if tl.patient.site == "site_a"]
    assert _rows(engine, CohortPatient) == _expected(site_a)[0]


def test_timelines_come_one_patient_at_a_time_in_database_order(cohort_db):
    engine, timelines = cohort_db
    with engine.connect() as conn:
        order = [tuple(r) for r in conn.execute(
            select(Patient.site, Patient.source_id).order_by(Patient.site, Patient.source_id))]
        stream = reading.iter_timelines(conn, rules=RULES)
        first = next(stream)
        assert (first.patient.site, first.patient.source_id) == order[0]
        rest = list(stream)
    assert [(tl.patient.site, tl.patient.source_id) for tl in [first, *rest]] == order
    by_key = {(tl.patient.site, tl.patient.source_id): tl for tl in timelines}
    for tl in [first, *rest]:
        made = by_key[(tl.patient.site, tl.patient.source_id)]
        assert tl.patient == made.patient
        assert tl.exposures == sorted(made.exposures, key=lambda e: (e.start, e.ingredient))
        assert tl.procedures == sorted(made.procedures, key=lambda p: (p.date, p.category))
        rule_labs = [x for x in made.labs if x.analyte != "hemoglobin"]
        assert [x for x in tl.labs if x.analyte != "hemoglobin"] == sorted(
            rule_labs, key=lambda x: (x.date, x.analyte))
        hb = max(x.date for x in made.labs if x.analyte == "hemoglobin")
        assert [(x.date, x.value) for x in tl.labs if x.analyte == "hemoglobin"] == [(hb, None)]


def test_streaming_holds_one_patient_not_all(engine, monkeypatch):
    """Peak memory while walking 150 patients of 300 records each stays a small share of
    what holding every timeline takes (the loader before streaming held them all)."""
    rng = random.Random(3)
    timelines = []
    for n in range(150):
        tl = _timeline(rng, "site_a", f"p{n:03d}")
        tl.exposures += course(["dexamethasone"], 500, 500 + 299, every=1)  # 300 more rows
        timelines.append(tl)
    _fill(engine, timelines, [])
    monkeypatch.setattr(reading, "FETCH_ROWS", 50)

    def peak(walk) -> int:  # noqa: ANN001
        with engine.connect() as conn:
            tracemalloc.start()
            try:
                walk(conn)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    def stream(conn) -> None:  # noqa: ANN001
        for _ in reading.iter_timelines(conn, rules=RULES):
            pass

    peak(stream)  # compiles and caches the statements, which is no patient data
    streamed = peak(stream)
    held = peak(lambda conn: reading.load_timelines(conn, rules=RULES))
    assert streamed * 8 < held, (streamed, held)


def test_the_walk_follows_the_database_collation_not_python_order():
    """Keys in a case-blind order (as an ICU collation sorts): ranks, not Python string
    comparison, line the streams up; orphans anywhere are counted and skipped."""
    keys = [("s", "a"), ("s", "B"), ("s", "c")]  # Python would put "B" first
    ranks = {k: n for n, k in enumerate(keys)}
    groups = iter([(("s", "0"), [(1,)]), (("s", "a"), ["a1", "a2"]), (("s", "b0"), [(1,), (2,)]),
                   (("s", "c"), ["c1"]), (("s", "z"), [(1,)])])
    orphans: Counter[str] = Counter()
    stream = reading.Stream("exposures", "medication_exposure", groups, ranks, orphans)
    assert [stream.take(n) for n in range(3)] == [["a1", "a2"], [], ["c1"]]
    stream.drain()
    assert orphans == {"medication_exposure": 4}

    backwards = reading.Stream("exposures", "medication_exposure",
                              iter([(("s", "c"), ["c1"]), (("s", "a"), ["a1"])]), ranks,
                              Counter())
    assert backwards.take(0) == [] and backwards.take(1) == [] and backwards.take(2) == ["c1"]
    with pytest.raises(RuntimeError, match="not in the patient order"):
        backwards.drain()


def test_chunks_cover_every_key_once():
    keys = [("a", str(n)) for n in range(11)]
    chunks = pool._chunks(keys, 4)
    assert [n for _, n in chunks] == [4, 4, 3]
    assert [b for b, _ in chunks] == [(None, ("a", "4")), (("a", "4"), ("a", "8")),
                                      (("a", "8"), None)]
    assert pool._chunks([], 4) == []


def test_small_or_memory_databases_derive_in_process(engine):
    with engine.connect() as conn:
        assert pool.worker_count(engine, conn, 10) == 1
        assert pool.worker_count(engine, conn, 50_000) in (1, 2)
    memory = get_engine("sqlite://")
    init_db(memory)
    with memory.connect() as conn:
        assert pool.worker_count(memory, conn, 50_000) == 1


@pytest.mark.postgres
def test_postgresql_with_a_collation_unlike_python(pg_url, caplog, monkeypatch):
    """On PostgreSQL, with the key columns in an ICU collation (``_x`` before ``a``, ``a``
    before ``B``), in-process and worker derives equal each timeline derived alone."""
    engine = get_engine(pg_url)
    init_db(engine)
    try:
        with engine.begin() as conn:
            for table, column in (("patient", "source_id"), ("medication_exposure",
                                  "patient_source_id"), ("procedure_event", "patient_source_id"),
                                  ("lab_result", "patient_source_id")):
                conn.exec_driver_sql(f'ALTER TABLE {table} ALTER COLUMN {column} '
                                     f'TYPE VARCHAR COLLATE "und-x-icu"')
            order = [r[0] for r in conn.exec_driver_sql(
                "SELECT x FROM (VALUES ('a'), ('B'), ('_x')) v(x) "
                'ORDER BY x COLLATE "und-x-icu"')]
        assert order != sorted(order)  # the point of the test: not Python's order
        timelines = _cohort()
        _fill(engine, timelines, _orphans())
        monkeypatch.setattr(pool, "CHUNK_PATIENTS", 5)
        monkeypatch.setattr(build, "WRITE_ROWS", 7)  # writes between server-side fetches
        monkeypatch.setattr(reading, "FETCH_ROWS", 50)
        _check(engine, timelines, 1, caplog)
        _check(engine, timelines, 2, caplog)
    finally:
        engine.dispose()
