"""Bulk $export through the DuckDB load path (``loader="duckdb"``): the same normalized
tables as the Python path, and a later full export replaces the code counts of the first."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import FAST

from benchmarks.export_folder import load_ndjson_export
from connector import pipeline
from connector.extract import run_extract

HEART_RATE = {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                          "display": "Heart rate"}]}
TABLES = ("patient", "medication_exposure", "procedure_event", "lab_result", "quarantine")


def _snapshot(engine) -> dict[str, list]:
    meta = sa.MetaData()
    meta.reflect(engine, only=list(TABLES))
    with engine.connect() as conn:
        return {name: sorted((tuple(r) for r in conn.execute(sa.select(*[
            c for c in meta.tables[name].columns
            if c.name not in ("id", "created_at", "loaded_at")]))), key=repr)
            for name in TABLES}


def _counted(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT coalesce(sum(n), 0) FROM raw_code_count"))
                   .scalar_one())


def test_bulk_export_through_duckdb_maps_like_the_python_path(fresh_server, bulk_data,
                                                               tmp_path):
    patient = next(r for r in bulk_data["resources"] if r["resourceType"] == "Patient")
    for i in range(3):
        fresh_server.put({"resourceType": "Observation", "id": f"hr-{i}", "status": "final",
                          "code": HEART_RATE, "subject": {"reference": f"Patient/{patient['id']}"},
                          "effectiveDateTime": f"2024-01-0{i + 1}",
                          "valueQuantity": {"value": 70 + i, "unit": "/min"}})
    engines = {}
    for loader in ("python", "duckdb"):
        engine = engines[loader] = pipeline.open_db(f"sqlite:///{tmp_path / loader}.db")
        summary = run_extract(engine, fresh_server.base_url, bulk=True, loader=loader,
                              work_dir=str(tmp_path / f"work-{loader}"), **FAST)
        assert summary.read == len(bulk_data["resources"]) + 3
    assert _counted(engines["duckdb"]) == 3 and _counted(engines["python"]) == 0
    maps = {loader: pipeline.map_(engine) for loader, engine in engines.items()}
    assert maps["duckdb"].unmapped == maps["python"].unmapped >= 3
    assert dict(maps["duckdb"].rows) == dict(maps["python"].rows)
    assert _snapshot(engines["duckdb"]) == _snapshot(engines["python"])

    again = run_extract(engines["duckdb"], fresh_server.base_url, bulk=True, loader="duckdb",
                        since="full", work_dir=str(tmp_path / "work-again"), **FAST)
    assert again.counts.counted["Observation"] == 3
    assert _counted(engines["duckdb"]) == 3  # the first export's counts were replaced
    assert pipeline.map_(engines["duckdb"]).unmapped == maps["python"].unmapped


def test_export_folder_load_through_duckdb(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    lines = [b'{"resourceType":"Patient","id":"p1"}']
    lines += [b'{"resourceType":"Observation","id":"o%d","code":{"coding":[{"system":'
              b'"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/p1"}}'
              % i for i in range(5)]
    (folder / "Observation.ndjson").write_bytes(b"\n".join(lines[1:]) + b"\n")
    (folder / "Patient.ndjson").write_bytes(lines[0] + b"\n")
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'db'}.db")
    summary = load_ndjson_export(engine, folder, site="s", loader="duckdb")
    assert summary.read == 6 and summary.counts.counted["Observation"] == 5
    assert summary.counts.new["Patient"] == 1 and _counted(engine) == 5
    load_ndjson_export(engine, folder, site="s", loader="duckdb")
    assert _counted(engine) == 5
