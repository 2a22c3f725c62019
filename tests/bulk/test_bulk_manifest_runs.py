"""Whole bulk runs against the scripted server, for manifests sekmet never writes: paged and
partial manifests, error and deleted files, gzip, wrong counts, requiresAccessToken false."""

from __future__ import annotations

import gzip

import orjson
from bulk_stub import capability
from conftest import FAST
from sqlalchemy import select
from sqlmodel import Session

from connector.db.models import BulkFile, BulkJob, Quarantine, RawResource
from connector.extract import run_extract
from connector.extract.store import RawStore
from connector.progress import Progress


def _lines(*resources: dict) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


def _patients(*ids: str) -> bytes:
    return _lines(*({"resourceType": "Patient", "id": i} for i in ids))


def _serve_export(stub, *manifests, status_path: str = "/fhir/status/1") -> None:
    stub.route("GET", "/fhir/metadata", (200, {}, capability()))
    stub.route("GET", "/fhir/$export", (202, {"Content-Location": stub.url("status/1")}, b""))
    stub.route("GET", status_path, *manifests)
    stub.route("DELETE", status_path, (202, {}, b""))


def _manifest(stub, output=(), error=(), deleted=(), token=True, **extra) -> dict:
    def items(files):
        return [{"type": t, "url": stub.url(p), **({"count": c} if c is not None else {})}
                for t, p, c in files]

    return {"transactionTime": "2024-06-01T08:00:00.000Z", "request": stub.url("$export"),
            "requiresAccessToken": token, "output": items(output), "error": items(error),
            "deleted": items(deleted), **extra}


def _raw(engine) -> dict[tuple[str, str], bool]:
    with Session(engine) as s:
        rows = s.exec(select(RawResource.resource_type, RawResource.resource_id,
                             RawResource.deleted)).all()
    return {(t, i): d for t, i, d in rows}


