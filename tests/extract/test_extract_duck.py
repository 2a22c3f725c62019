"""The DuckDB load path (connector/extract/duck.py): Observations no lab code maps are
dropped in SQL and counted by code, and everything downstream is what the Python path gives."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from connector import pipeline
from connector.codes.codesets import DEFAULT_DIR
from connector.db.models import RawCodeCount
from connector.extract.duck import duck_connection, observation_codes
from connector.fhir.errors import SiteConfigError
from connector.mapping.unmapped import write_unmapped

ROOT = Path(__file__).resolve().parents[2]
LOINC = "http://loinc.org"
HEART_RATE = {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}
M_PROTEIN = {"coding": [{"system": LOINC, "code": "33358-3"}]}
ROUTINE = [
    HEART_RATE,
    {"coding": [{"system": LOINC, "code": "2345-7", "display": "Glucose"}], "text": "Glucose"},
    {"coding": [{"code": "GLU"}]},  # no system
    {"text": "Blood pressure panel"},  # text only
    {"coding": "not a list"},
    {"coding": [{"system": "urn:oid:1.2.3", "code": "X1"},
                {"system": LOINC, "code": "8310-5", "display": "Body temperature"}]},
    # a second coding a code set maps: kept whole
    {"coding": [{"system": "urn:oid:1.2.3", "code": "MPROT"}, {"system": LOINC,
                                                                "code": "33358-3"}]},
]
NORMALIZED = ("patient", "medication_exposure", "procedure_event", "lab_result", "quarantine")
VOLATILE = {"id", "fetched_at", "created_at", "loaded_at"}


def _obs(oid: str, code: dict | None, value: float = 1.0, version: str = "1") -> dict:
    res = {"resourceType": "Observation", "id": oid, "status": "final",
           "meta": {"versionId": version, "lastUpdated": f"2024-02-0{version}T00:00:00Z"},
           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-10",
           "valueQuantity": {"value": value, "unit": "g/dL"}}
    if code is not None:
        res["code"] = code
    return res


def _routine_cohort(tmp_path: Path) -> Path:
    """The bundled cohort with routine results of every shape above added to each site,
    some in a gzip file of their own."""
    target = tmp_path / "cohort"
    shutil.copytree(ROOT / "fixtures" / "cohort", target,
                    ignore=shutil.ignore_patterns("ground_truth.json"))
    for site in sorted(p for p in target.iterdir() if p.is_dir()):
        patients = [orjson.loads(line)["id"] for line in
                    (site / "Patient.ndjson").read_bytes().splitlines() if line.strip()]
        lines = []
        for i in range(700):
            res = _obs(f"{site.name}-routine-{i}", ROUTINE[i % len(ROUTINE)], float(i % 50))
            res["subject"] = {"reference": f"Patient/{patients[i % len(patients)]}"}
            res["effectiveDateTime"] = f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}"
            lines.append(orjson.dumps(res))
        with (site / "Observation.ndjson").open("ab") as fh:
            fh.write(b"\n".join(lines[:500]) + b"\n")
        (site / "Routine.ndjson.gz").write_bytes(gzip.compress(b"\n".join(lines[500:])))
    return target


def _snapshot(engine: sa.Engine, tables: tuple[str, ...] = NORMALIZED) -> dict[str, list]:
    meta = sa.MetaData()
    meta.reflect(engine, only=list(tables))
    out = {}
    with engine.connect() as conn:
        for name in tables:
            cols = [c for c in meta.tables[name].columns if c.name not in VOLATILE]
            out[name] = sorted((tuple(r) for r in conn.execute(sa.select(*cols))), key=repr)
    return out


def _load(tmp_path: Path, source: Path, name: str, loader: str) -> tuple[sa.Engine, tuple]:
    engine = pipeline.open_db(f"sqlite:///{tmp_path / name}.db")
    extracted = pipeline.extract(engine, str(source), loader=loader)
    mapped = pipeline.map_(engine)
    write_unmapped(engine, tmp_path / f"{name}.csv")
    facts = (extracted.read, extracted.quarantined, dict(mapped.rows), mapped.unmapped,
             mapped.quarantined, mapped.excluded, mapped.duplicates,
             (tmp_path / f"{name}.csv").read_text())
    return engine, facts


def test_normalized_tables_are_those_of_the_python_path(tmp_path):
    source = _routine_cohort(tmp_path)
    py_engine, py_facts = _load(tmp_path, source, "python", "python")
    duck_engine, duck_facts = _load(tmp_path, source, "duck", "duckdb")
    assert duck_facts == py_facts
    assert _snapshot(duck_engine) == _snapshot(py_engine)
    with duck_engine.connect() as conn:
        raw = dict(conn.execute(sa.text(
            "SELECT trimmed IS NULL, count(*) FROM raw_resource GROUP BY 1")).all())
        counted = conn.execute(sa.select(sa.func.sum(RawCodeCount.n))).scalar_one()
    # no raw row for the routine results, only their counts: 6 of 7 shapes, 1400 lines
    assert counted == 1200 and raw == {True: raw[True]}
    # yet their days reach the last contact, as on the Python path (patient rows equal)
    with duck_engine.connect() as conn:
        latest = conn.execute(sa.text("SELECT max(last_record_date) FROM patient")).scalar()
    assert str(latest) == "2023-12-28"
    assert py_facts[3] >= 1200  # the unmapped count includes them on both paths


def test_a_second_load_replaces_the_counts(tmp_path):
    source = _routine_cohort(tmp_path)
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db'}.db")
    first = pipeline.extract(engine, str(source), loader="duckdb")
    before = _snapshot(engine, ("raw_resource", "raw_code_count"))
    again = pipeline.extract(engine, str(source), loader="duckdb")
    assert _snapshot(engine, ("raw_resource", "raw_code_count")) == before
    assert first.counts.counted == again.counts.counted
    assert again.counts.stored == 0 and sum(again.counts.unchanged.values()) > 0


def test_python_then_duckdb_counts_nothing_twice(tmp_path):
    """Rows an earlier Python load stored trimmed stay the raw store's to decide."""
    source = _routine_cohort(tmp_path)
    _engine, py_facts = _load(tmp_path, source, "python", "python")
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'python'}.db")
    again = pipeline.extract(engine, str(source), loader="duckdb")
    assert sum(again.counts.counted.values()) == 0 and again.counts.stored == 0
    mapped = pipeline.map_(engine)
    assert mapped.unmapped == py_facts[3]


