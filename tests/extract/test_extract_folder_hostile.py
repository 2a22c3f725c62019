"""Folder input a careless or hostile site sends (issue 13 item 6): nothing is dropped
without a quarantine row, and the valid part gives the normalized tables of a clean run."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from reliability.reliability_db import MAPPED_TABLES, snapshot

from connector import pipeline

HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
LOINC = "http://loinc.org"
NORMALIZED = MAPPED_TABLES[:-1]  # without quarantine, which the hostile run adds to


def _patient(pid: str, **extra: object) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female",
            "birthDate": "1958-03-01", **extra}


def _admin(mid: str, pid: str, code: str = "J9047", date: str = "2022-03-01",
           **extra: object) -> dict:
    return {"resourceType": "MedicationAdministration", "id": mid, "status": "completed",
            "medicationCodeableConcept": {"coding": [{"system": HCPCS, "code": code}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date, **extra}


def _lab(oid: str, pid: str, value: float, date: str = "2022-04-01", **extra: object) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "33358-3"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": "g/dL"}, **extra}


def _clean() -> list[dict]:
    """A valid site: two patients with a drug, a CAR-T infusion and labs."""
    return [_patient("p1"), _patient("p2"),
            _admin("ma1", "p1"), _admin("ma2", "p1", code="Q2056", date="2022-05-01"),
            _admin("ma3", "p2", date="2022-06-01"),
            _lab("o1", "p1", 2.5), _lab("o2", "p2", 1.1, date="2022-07-01")]


def _write(folder: Path, name: str, lines: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines))


def _run(tmp_path: Path, name: str, files: dict[str, list], loader: str = "python",
         db_url: str | None = None):
    """Extract a folder with one site (``files``: file name → lines) and map it:
    (engine, extract summary, map summary)."""
    root = tmp_path / name
    for file_name, lines in files.items():
        _write(root / "site_a", file_name, lines)
    engine = pipeline.open_db(db_url or f"sqlite:///{tmp_path / name}.db")
    extracted = pipeline.extract(engine, str(root), loader=loader)
    mapped = pipeline.map_(engine)
    return engine, extracted, mapped


def _quarantine(engine) -> list[tuple]:  # noqa: ANN001
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT stage, resource_type, resource_id, reason FROM quarantine")))


@pytest.fixture
def clean(tmp_path):
    """The normalized tables of the clean site, loaded the ordinary way."""
    engine, _, mapped = _run(tmp_path, "clean", {"resources.ndjson": _clean()})
    assert mapped.rows["medication_exposure"] == 3 and mapped.rows["lab_result"] == 2
    assert _quarantine(engine) == []
    return snapshot(engine, NORMALIZED)


@pytest.mark.parametrize("loader", ["python", "duckdb"])
def test_a_bundle_on_one_ndjson_line_loads_its_entries(tmp_path, clean, loader):
    resources = _clean()
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r}
                        for r in resources[1:]]}
    engine, extracted, _ = _run(tmp_path, f"bundled-{loader}",
                                {"resources.ndjson": [resources[0], bundle]}, loader)
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.counts.new["MedicationAdministration"] == 3
    assert "Bundle" not in extracted.counts.skipped
    assert _quarantine(engine) == []


def _cohort_scope(tmp_path: Path, name: str, lines: list) -> dict:
    root = tmp_path / name
    _write(root / "site_a", "r.ndjson", lines)
    engine = pipeline.open_db(f"sqlite:///{tmp_path / name}.db")
    extracted = pipeline.extract(engine, str(root), loader="duckdb", scope="cohort")
    pipeline.map_(engine)
    return {"tables": snapshot(engine, NORMALIZED), "outside": dict(extracted.counts.outside)}


def test_the_cohort_screen_reads_a_bundle_line(tmp_path):
    """``--loader duckdb --scope cohort``: a CAR-T infusion written inside a Bundle line
    puts its patient in the cohort, as the same infusion on a line of its own does."""
    resources = _clean()
    car_t = resources.pop(3)  # ma2: p1's CAR-T infusion
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": car_t}]}
    plain = _cohort_scope(tmp_path, "plain", _clean())
    bundled = _cohort_scope(tmp_path, "bundled", [*resources, bundle])
    assert plain["tables"]["medication_exposure"]  # p1 is in the cohort
    assert bundled == plain


def test_a_bundle_line_with_a_bad_entry_quarantines_only_that_entry(tmp_path, clean):
    resources = _clean()
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": r} for r in resources] + [{"fullUrl": "urn:uuid:x"}, 7]}
    engine, extracted, _ = _run(tmp_path, "bad-entry", {"r.ndjson": [bundle]})
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.quarantined == 2
    assert sorted(r[3] for r in _quarantine(engine)) == [
        "Bundle entry is not an object", "Bundle entry without resource"]


def test_bundles_nested_too_deeply_are_quarantined(tmp_path, clean):
    inner: dict = {"resourceType": "Bundle", "type": "collection",
                   "entry": [{"resource": _patient("deep")}]}
    for _ in range(6):
        inner = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    engine, extracted, _ = _run(tmp_path, "nested", {"r.ndjson": [*_clean(), inner]})
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.quarantined == 1
    assert [r[3] for r in _quarantine(engine)] == ["Bundle nested too deeply"]


def test_unknown_resource_types_are_quarantined_with_their_reason(tmp_path, clean):
    misspelled = [{**_patient("p3"), "resourceType": "Patinet"},
                  {**_admin("ma9", "p1"), "resourceType": "medicationAdministration"},
                  {"resourceType": "Patient<script>", "id": "x"}]
    other = {"resourceType": "Encounter", "id": "e1", "status": "finished"}
    engine, extracted, mapped = _run(tmp_path, "types",
                                     {"r.ndjson": [*_clean(), *misspelled, other]})
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.quarantined == 3
    assert extracted.counts.skipped == {"Encounter": 1}  # a real R4 type the study skips
    rows = _quarantine(engine)
    assert [r[0] for r in rows] == ["extract"] * 3
    reasons = sorted(r[3] for r in rows)
    assert reasons[0].startswith("unknown resourceType '(not a type name)'")
    assert reasons[1].startswith("unknown resourceType 'Patinet'")
    assert reasons[2].startswith("unknown resourceType 'medicationAdministration'")
    assert "<script>" not in " ".join(reasons)
    with engine.connect() as conn:
        counts = orjson.loads(conn.execute(sa.text("SELECT counts_json FROM extract_run"))
                              .scalar_one())
    assert counts["Encounter"] == {"skipped": 1}


def _versioned(res: dict, version: str | None = None, updated: str | None = None) -> dict:
    meta = {k: v for k, v in (("versionId", version), ("lastUpdated", updated)) if v}
    return {**res, "meta": meta} if meta else dict(res)


def _duplicated() -> tuple[list[dict], list[dict]]:
    """Two files of one site: o1 twice (the right copy has the later lastUpdated, and
    comes first), ma3 twice without version (the right copy comes later), ma1 twice
    identical."""
    resources = _clean()
    wrong_lab = _versioned(_lab("o1", "p1", 9.9), updated="2023-01-01T00:00:00Z")
    right_lab = _versioned(resources[5], updated="2023-06-01T00:00:00Z")
    first_admin = _admin("ma3", "p2", date="2021-01-01")
    return ([right_lab, resources[2], first_admin],
            [wrong_lab if r["id"] == "o1" else r for r in resources])


def test_conflicts_on_postgresql_and_on_a_rerun(tmp_path, clean, pg_url):
    """Rows written earlier in the load are known by their load time on PostgreSQL too;
    loading the same files again gives the same tables, counts and quarantine."""
    first, second = _duplicated()
    engine, extracted, _ = _run(tmp_path, "pg", {"a.ndjson": first, "b.ndjson": second},
                                db_url=pg_url)
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.counts.conflicts == {"Observation": 1, "MedicationAdministration": 1}
    before = snapshot(engine, ("raw_resource", "quarantine"))
    again = pipeline.extract(engine, str(tmp_path / "pg"))
    pipeline.map_(engine)
    assert snapshot(engine, NORMALIZED) == clean
    assert snapshot(engine, ("raw_resource", "quarantine")) == before
    assert [r[2] for r in _quarantine(engine)] == ["ma3"]
    # the copy decided by file order is a conflict again; the older lab is just older now
    assert again.counts.conflicts == {"MedicationAdministration": 1}
    assert again.quarantined == 1
    engine.dispose()


@pytest.mark.parametrize("split", [False, True])
def test_the_same_id_twice_with_other_content(tmp_path, clean, split):
    """In one file or across two files of one load: the later lastUpdated wins whatever the
    order, else the later copy in file order (the other is quarantined); identical copies
    are just de-duplicated; the counts say how many conflicts there were."""
    extra, rest = _duplicated()
    files = ({"a.ndjson": extra, "b.ndjson": rest} if split
             else {"a.ndjson": [*extra, *rest]})
    engine, extracted, _ = _run(tmp_path, f"dupes-{split}", files)
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.counts.conflicts == {"Observation": 1, "MedicationAdministration": 1}
    assert extracted.quarantined == 1
    rows = _quarantine(engine)
    assert [(r[1], r[2]) for r in rows] == [("MedicationAdministration", "ma3")]
    assert rows[0][3].startswith("conflicting duplicate")
    with engine.connect() as conn:
        kept = orjson.loads(conn.execute(sa.text(
            "SELECT raw FROM quarantine")).scalar_one())
        counts = orjson.loads(conn.execute(sa.text("SELECT counts_json FROM extract_run"))
                              .scalar_one())
    assert kept["effectiveDateTime"] == "2021-01-01"  # the losing copy, whole
    assert counts["Observation"]["conflicts"] == 1


REFUSED = "http://hospital.example/fhir/StructureDefinition/patient-refused"


def _modified() -> list[dict]:
    """Events the study would map, each carrying a modifier extension somewhere."""
    modifier = [{"url": REFUSED, "valueBoolean": True}]
    return [
        _admin("ma9", "p1", date="2022-08-01", modifierExtension=modifier),
        _admin("ma8", "p2", date="2022-08-02",
               dosage={"text": "1 mg", "modifierExtension": modifier}),
        _lab("o9", "p2", 3.3, date="2022-08-03",
             component=[{"code": {"text": "part"}, "modifierExtension": modifier}]),
    ]


def test_unknown_modifier_extensions_quarantine_the_resource(tmp_path, clean):
    engine, _, mapped = _run(tmp_path, "modifiers", {"r.ndjson": [*_clean(), *_modified()]})
    assert snapshot(engine, NORMALIZED) == clean
    rows = _quarantine(engine)
    assert [(r[0], r[2]) for r in rows] == [("map", "ma8"), ("map", "ma9"), ("map", "o9")]
    assert {r[3] for r in rows} == {
        f"unknown modifierExtension (not in mappings/modifier_extensions.csv): {REFUSED}"}
    assert mapped.quarantined == 3


def test_a_modifier_listed_in_mappings_is_mapped(tmp_path, monkeypatch):
    import shutil

    from connector.codes.codesets import DEFAULT_DIR

    folder = tmp_path / "mappings"
    shutil.copytree(DEFAULT_DIR, folder)
    with (folder / "modifier_extensions.csv").open("a") as fh:
        fh.write(f"{REFUSED},MedicationAdministration,test only,unconfirmed,this test\n")
    monkeypatch.setenv("COHORT_MAPPINGS_DIR", str(folder))
    engine, _, mapped = _run(tmp_path, "allowed", {"r.ndjson": [*_clean(), *_modified()]})
    assert mapped.rows["medication_exposure"] == 5  # ma8 and ma9 too
    assert [r[2] for r in _quarantine(engine)] == ["o9"]  # listed for administrations only


OWN = "http://hospital.example/fhir"
OTHER = "http://other.example/fhir"


def _absolute(res: dict, base: str) -> dict:
    """``res`` with its subject as an absolute reference under ``base``."""
    return {**res, "subject": {"reference": f"{base}/{res['subject']['reference']}"}}


def _foreign() -> list[dict]:
    """Events of another server's patients p1 and p2 (and its Medication x)."""
    return [_absolute(_admin("ma7", "p1", date="2022-09-01"), OTHER),
            _absolute(_lab("o7", "p2", 5.0, date="2022-09-02"), "https://other.example/fhir"),
            {**_admin("ma6", "p1", date="2022-09-03"), "medicationReference": {
                "reference": f"{OTHER}/Medication/x/_history/2"}}]


