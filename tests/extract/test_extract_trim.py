"""Observations no lab code set maps are stored as their code only (connector.codes.labfilter):
same normalized tables and reports as whole bodies, and a mapping change brings them back."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import orjson
import pytest
import requests
from fhir_server import FHIR_JSON
from sqlalchemy import select
from sqlmodel import Session

from connector.codes.codesets import DEFAULT_DIR
from connector.codes.labfilter import KEEP_ALL_ENV, TRIMMED_KEYS, default_trim
from connector.db import get_engine, init_db
from connector.db.models import LabResult, Quarantine, RawResource
from connector.extract import run_extract
from connector.extract.remote import extract_remote
from connector.mapping import run_map
from connector.mapping.unmapped import write_unmapped

ROOT = Path(__file__).resolve().parents[2]
LOINC = "http://loinc.org"


def _obs(oid: str, code: dict | None, value: float = 1.0) -> dict:
    res = {"resourceType": "Observation", "id": oid, "status": "final",
           "meta": {"versionId": "1", "lastUpdated": "2024-02-01T00:00:00Z"},
           "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-10",
           "valueQuantity": {"value": value, "unit": "g/dL"}}
    if code is not None:
        res["code"] = code
    return res


HEART_RATE = {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]}
M_PROTEIN = {"coding": [{"system": LOINC, "code": "33358-3"}]}


def _write(folder: Path, resources: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female",
               "birthDate": "1960-01-01"}
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    (folder / "Observation.ndjson").write_bytes(b"\n".join(map(orjson.dumps, resources)) + b"\n")


def _raw(engine) -> dict[str, RawResource]:
    with Session(engine) as s:
        rows = s.exec(select(RawResource)).scalars().all()
        for r in rows:
            s.expunge(r)
    return {r.resource_id: r for r in rows}


def _mappings_with_heart_rate(tmp_path: Path) -> Path:
    """A copy of mappings/ in which heart rate is (for the test's sake) a study lab."""
    target = tmp_path / "mappings_v2"
    shutil.copytree(DEFAULT_DIR, target)
    with (target / "labs.csv").open("a", encoding="utf-8") as fh:
        fh.write("loinc,8867-4,serum_m_protein,Heart rate,unconfirmed,test only\n")
    return target


def test_unused_observations_keep_only_their_code(engine, tmp_path):
    hr, lab, bad = _obs("hr", HEART_RATE), _obs("lab", M_PROTEIN), _obs("nocode", None)
    _write(tmp_path / "src" / "s1", [hr, lab, bad])
    run_extract(engine, str(tmp_path / "src"))
    raw = _raw(engine)

    digest = default_trim().digest
    assert raw["hr"].trimmed == digest
    body = orjson.loads(raw["hr"].body)
    assert set(body) <= set(TRIMMED_KEYS) and body["code"] == HEART_RATE
    assert "valueQuantity" not in body and "subject" not in body
    # the hash is still that of the whole resource, as every source computes it
    whole = orjson.dumps(hr, option=orjson.OPT_SORT_KEYS)
    assert raw["hr"].content_hash == hashlib.sha256(whole).hexdigest()
    # a study lab, and an Observation whose code is missing, are kept whole
    assert raw["lab"].trimmed is None and orjson.loads(raw["lab"].body) == lab
    assert raw["nocode"].trimmed is None

    summary = run_map(engine)
    assert summary.rows["lab_result"] == 1 and summary.unmapped == 1
    with Session(engine) as s:
        reasons = [r for (r,) in s.exec(select(Quarantine.reason).where(Quarantine.stage == "map"))]
    assert "missing code" in reasons  # quarantined by the map stage, as before

    out = tmp_path / "unmapped.csv"
    write_unmapped(engine, out)
    rows = list(csv.DictReader(out.open()))
    assert [(r["code"], r["display"], r["count"]) for r in rows] == [("8867-4", "Heart rate", "1")]


ROUTINE = [  # shapes of unused results seen in real extracts
    {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}]},
    {"coding": [{"system": LOINC, "code": "2345-7", "display": "Glucose"}], "text": "Glucose"},
    {"coding": [{"code": "GLU"}]},  # no system
    {"text": "Blood pressure panel"},  # text only
    {"coding": [{"system": "urn:oid:1.2.3", "code": "X1"},
                {"system": LOINC, "code": "8310-5", "display": "Body temperature"}]},
    # a second coding that a code set maps: the resource is kept whole
    {"coding": [{"system": "urn:oid:1.2.3", "code": "MPROT"}, {"system": LOINC,
                                                                "code": "33358-3"}]},
]