def test_paged_manifest_with_gzip_error_and_deleted_files(engine, stub):
    with engine.begin() as conn:
        store = RawStore(conn)
        store.add({"resourceType": "Patient", "id": "gone1"}, site="s", source="earlier")
        store.flush()
    page1 = _manifest(stub, output=[("Patient", "files/p.ndjson", 2)],
                      error=[("OperationOutcome", "files/e.ndjson", None)],
                      deleted=[("Bundle", "files/d.ndjson", None)],
                      link=[{"relation": "next", "url": stub.url("status/1-page2")}])
    _serve_export(stub, (200, {}, page1))
    stub.route("GET", "/fhir/status/1-page2",
               (200, {}, _manifest(stub, output=[("Observation", "files/o.ndjson", 1)])))
    stub.route("GET", "/fhir/files/p.ndjson",
               (200, {"Content-Encoding": "gzip"}, gzip.compress(_patients("p1", "p2"))))
    stub.route("GET", "/fhir/files/o.ndjson", (200, {}, _lines(
        {"resourceType": "Observation", "id": "o1", "status": "final",
         "subject": {"reference": "Patient/p1"}})))
    stub.route("GET", "/fhir/files/e.ndjson", (200, {}, _lines(
        {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing",
             "diagnostics": "one Observation failed"}]})))
    stub.route("GET", "/fhir/files/d.ndjson", (200, {}, _lines(
        {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Patient/gone1"}}]})))
    summary = run_extract(engine, stub.base_url, site="s", bulk=True, **FAST)
    assert _raw(engine) == {("Patient", "gone1"): True, ("Patient", "p1"): False,
                            ("Patient", "p2"): False, ("Observation", "o1"): False}
    assert summary.read == 3 and summary.counts.deleted["Patient"] == 1
    with Session(engine) as s:
        q = s.exec(select(Quarantine)).scalars().one()
        files = s.exec(select(BulkFile)).scalars().all()
        job = s.exec(select(BulkJob)).scalars().one()
    assert q.reason == "bulk export error: error: one Observation failed"
    assert len(files) == 4 and all(f.done for f in files)
    assert job.state == "done" and job.transaction_time == "2024-06-01T08:00:00.000Z"
    assert job.next_url is None
    assert len(stub.hits("DELETE", "/fhir/status/1")) == 1


def test_a_file_shorter_than_its_manifest_count_is_downloaded_again(engine, stub):
    _serve_export(stub, (200, {}, _manifest(stub, output=[("Patient", "files/p.ndjson", 3)])))
    stub.route("GET", "/fhir/files/p.ndjson", (200, {}, _patients("a", "b")),
               (200, {}, _patients("a", "b", "c")))
    run_extract(engine, stub.base_url, site="s", bulk=True, **FAST)
    assert len(stub.hits("GET", "/fhir/files/p.ndjson")) == 2
    assert set(_raw(engine)) == {("Patient", i) for i in "abc"}


def test_a_count_the_server_got_wrong_is_accepted_after_the_same_file_twice(engine, stub):
    _serve_export(stub, (200, {}, _manifest(stub, output=[("Patient", "files/p.ndjson", 5)])))
    stub.route("GET", "/fhir/files/p.ndjson", (200, {}, _patients("a", "b")))
    summary = run_extract(engine, stub.base_url, site="s", bulk=True, **FAST)
    assert len(stub.hits("GET", "/fhir/files/p.ndjson")) == 2
    assert summary.read == 2
    with Session(engine) as s:
        assert s.exec(select(BulkFile.lines_loaded)).scalars().one() == 2


def test_files_listed_in_a_partial_manifest_are_fetched_before_the_export_ends(engine, stub):
    partial = _manifest(stub, output=[("Patient", "files/p.ndjson", 1)])
    final = _manifest(stub, output=[("Patient", "files/p.ndjson", 1),
                                    ("Observation", "files/o.ndjson", 1)])
    _serve_export(stub, (202, {"X-Progress": "half"}, partial), (200, {}, final))
    stub.route("GET", "/fhir/files/p.ndjson", (200, {}, _patients("a")))
    stub.route("GET", "/fhir/files/o.ndjson", (200, {}, _lines(
        {"resourceType": "Observation", "id": "o", "status": "final"})))
    # with the progress display on (a spinner while polling, files fetched meanwhile)
    run_extract(engine, stub.base_url, site="s", bulk=True, partial_manifests=True,
                progress=Progress(enabled=True), **FAST)
    order = [path.split("?")[0] for method, path, _, _ in stub.requests if method == "GET"]
    final_poll = len(order) - 1 - order[::-1].index("/fhir/status/1")
    assert order.index("/fhir/files/p.ndjson") < final_poll
    assert order.count("/fhir/files/p.ndjson") == 1  # not again once the export completed
    assert set(_raw(engine)) == {("Patient", "a"), ("Observation", "o")}
    (_, kickoff, _, _), = stub.hits("GET", "/fhir/$export")
    assert "allowPartialManifests=true" in kickoff


def test_the_token_is_left_off_file_requests_when_the_manifest_says_so(engine, stub, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("BULK_TEST_TOKEN", "tok-123456")
    config = tmp_path / "site.toml"
    config.write_text(f'name = "s"\nbase_url = "{stub.base_url}"\n'
                      '[auth]\ntype = "bearer"\ntoken_env = "BULK_TEST_TOKEN"\n')
    _serve_export(stub, (200, {}, _manifest(stub, output=[("Patient", "files/p.ndjson", 1)],
                                            token=False)))
    stub.route("GET", "/fhir/files/p.ndjson", (200, {}, _patients("a")))
    run_extract(engine, str(config), bulk=True, **FAST)
    (_, _, kickoff_headers, _), = stub.hits("GET", "/fhir/$export")
    (_, _, file_headers, _), = stub.hits("GET", "/fhir/files/p.ndjson")
    assert kickoff_headers["Authorization"] == "Bearer tok-123456"
    assert "Authorization" not in file_headers
    assert set(_raw(engine)) == {("Patient", "a")}