def test_references_to_another_server_do_not_attach_to_local_patients(tmp_path, clean):
    foreign = _foreign()
    del foreign[2]["medicationCodeableConcept"]
    engine, extracted, _ = _run(tmp_path, "foreign", {"r.ndjson": [*_clean(), *foreign]})
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.quarantined == 3
    rows = _quarantine(engine)
    assert [(r[0], r[2]) for r in rows] == [("extract", "ma6"), ("extract", "ma7"),
                                            ("extract", "o7")]
    assert [r[3].split(" (")[0] for r in rows] == [
        "medicationReference refers to another server", "subject refers to another server",
        "subject refers to another server"]
    assert not any("p1" in r[3] or "p2" in r[3] for r in rows)


def test_a_bundle_s_own_base_is_local_and_another_is_not(tmp_path, clean):
    entries = []
    for res in _clean():
        if "subject" in res:
            res = _absolute(res, OWN)
        entries.append({"fullUrl": f"{OWN}/{res['resourceType']}/{res['id']}",
                        "resource": res})
    foreign = _foreign()[:2]
    entries += [{"fullUrl": f"{OWN}/{r['resourceType']}/{r['id']}", "resource": r}
                for r in foreign]
    root = tmp_path / "bundle" / "site_a"
    root.mkdir(parents=True)
    (root / "export.json").write_bytes(orjson.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": entries}))
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'bundle'}.db")
    extracted = pipeline.extract(engine, str(tmp_path / "bundle"))
    pipeline.map_(engine)
    assert snapshot(engine, NORMALIZED) == clean
    assert extracted.quarantined == 2
    assert [r[2] for r in _quarantine(engine)] == ["ma7", "o7"]