def test_an_observation_recoded_to_a_routine_code_loses_its_stored_body(tmp_path):
    folder = tmp_path / "src" / "s1"
    folder.mkdir(parents=True)
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female",
               "birthDate": "1960-01-01"}
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    obs = folder / "Observation.ndjson"
    obs.write_bytes(orjson.dumps(_obs("lab", M_PROTEIN)) + b"\n")
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db'}.db")
    pipeline.extract(engine, str(tmp_path / "src"), loader="duckdb")
    assert pipeline.map_(engine).rows["lab_result"] == 1

    obs.write_bytes(orjson.dumps(_obs("lab", HEART_RATE, version="2")) + b"\n")
    second = pipeline.extract(engine, str(tmp_path / "src"), loader="duckdb")
    assert second.counts.updated["Observation"] == 1  # went to the raw store, not counted
    mapped = pipeline.map_(engine)
    assert mapped.rows["lab_result"] == 0 and mapped.unmapped == 1


def test_a_file_duckdb_cannot_read_is_loaded_line_by_line(tmp_path):
    folder = tmp_path / "src" / "s1"
    folder.mkdir(parents=True)
    good = [_obs("hr", HEART_RATE), _obs("lab", M_PROTEIN)]
    (folder / "Observation.ndjson").write_bytes(
        b"\xef\xbb\xbf" + orjson.dumps(good[0]) + b"\r\n{\"resourceType\": \"Obs\n"
        + orjson.dumps(good[1]) + b"\n")
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db'}.db")
    summary = pipeline.extract(engine, str(tmp_path / "src"), loader="duckdb")
    assert summary.read == 3 and summary.quarantined == 1
    with engine.connect() as conn:
        reasons = conn.execute(sa.text("SELECT reason FROM quarantine")).scalars().all()
    assert reasons and reasons[0].startswith("invalid JSON")
    assert summary.counts.new["Observation"] == 2  # the Python path: trimmed row for hr


def test_bad_resources_reach_the_raw_store_and_are_quarantined(tmp_path):
    """Lines DuckDB reads but that are no usable resource are never dropped in SQL."""
    folder = tmp_path / "src" / "s1"
    folder.mkdir(parents=True)
    lines = [orjson.dumps(x) for x in (
        [1, 2], "text", {"resourceType": "Observation", "code": HEART_RATE},  # no id
        {"resourceType": "Observation", "id": "x" * 65, "code": HEART_RATE},
        {"resourceType": "Observation", "id": 7, "code": HEART_RATE},
        {"id": "no-type", "code": HEART_RATE}, _obs("hr", HEART_RATE))]
    (folder / "Observation.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db'}.db")
    summary = pipeline.extract(engine, str(tmp_path / "src"), loader="duckdb")
    assert summary.read == 7 and summary.quarantined == 6
    assert summary.counts.counted["Observation"] == 1


