"""The folder source and the raw store: provenance, versions, duplicates, quarantine."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
from sqlalchemy import func, select
from sqlmodel import Session

from connector.db.models import ExtractRun, Quarantine, RawResource
from connector.extract import run_extract
from connector.extract.store import is_newer


def _patient(pid: str, version: str = "1", updated: str = "2024-01-01T00:00:00Z", **extra) -> dict:
    return {"resourceType": "Patient", "id": pid,
            "meta": {"versionId": version, "lastUpdated": updated},
            "gender": "female", **extra}


def _write_ndjson(path: Path, resources: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(r if isinstance(r, bytes) else orjson.dumps(r)
                                for r in resources) + b"\n")


def _rows(engine) -> list[tuple]:
    with Session(engine) as s:
        return [(r.site, r.resource_type, r.resource_id, r.version_id, r.content_hash)
                for r in s.exec(select(RawResource).order_by(RawResource.resource_id)).scalars()]


def test_site_comes_from_first_folder_and_provenance_is_kept(engine, tmp_path):
    _write_ndjson(tmp_path / "src" / "site_x" / "Patient.ndjson", [_patient("p1"), _patient("p2")])
    _write_ndjson(tmp_path / "src" / "site_y" / "sub" / "Patient.ndjson", [_patient("p3")])
    summary = run_extract(engine, str(tmp_path / "src"))
    assert summary.sites == ["site_x", "site_y"]
    with Session(engine) as s:
        rows = s.exec(select(RawResource).order_by(RawResource.resource_id)).scalars().all()
    assert [(r.site, r.resource_id) for r in rows] == [
        ("site_x", "p1"), ("site_x", "p2"), ("site_y", "p3")]
    row = rows[0]
    assert row.version_id == "1" and row.last_updated == "2024-01-01T00:00:00Z"
    assert row.source == "site_x/Patient.ndjson" and len(row.content_hash) == 64
    assert orjson.loads(row.body)["gender"] == "female"


def test_newer_version_wins_in_either_order_and_reload_is_idempotent(engine, tmp_path):
    v1, v2 = _patient("p1", "1", gender="female"), _patient("p1", "2", gender="male")
    _write_ndjson(tmp_path / "a" / "s" / "Patient.ndjson", [v2, v1])
    run_extract(engine, str(tmp_path / "a"))
    first = _rows(engine)
    with Session(engine) as s:
        body = orjson.loads(s.exec(select(RawResource.body)).scalars().one())
    assert body["gender"] == "male"
    summary = run_extract(engine, str(tmp_path / "a"))
    assert _rows(engine) == first
    assert summary.counts.stored == 0
    # a later file with version 3 replaces it
    _write_ndjson(tmp_path / "b" / "s" / "Patient.ndjson", [_patient("p1", "3", gender="other")])
    run_extract(engine, str(tmp_path / "b"))
    assert _rows(engine)[0][3] == "3"


def test_bad_lines_are_quarantined_and_the_rest_is_kept(engine, tmp_path):
    lines = [_patient("ok1"), b"{not json", orjson.dumps({"id": "x"}),
             orjson.dumps({"resourceType": "Patient"}), orjson.dumps([1, 2]),
             orjson.dumps({"resourceType": "Encounter", "id": "e1"}), _patient("ok2")]
    _write_ndjson(tmp_path / "s" / "site" / "Patient.ndjson", lines)
    summary = run_extract(engine, str(tmp_path / "s"))
    assert [r[2] for r in _rows(engine)] == ["ok1", "ok2"]
    assert summary.quarantined == 4
    assert summary.counts.skipped["Encounter"] == 1
    with Session(engine) as s:
        reasons = sorted(q.reason.split(":")[0] for q in s.exec(select(Quarantine)).scalars())
    assert reasons == ["invalid JSON", "missing or invalid id", "missing resourceType",
                       "not a JSON object"]
    run_extract(engine, str(tmp_path / "s"))  # rerun adds no duplicate quarantine rows
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Quarantine)).scalar_one() == 4


def test_bundles_gzip_and_run_record(engine, tmp_path):
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": _patient("b1")}, {"resource": _patient("b2")}]}
    (tmp_path / "src" / "s1").mkdir(parents=True)
    (tmp_path / "src" / "s1" / "bundle.json").write_text(json.dumps(bundle))
    with gzip.open(tmp_path / "src" / "s1" / "Patient.ndjson.gz", "wb") as fh:
        fh.write(orjson.dumps(_patient("g1")) + b"\n")
    run_extract(engine, str(tmp_path / "src"))
    assert [r[2] for r in _rows(engine)] == ["b1", "b2", "g1"]
    with Session(engine) as s:
        run = s.exec(select(ExtractRun)).scalars().one()
    assert run.status == "ok" and run.finished_at is not None
    assert json.loads(run.counts_json)["Patient"]["new"] == 3


def test_version_ordering():
    assert is_newer(("2", None), ("1", None))
    assert not is_newer(("1", None), ("10", None))
    assert is_newer((None, "2024-02-01T00:00:00Z"), (None, "2024-01-01T00:00:00+00:00"))
    assert not is_newer((None, "2023-02-01T00:00:00Z"), (None, "2024-01-01T00:00:00Z"))


def test_deeply_nested_resource_is_quarantined_not_fatal(engine, tmp_path):
    nested = (b'{"resourceType":"Patient","id":"deep","extension":'
              + b'{"x":' * 300 + b"1" + b"}" * 300 + b"}")
    _write_ndjson(tmp_path / "s" / "site" / "Patient.ndjson",
                  [_patient("a"), nested, _patient("b")])
    summary = run_extract(engine, str(tmp_path / "s"))
    assert [r[2] for r in _rows(engine)] == ["a", "b"]
    assert summary.quarantined == 1