def _unversioned(engine) -> dict[str, list[tuple]]:  # noqa: ANN001
    """The normalized tables without ``version_id`` (a server numbers the versions it
    stores; a folder's resources have none)."""
    meta = sa.MetaData()
    meta.reflect(engine, only=list(NORMALIZED))
    with engine.connect() as conn:
        return {name: sorted((tuple(r) for r in conn.execute(sa.select(*(
            c for c in meta.tables[name].columns
            if c.name not in ("id", "version_id", "loaded_at"))))), key=repr)
            for name in NORMALIZED}


def test_a_server_s_own_base_url_is_local(tmp_path):
    """Through REST, references under the server's own base URL map like relative ones;
    another server's do not (a real test server behind the proxy)."""
    from fhir_server import load_resources, start_behind_proxy

    from connector.extract import run_extract

    server, proxy = start_behind_proxy()
    try:
        own = [_absolute(r, server.base_url) if "subject" in r else r for r in _clean()]
        load_resources(server, [*own, *_foreign()[:2]])
        engine = pipeline.open_db(f"sqlite:///{tmp_path / 'rest'}.db")
        summary = run_extract(engine, server.base_url, site="site_a", scope="all",
                              rate_limit=0, page_size=50, overlap_seconds=0)
    finally:
        proxy.stop()
        server.stop()
    pipeline.map_(engine)
    clean, _, _ = _run(tmp_path, "clean", {"r.ndjson": _clean()})
    assert _unversioned(engine) == _unversioned(clean)
    assert summary.quarantined == 2
    assert [r[2] for r in _quarantine(engine)] == ["ma7", "o7"]