def test_the_stale_code_check_reads_the_counts(tmp_path, monkeypatch):
    folder = tmp_path / "src" / "s1"
    folder.mkdir(parents=True)
    hr = dict(_obs("hr", HEART_RATE), effectiveDateTime="2024-01-20")
    (folder / "Observation.ndjson").write_bytes(
        orjson.dumps(hr) + b"\n" + orjson.dumps(_obs("lab", M_PROTEIN)))
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(
        {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-01-01"}))
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db'}.db")
    pipeline.extract(engine, str(tmp_path / "src"), loader="duckdb")
    assert pipeline.map_(engine).stale_trimmed == 0
    target = tmp_path / "mappings_v2"
    shutil.copytree(DEFAULT_DIR, target)
    with (target / "labs.csv").open("a", encoding="utf-8") as fh:
        fh.write("loinc,8867-4,serum_m_protein,Heart rate,unconfirmed,test only\n")
    monkeypatch.setenv("COHORT_MAPPINGS_DIR", str(target))
    assert pipeline.map_(engine).stale_trimmed == 1
    again = pipeline.extract(engine, str(tmp_path / "src"), loader="duckdb")  # read again
    assert again.counts.new["Observation"] == 1 and not again.counts.counted
    mapped = pipeline.map_(engine)
    assert mapped.stale_trimmed == 0 and mapped.rows["lab_result"] == 2


def test_unmapped_report_counts_codes_from_sql(tmp_path):
    folder = tmp_path / "src" / "s1"
    folder.mkdir(parents=True)
    resources = [_obs(f"hr{i}", HEART_RATE) for i in range(5)] + [_obs("lab", M_PROTEIN)]
    (folder / "Observation.ndjson").write_bytes(b"\n".join(map(orjson.dumps, resources)))
    (folder / "Patient.ndjson").write_bytes(orjson.dumps({"resourceType": "Patient", "id": "p1"}))
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db'}.db")
    pipeline.extract(engine, str(tmp_path / "src"), loader="duckdb")
    pipeline.map_(engine)  # the map stage counts the unmapped codes (issue 14 item 3)
    write_unmapped(engine, tmp_path / "u.csv")
    rows = list(csv.DictReader((tmp_path / "u.csv").open()))
    assert [(r["code"], r["display"], r["count"]) for r in rows] == [("8867-4", "Heart rate", "5")]


def test_observation_codes_counts_lines_like_the_python_path(tmp_path):
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"\n" + orjson.dumps(_obs("a", HEART_RATE)) + b"\r\n   \n"
                     + orjson.dumps(_obs("b", HEART_RATE)) + b"\n"
                     + orjson.dumps({"resourceType": "Patient", "id": "p"}))
    with duck_connection() as con:
        lines, codes = observation_codes(con, path)
    assert lines == 3 and list(codes.values()) == [2]
    assert orjson.loads(next(iter(codes))) == HEART_RATE


def test_loader_option_is_checked(tmp_path, engine):
    with pytest.raises(SiteConfigError, match="--loader"):
        pipeline.extract(engine, str(ROOT / "fixtures" / "cohort"), loader="spark")
    with pytest.raises(SiteConfigError, match="folder and Bulk"):
        pipeline.extract(engine, "http://127.0.0.1:9/fhir", loader="duckdb")


def test_contacts_of_counted_observations_follow_the_python_rule(tmp_path):
    """The first scan's days (one pass for codes and contacts) equal ``contact_of``."""
    from connector.extract.contact import contact_of, merge_day
    from connector.extract.duck import observation_contacts, observation_scan

    def obs(oid: str, code: dict, **fields) -> dict:
        res = {"resourceType": "Observation", "id": oid, "status": "final", "code": code}
        res.update(fields)
        return res

    today = "2026-06-01"
    subject = {"reference": "Patient/p1"}
    resources = [
        obs("a", HEART_RATE, subject=subject, effectiveDateTime="2024-01-10T08:00:00Z",
            issued="2024-02-01T10:00:00.000Z"),
        obs("b", HEART_RATE, subject={"reference": "Patient/p2"}, status="entered-in-error",
            effectiveDateTime="2025-05-05"),
        obs("c", HEART_RATE, subject={"reference": "Patient/p2"}, effectiveDateTime="2023-03-03"),
        obs("d", ROUTINE[1], subject={"reference": "Patient/p3"},
            effectivePeriod={"start": "2022-02-02", "end": "2999-01-01"}),
        obs("e", HEART_RATE, effectiveDateTime="2024-01-01"),  # no subject
        obs("f", HEART_RATE, subject={"reference": ""}, effectiveDateTime="2024-01-01"),
        obs("g", HEART_RATE, subject={"reference": "Patient/p4"}, effectiveDateTime="unknown"),
        obs("h", M_PROTEIN, subject={"reference": "Patient/p5"}, effectiveDateTime="2024-04-04"),
        obs("i", HEART_RATE, subject={"reference": "Patient/p6"}, effectiveInstant="2021-01-01T"
            "00:00:00Z", issued=2024),
        {"resourceType": "Patient", "id": "p1"},
    ]
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in resources))
    expected: dict = {}
    for res in resources:
        if res["resourceType"] == "Observation" and res["code"] is not M_PROTEIN:
            found = contact_of(res, today)
            if found:
                merge_day(expected, "s", *found)
    with duck_connection() as con:
        lines, codes = observation_scan(con, path, today)
        con.execute("CREATE TABLE unused (v VARCHAR)")
        con.execute("INSERT INTO unused SELECT unnest(?::VARCHAR[])",
                    [[c for c in codes if orjson.loads(c) != M_PROTEIN]])
        got = dict(observation_contacts(con))
    assert lines == len(resources)
    assert got == {ref: day for (_, ref), day in expected.items()}
    assert got == {"Patient/p1": "2024-02-01", "Patient/p2": "2023-03-03",
                   "Patient/p3": "2022-02-02", "Patient/p6": "2021-01-01"}