def _lab_heavy_copy(tmp_path: Path) -> Path:
    """site_a of the bundled cohort plus routine Observations of every shape above."""
    target = tmp_path / "site_a"
    shutil.copytree(ROOT / "fixtures" / "cohort" / "site_a", target)
    patients = [orjson.loads(line)["id"] for line in
                (target / "Patient.ndjson").read_bytes().splitlines() if line.strip()]
    extra = []
    for i in range(600):
        res = _obs(f"routine-{i}", ROUTINE[i % len(ROUTINE)], float(i % 50))
        res["subject"] = {"reference": f"Patient/{patients[i % len(patients)]}"}
        res["effectiveDateTime"] = f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}"
        extra.append(orjson.dumps(res))
    with (target / "Observation.ndjson").open("ab") as fh:
        fh.write(b"\n".join(extra) + b"\n")
    return target


def test_trimmed_and_whole_bodies_give_the_same_tables_and_reports(tmp_path, monkeypatch):
    """On the bundled cohort with routine results added: normalized tables, counts and
    the unmapped report agree."""
    source = _lab_heavy_copy(tmp_path)

    def load(name: str) -> tuple:
        engine = get_engine(f"sqlite:///{tmp_path / name}.db")
        init_db(engine)
        run_extract(engine, str(source), site="site_a")
        summary = run_map(engine)
        write_unmapped(engine, tmp_path / f"{name}.csv")
        with Session(engine) as s:
            labs = sorted((r.patient_source_id, r.analyte, r.effective_date, r.value)
                          for r in s.exec(select(LabResult)).scalars())
            trimmed = sum(1 for r in s.exec(select(RawResource.trimmed)).scalars() if r)
            shapes = {b for b, t in s.exec(select(RawResource.body, RawResource.trimmed)) if t}
            assert len(shapes) == (5 if trimmed else 0)  # one body per distinct code
        engine.dispose()
        return (summary.rows, summary.unmapped, summary.quarantined, labs,
                (tmp_path / f"{name}.csv").read_text()), trimmed

    trimmed_run, n_trimmed = load("trimmed")
    monkeypatch.setenv(KEEP_ALL_ENV, "1")
    whole_run, n_whole = load("whole")
    assert n_whole == 0 and n_trimmed == 500  # the sixth shape is a study lab
    assert trimmed_run == whole_run


def test_a_mapping_change_brings_trimmed_observations_back(engine, tmp_path, monkeypatch):
    _write(tmp_path / "src" / "s1", [_obs("hr", HEART_RATE, 72.0), _obs("lab", M_PROTEIN)])
    run_extract(engine, str(tmp_path / "src"))
    assert _raw(engine)["hr"].trimmed is not None
    assert run_map(engine).stale_trimmed == 0

    monkeypatch.setenv("COHORT_MAPPINGS_DIR", str(_mappings_with_heart_rate(tmp_path)))
    summary = run_map(engine)
    assert summary.stale_trimmed == 1 and "extract again" in str(summary)

    again = run_extract(engine, str(tmp_path / "src"))  # the same file, read again
    assert again.counts.updated["Observation"] == 1 and again.counts.unchanged["Observation"] == 1
    raw = _raw(engine)
    assert raw["hr"].trimmed is None and orjson.loads(raw["hr"].body)["valueQuantity"]
    assert run_map(engine).stale_trimmed == 0


def test_rest_reads_observations_whole_again_after_a_mapping_change(fresh_server, make_engine,
                                                                     tmp_path, monkeypatch):
    server, _proxy = fresh_server
    pid = server.read("Patient", sorted(_patient_ids(server))[0])["id"]
    vital = _obs("vital-1", HEART_RATE, 80.0)
    vital["subject"] = {"reference": f"Patient/{pid}"}
    vital.pop("meta")
    r = requests.put(f"{server.direct_url}/Observation/vital-1", data=orjson.dumps(vital),
                     headers={"Content-Type": FHIR_JSON}, timeout=10)
    assert r.status_code in (200, 201)

    engine = make_engine()
    opts = {"rate_limit": 0, "overlap_seconds": 0, "site": "s1", "scope": "all"}
    extract_remote(engine, server.base_url, **opts)
    assert _raw(engine)["vital-1"].trimmed is not None
    assert extract_remote(engine, server.base_url, **opts).read == 0  # nothing changed

    monkeypatch.setenv("COHORT_MAPPINGS_DIR", str(_mappings_with_heart_rate(tmp_path)))
    third = extract_remote(engine, server.base_url, **opts)
    assert third.read > 0 and third.counts.updated["Observation"] == 1
    assert _raw(engine)["vital-1"].trimmed is None
    assert extract_remote(engine, server.base_url, **opts).read == 0  # and steady again


def _patient_ids(server) -> set[str]:
    r = requests.get(f"{server.direct_url}/Patient", params={"_count": 5, "_elements": "id"},
                     timeout=10)
    return {e["resource"]["id"] for e in r.json().get("entry", [])}


@pytest.mark.parametrize("value", ["1", "true"])
def test_keep_all_bodies_switch(value, monkeypatch):
    monkeypatch.setenv(KEEP_ALL_ENV, value)
    assert default_trim() is None
