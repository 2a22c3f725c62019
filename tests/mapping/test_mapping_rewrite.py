"""Rewriting codings the ways real extracts differ must not change the normalized tables.

The same events are sent once with standard codes and once with text-only local
codes, brand names, contained Medications, M-protein in g/L, periods instead of
dateTimes and odd system URIs; both must map to identical study rows. The same
map on PostgreSQL must equal the SQLite one.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from mapping_fhir import (
    CPT,
    HCPCS,
    ICD10PCS,
    RXNORM,
    SNOMED,
    concept,
    load,
    med_admin,
    observation,
    patient,
    procedure,
    write_ndjson,
)
from test_mapping_bad_input import bad_corpus, valid_corpus

from connector.codes.codesets import DEFAULT_DIR
from connector.db import get_engine, init_db
from connector.extract import run_extract
from connector.extract.folder import find_files, iter_lines
from connector.mapping import load_codesets, run_map
from connector.mapping.match import match_drug

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "cohort"
FIXTURE_PATIENTS_PER_SITE = 10

SEMANTIC = {
    "patient": ("site", "source_id", "patient_key", "birth_year", "sex", "death_date",
                "deceased"),
    "medication_exposure": ("site", "patient_source_id", "source_type", "ingredient",
                            "drug_class", "start_date", "end_date", "status"),
    "procedure_event": ("site", "patient_source_id", "category", "product", "performed_date",
                        "end_date", "status"),
    "lab_result": ("site", "patient_source_id", "analyte", "effective_date", "value", "unit",
                   "value_code"),
}

DRUG_CODES = [  # (system, code) as a pharmacy or billing system would send them
    (RXNORM, "2619432"), (HCPCS, "J9380"), (RXNORM, "342369"), (RXNORM, "1369713"),
    (RXNORM, "3264"), (HCPCS, "J9047"), (RXNORM, "2372199"), (HCPCS, "J9227"),
    (HCPCS, "J3055"), (HCPCS, "J1323"), (RXNORM, "358258"), (HCPCS, "J9037"),
    (RXNORM, "3002"), (RXNORM, "24698"), (HCPCS, "Q2056"), (RXNORM, "1747556"),
]


def small_cohort(n_patients: int = 8) -> list[dict]:
    """A deterministic little cohort with every kind of event the map stage reads."""
    out: list[dict] = []
    for i in range(n_patients):
        pid = f"pt{i}"
        out.append(patient(pid, birth=f"19{50 + i}-0{1 + i % 9}-1{i % 9}",
                           gender="male" if i % 2 else "female",
                           **({"deceasedDateTime": f"2024-02-0{1 + i % 9}"}
                              if i % 3 == 0 else {})))
        base = dt.date(2021, 1 + i % 12, 1 + i)
        product = ("XW033K7", "XW043A7")[i % 2]
        out.append(procedure(f"{pid}-cart", pid, concept(ICD10PCS, product),
                             date=base.isoformat()))
        out.append(procedure(f"{pid}-aph", pid, concept(CPT, "0537T"),
                             date=(base - dt.timedelta(days=40)).isoformat()))
        for k, (system, code) in enumerate(DRUG_CODES[i % 4: i % 4 + 6]):
            for dose in range(3):
                day = base + dt.timedelta(days=60 + 7 * dose + 30 * k)
                out.append(med_admin(f"{pid}-ma{k}-{dose}", pid, concept(system, code),
                                     date=f"{day.isoformat()}T10:00:00+01:00"))
        for v in range(6):
            day = (base + dt.timedelta(days=28 * v)).isoformat()
            out.append(observation(f"{pid}-mp{v}", pid, "33358-3", date=day,
                                   value=round(2.5 - 0.3 * v + 0.01 * i, 2)))
            out.append(observation(f"{pid}-kap{v}", pid, "36916-5", date=day,
                                   value=40.0 + v, unit="mg/L"))
        out.append(observation(f"{pid}-ife", pid, "25700-6", date=base.isoformat(),
                               valueCodeableConcept=concept(SNOMED, "260385009")))
        out.append(observation(f"{pid}-ds", pid, "97509-4", date=base.isoformat(),
                               valueCodeableConcept=concept(SNOMED, "271299001")))
    return out


# ------------------------------------------------------------------------- rewriting


def _names() -> dict[str, list[str]]:
    """Per ingredient, the spellings a local formulary might use (brands first)."""
    out: dict[str, list[str]] = {}
    with (DEFAULT_DIR / "drug_names.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["kind"] in ("brand", "generic", "abbreviation"):
                out.setdefault(row["ingredient"], []).append(row["name"])
    out["daratumumab"].append("daratumumab and hyaluronidase-fihj 1800 MG/15ML")
    out["teclistamab"].append("TECLISTAMAB-CQYV 10 MG/ML INJECTION")
    return out


def _odd_system(system: str, n: int) -> str:
    variants = (system.replace("http://", "https://"), system + "/", system + "|2024-03")
    return variants[n % 3]


def _period(res: dict, prefix: str) -> None:
    if f"{prefix}DateTime" in res:
        res[f"{prefix}Period"] = {"start": res.pop(f"{prefix}DateTime")}


def rewrite(resources: list[dict]) -> list[dict]:
    """The same events coded the other ways real extracts code them."""
    cs = load_codesets()
    names = _names()
    out = []
    for n, original in enumerate(resources):
        res = copy.deepcopy(original)
        rtype = res.get("resourceType")
        if rtype == "MedicationAdministration" and "medicationCodeableConcept" in res:
            matches = match_drug(cs, [res["medicationCodeableConcept"]])
            if len(matches) == 1:
                spellings = names[matches[0].ingredient]
                name = spellings[n % len(spellings)]
                del res["medicationCodeableConcept"]
                form = n % 3
                if form == 0:
                    res["medicationCodeableConcept"] = {"text": name}
                elif form == 1:
                    res["medicationCodeableConcept"] = {"coding": [{
                        "system": "http://hospital.example/formulary", "code": f"F{n}",
                        "display": name}]}
                else:
                    res["contained"] = [{"resourceType": "Medication", "id": "med1",
                                         "code": {"text": name}}]
                    res["medicationReference"] = {"reference": "#med1"}
            _period(res, "effective")
        elif rtype == "Observation":
            q = res.get("valueQuantity")
            if isinstance(q, dict) and q.get("unit") == "g/dL" and isinstance(
                    q.get("value"), int | float) and not isinstance(q["value"], bool):
                res["valueQuantity"] = {"value": q["value"] * 10, "unit": "g/L",
                                        "system": "http://unitsofmeasure.org", "code": "g/L"}
                if "comparator" in q:  # "<0.1 g/dL" is "<1 g/L"
                    res["valueQuantity"]["comparator"] = q["comparator"]
            _period(res, "effective")
            _odd_codes(res.get("code"), n)
        elif rtype == "Procedure":
            _period(res, "performed")
            _odd_codes(res.get("code"), n)
        out.append(res)
    return out


def _odd_codes(code: object, n: int) -> None:
    if isinstance(code, dict):
        for coding in code.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("system"), str):
                coding["system"] = _odd_system(coding["system"], n)


# ------------------------------------------------------------------------- comparing


def semantic_tables(engine) -> dict[str, list[tuple]]:
    out = {}
    with engine.connect() as conn:
        for table, columns in SEMANTIC.items():
            result = conn.execute(sa.text(f"SELECT {', '.join(columns)} FROM {table}"))
            out[table] = sorted(tuple(_plain(v) for v in r) for r in result)
    return out


def _plain(value: object) -> object:
    if isinstance(value, dt.date):
        return value.isoformat()[:10]
    if isinstance(value, bool):
        return int(value)
    return value


def quarantine_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT site, stage, resource_type, resource_id, reason FROM quarantine")))


def _map(db_url: str, resources: list[dict]):
    engine = get_engine(db_url)
    init_db(engine)
    load(engine, resources)
    summary = run_map(engine)
    return engine, summary


def test_the_rewrite_really_changes_the_input():
    plain, rewritten = small_cohort(), rewrite(small_cohort())
    assert plain != rewritten
    text = orjson.dumps(rewritten).decode()
    for fragment in ('"#med1"', '"g/L"', "effectivePeriod", "performedPeriod", "https://",
                     "|2024-03", "hospital.example"):
        assert fragment in text


def test_rewritten_codings_give_identical_tables(tmp_path):
    resources = small_cohort()
    a, summary_a = _map(f"sqlite:///{tmp_path / 'a.db'}", resources)
    b, summary_b = _map(f"sqlite:///{tmp_path / 'b.db'}", rewrite(resources))
    tables_a, tables_b = semantic_tables(a), semantic_tables(b)
    assert tables_a["medication_exposure"] and tables_a["lab_result"]
    assert tables_a == tables_b
    assert summary_a.quarantined == summary_b.quarantined == 0
    assert summary_a.rows == summary_b.rows


def _first_patients(resources: list[dict], n: int) -> list[dict]:
    """All resources of the first ``n`` patients (by id), to keep the test fast."""
    keep = set(sorted(r["id"] for r in resources if r.get("resourceType") == "Patient")[:n])
    out = []
    for res in resources:
        ref = (res.get("subject") or {}).get("reference", "")
        if res.get("resourceType") == "Patient":
            if res["id"] in keep:
                out.append(res)
        elif not ref or ref.split("/")[-1] in keep:
            out.append(res)
    return out


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixtures/cohort not generated yet")
def test_rewritten_fixture_cohort_gives_identical_tables(tmp_path):
    resources_by_site: dict[str, list[dict]] = {}
    for path in find_files(FIXTURE):
        if not path.name.endswith(".ndjson"):
            continue
        site = path.relative_to(FIXTURE).parts[0]
        resources_by_site.setdefault(site, []).extend(
            orjson.loads(line) for line in iter_lines(path))
    original, rewritten = tmp_path / "original", tmp_path / "rewritten"
    for site, resources in resources_by_site.items():
        subset = _first_patients(resources, FIXTURE_PATIENTS_PER_SITE)
        write_ndjson(original, site, subset)
        write_ndjson(rewritten, site, rewrite(subset))
    engines = []
    for name, folder in (("a", original), ("b", rewritten)):
        engine = get_engine(f"sqlite:///{tmp_path / name}.db")
        init_db(engine)
        run_extract(engine, str(folder))
        run_map(engine)
        engines.append(engine)
    tables_a, tables_b = semantic_tables(engines[0]), semantic_tables(engines[1])
    assert tables_a["medication_exposure"] and tables_a["lab_result"]
    assert tables_a == tables_b


@pytest.mark.postgres
def test_postgres_map_equals_sqlite_map(tmp_path, pg_url):
    resources = small_cohort() + valid_corpus() + [res for _, res, _ in bad_corpus()]
    lite, summary_lite = _map(f"sqlite:///{tmp_path / 'lite.db'}", resources)
    pg, summary_pg = _map(pg_url, resources)
    try:
        assert semantic_tables(pg) == semantic_tables(lite)
        assert quarantine_rows(pg) == quarantine_rows(lite)
        assert str(summary_pg) == str(summary_lite)
        assert summary_pg.quarantined == len(bad_corpus())
        # and a rerun on PostgreSQL is idempotent too
        run_map(pg)
        assert semantic_tables(pg) == semantic_tables(lite)
    finally:
        pg.dispose()


def test_validation_in_worker_processes_gives_the_same_result(tmp_path, monkeypatch):
    from connector.mapping import run as map_run

    resources = small_cohort(4) + valid_corpus() + [res for _, res, _ in bad_corpus()]
    serial, summary_serial = _map(f"sqlite:///{tmp_path / 'serial.db'}", resources)
    monkeypatch.setattr(map_run, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setenv("COHORT_MAP_WORKERS", "2")
    with map_run.validation_pool(1) as validate_many:
        assert validate_many is not None
    parallel, summary_parallel = _map(f"sqlite:///{tmp_path / 'parallel.db'}", resources)
    assert semantic_tables(parallel) == semantic_tables(serial)
    assert quarantine_rows(parallel) == quarantine_rows(serial)
    assert str(summary_parallel) == str(summary_serial)
