"""Loading export files without a server (benchmarks/export_folder.py, the benchmark's entry):
gzip, error files, and memory that does not grow with the size of the export."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from benchmarks.export_folder import load_ndjson_export
from connector.db.models import ExtractRun, Quarantine, RawResource


def _observations(n: int, start: int = 0) -> bytes:
    return b"".join(orjson.dumps({
        "resourceType": "Observation", "id": f"ob{i}", "status": "final",
        "meta": {"versionId": "1", "lastUpdated": "2024-03-01T00:00:00.000Z"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "33358-3"}]},
        "subject": {"reference": f"Patient/p{i % 500}"},
        "effectiveDateTime": "2024-02-01", "valueQuantity": {"value": i % 7, "unit": "g/dL"},
        "note": [{"text": "x" * 200}]}) + b"\n" for i in range(start, start + n))


def test_gzip_and_error_files_load_through_the_bulk_path(engine, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Observation.ndjson.gz").write_bytes(gzip.compress(_observations(30)))
    (folder / "Patient.ndjson").write_bytes(
        b'{"resourceType":"Patient","id":"p1"}\n\n{"resourceType":"Patient","id":"p2"}\n')
    (folder / "OperationOutcome.ndjson").write_bytes(orjson.dumps({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing",
                   "diagnostics": "Observation could not be exported"}]}) + b"\n")
    summary = load_ndjson_export(engine, folder, site="site_x")
    assert summary.read == 32 and summary.counts.new["Observation"] == 30
    assert summary.counts.new["Patient"] == 2 and summary.quarantined == 1
    with Session(engine) as s:
        q = s.exec(select(Quarantine)).scalars().one()
        sources = set(s.exec(select(RawResource.source)).scalars())
        run = s.exec(select(ExtractRun)).scalars().one()
    assert q.reason == "bulk export error: error: Observation could not be exported"
    assert sources == {"$export Observation", "$export Patient"}
    assert run.mode == "bulk" and run.status == "ok"
    again = load_ndjson_export(engine, folder, site="site_x")  # idempotent
    assert again.counts.stored == 0 and again.counts.unchanged["Observation"] == 30


def test_a_gzip_file_cut_short_is_a_clear_failure(engine, tmp_path):
    data = gzip.compress(_observations(200))
    (tmp_path / "Observation.ndjson.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match="Observation.ndjson.gz: the gzip stream is cut short"):
        load_ndjson_export(engine, tmp_path, site="s")
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(RawResource)).scalar_one() == 0
        assert s.exec(select(ExtractRun.status)).scalars().one() == "failed"


def _peak_while_loading(engine, folder: Path, site: str) -> int:
    tracemalloc.start()
    try:
        load_ndjson_export(engine, folder, site=site)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_size_of_the_export(engine, tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    (small / "Observation.ndjson").write_bytes(_observations(2500))
    (large / "Observation.ndjson").write_bytes(_observations(10000, start=100000))
    _peak_while_loading(engine, small, "warm-up")  # first-use allocations (caches, imports)
    peak_small = _peak_while_loading(engine, small, "a")
    peak_large = _peak_while_loading(engine, large, "b")
    assert peak_large < 1.5 * peak_small + 1_000_000  # 4x the lines, about the same memory
    with Session(engine) as s:
        n = s.exec(select(func.count()).select_from(RawResource)
                   .where(RawResource.site == "b")).scalar_one()
    assert n == 10000
