"""The $export protocol (connector.fhir.bulk) against a scripted server: kick-off forms,
polling rules (Retry-After, X-Progress, time limit, failures), manifests and downloads."""

from __future__ import annotations

import gzip
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from bulk_stub import capability

from connector.fhir.auth import BearerAuth
from connector.fhir.bulk import (
    BulkClient,
    BulkExportError,
    BulkJobGone,
    BulkTimeout,
    ExportRequest,
    Manifest,
    PollPolicy,
)
from connector.fhir.client import FhirClient
from connector.fhir.errors import CapabilityError
from connector.fhir.retry import RetryPolicy


class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _bulk(stub, *, policy: PollPolicy | None = None, auth=None) -> tuple[BulkClient, FakeTime]:
    t = FakeTime()
    client = FhirClient(stub.base_url, auth=auth, retry=RetryPolicy(
        max_attempts=3, backoff_initial=0.01, backoff_max=0.02, retry_after_cap=5))
    return BulkClient(client, policy=policy or PollPolicy(), sleep=t.sleep, clock=t.clock), t


def _manifest(stub, files: list[tuple[str, str]], **extra) -> dict:
    return {"transactionTime": "2024-05-01T10:00:00.000Z", "request": stub.url("$export"),
            "requiresAccessToken": True,
            "output": [{"type": t, "url": stub.url(p)} for t, p in files], "error": [], **extra}


def _query(path: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(path).query)


# ------------------------------------------------------------------ kick-off


def test_get_kickoff_sends_prefer_and_the_parameters_and_returns_the_status_url(stub):
    stub.route("GET", "/fhir/Group/g1/$export",
               (202, {"Content-Location": stub.url("status/7")}, b""))
    bulk, _ = _bulk(stub)
    request = ExportRequest(level="group", group_id="g1", types=("Patient", "Observation"),
                            since="2024-01-01T00:00:00.000Z",
                            type_filters=("Observation?category=laboratory",
                                          "Observation?category=vital-signs"))
    assert bulk.kickoff(request) == stub.url("status/7")
    (_, path, headers, _), = stub.hits("GET", "/fhir/Group/g1/$export")
    assert headers["Prefer"] == "respond-async"
    assert headers["Accept"] == "application/fhir+json"
    assert _query(path) == [
        ("_outputFormat", "application/fhir+ndjson"), ("_type", "Patient,Observation"),
        ("_since", "2024-01-01T00:00:00.000Z"),
        ("_typeFilter", "Observation?category=laboratory"),
        ("_typeFilter", "Observation?category=vital-signs")]


def test_post_kickoff_sends_a_parameters_body_and_a_refused_get_falls_back_to_post(stub):
    stub.route("GET", "/fhir/Patient/$export", (405, {}, {"resourceType": "OperationOutcome",
                                                          "issue": [{"severity": "error",
                                                                     "code": "not-supported"}]}))
    stub.route("POST", "/fhir/Patient/$export",
               (202, {"Content-Location": "/fhir/status/9"}, b""))
    bulk, _ = _bulk(stub)
    status = bulk.kickoff(ExportRequest(level="patient", types=("Patient",),
                                        since="2024-01-01T00:00:00.000Z"))
    assert status == stub.url("status/9")  # relative Content-Location resolved
    (_, _, headers, body), = stub.hits("POST", "/fhir/Patient/$export")
    assert headers["Content-Type"] == "application/fhir+json"
    params = orjson.loads(body)
    assert params["resourceType"] == "Parameters"
    assert {"name": "_type", "valueString": "Patient"} in params["parameter"]
    assert {"name": "_since", "valueInstant": "2024-01-01T00:00:00.000Z"} in params["parameter"]


def test_refused_optional_parameters_are_dropped_one_by_one(stub):
    refusal = (400, {}, {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-supported", "diagnostics": "_typeFilter"}]})
    stub.route("GET", "/fhir/$export", refusal, refusal,
               (202, {"Content-Location": stub.url("status/1")}, b""))
    bulk, _ = _bulk(stub)
    bulk.kickoff(ExportRequest(types=("Observation",), partial_manifests=True,
                               type_filters=("Observation?category=laboratory",)))
    first, second, third = stub.hits("GET", "/fhir/$export")
    assert [k for k, _ in _query(first[1])] == [
        "_outputFormat", "_type", "_typeFilter", "allowPartialManifests"]
    assert [k for k, _ in _query(second[1])] == ["_outputFormat", "_type", "_typeFilter"]
    assert [k for k, _ in _query(third[1])] == ["_outputFormat", "_type"]


def test_a_kickoff_without_content_location_is_a_clear_error(stub):
    stub.route("GET", "/fhir/$export", (200, {}, {"resourceType": "Bundle"}))
    bulk, _ = _bulk(stub)
    with pytest.raises(BulkExportError, match="did not start an asynchronous export"):
        bulk.kickoff(ExportRequest())


def test_levels_come_from_the_capability_statement(stub):
    stub.route("GET", "/fhir/metadata", (200, {}, capability(("patient",))))
    bulk, _ = _bulk(stub)
    assert bulk.export_levels() == {"patient"}
    bulk.check_level("patient")
    with pytest.raises(CapabilityError, match="does not offer \\$export at system level"):
        bulk.check_level("system")


# ------------------------------------------------------------------- polling


def test_polling_honours_retry_after_with_a_cap_and_reports_x_progress(stub):
    stub.route("GET", "/fhir/status/1",
               (202, {"Retry-After": "3", "X-Progress": "10% done"}, b""),
               (202, {"Retry-After": "500", "X-Progress": "50% done"}, b""),
               (202, {}, b""),
               (202, {}, b""),
               (200, {}, _manifest(stub, [("Patient", "files/p.ndjson")])))
    bulk, t = _bulk(stub, policy=PollPolicy(max_wait=60, min_wait=0.5, initial=1.0))
    seen: list[str | None] = []
    manifest = bulk.wait_for(stub.url("status/1"), on_progress=seen.append)
    assert t.sleeps == [3.0, 60.0, 1.0, 2.0]  # capped; then exponential without Retry-After
    assert seen == ["10% done", "50% done", None, None]
    assert manifest.transaction_time == "2024-05-01T10:00:00.000Z"
    assert [(f.type, f.url) for f in manifest.files] == [
        ("Patient", stub.url("files/p.ndjson"))]


def test_polling_stops_at_the_time_limit_with_a_clear_error(stub):
    stub.route("GET", "/fhir/status/1", (202, {"Retry-After": "10", "X-Progress": "slow"}, b""))
    bulk, t = _bulk(stub, policy=PollPolicy(timeout=25, max_wait=60))
    with pytest.raises(BulkTimeout, match="did not finish within 25 s.*last progress: slow"):
        bulk.wait_for(stub.url("status/1"))
    assert t.sleeps == [10.0, 10.0]


def test_a_failed_job_raises_with_the_servers_operation_outcome(stub):
    stub.route("GET", "/fhir/status/1", (500, {}, {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "processing",
         "details": {"text": "An internal timeout has occurred"}}]}))
    bulk, _ = _bulk(stub)
    with pytest.raises(BulkExportError) as err:
        bulk.wait_for(stub.url("status/1"))
    assert "the export failed on the server (HTTP 500)" in str(err.value)
    assert "An internal timeout has occurred" in str(err.value)
    assert len(stub.hits("GET", "/fhir/status/1")) == 1  # a failed job is not polled again


def test_transient_answers_while_polling_are_waited_out(stub):
    transient = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "transient", "diagnostics": "busy"}]}
    stub.route("GET", "/fhir/status/1", (429, {"Retry-After": "2"}, b""),
               (500, {}, transient), (503, {"Retry-After": "4"}, b"gateway says no"),
               (200, {}, _manifest(stub, [])))
    bulk, t = _bulk(stub, policy=PollPolicy(initial=1.0))
    bulk.wait_for(stub.url("status/1"))
    assert t.sleeps == [2.0, 1.0, 4.0]
    assert bulk.client.stats.retries == 3


def test_a_job_the_server_forgot_is_reported_as_gone(stub):
    stub.route("GET", "/fhir/status/1", (404, {}, {"resourceType": "OperationOutcome",
                                                   "issue": [{"severity": "error",
                                                              "code": "not-found"}]}))
    bulk, _ = _bulk(stub)
    with pytest.raises(BulkJobGone):
        bulk.wait_for(stub.url("status/1"))


def test_a_partial_manifest_is_handed_over_before_the_export_completes(stub):
    partial = _manifest(stub, [("Patient", "files/p.ndjson")])
    final = _manifest(stub, [("Patient", "files/p.ndjson"), ("Observation", "files/o.ndjson")])
    stub.route("GET", "/fhir/status/1", (202, {"X-Progress": "1 of 2"}, partial),
               (200, {}, final))
    bulk, _ = _bulk(stub)
    handed: list[list[str]] = []
    manifest = bulk.wait_for(stub.url("status/1"),
                             on_manifest=lambda m: handed.append([f.type for f in m.files]))
    assert handed == [["Patient"]]
    assert [f.type for f in manifest.files] == ["Patient", "Observation"]


def test_manifest_parsing_reads_outcome_deleted_counts_and_next_links():
    body = {"transactionTime": "2024-05-01T10:00:00Z", "requiresAccessToken": False,
            "output": [{"type": "Patient", "url": "files/p.ndjson", "count": 3}],
            "deleted": [{"type": "Bundle", "url": "files/d.ndjson"}],
            "outcome": [{"type": "OperationOutcome", "url": "files/e.ndjson"}],
            "link": [{"relation": "next", "url": "status/1?page=2"}]}
    m = Manifest.parse(body, "http://h:1/fhir/")
    assert m.transaction_time == "2024-05-01T10:00:00.000Z"
    assert m.requires_access_token is False
    assert [(f.kind, f.type, f.url, f.count) for f in m.files] == [
        ("output", "Patient", "http://h:1/fhir/files/p.ndjson", 3),
        ("deleted", "Bundle", "http://h:1/fhir/files/d.ndjson", None),
        ("error", "OperationOutcome", "http://h:1/fhir/files/e.ndjson", None)]
    assert m.next_url == "http://h:1/fhir/status/1?page=2"
    with pytest.raises(BulkExportError, match="not a manifest"):
        Manifest.parse({"resourceType": "OperationOutcome"}, "http://h:1/")


# ------------------------------------------------------------------ downloads


def test_gzip_is_kept_compressed_on_disk_and_written_via_a_part_file(stub, tmp_path):
    lines = b'{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b"}\n'
    stub.route("GET", "/fhir/files/p.ndjson",
               (200, {"Content-Encoding": "gzip", "Content-Type": "application/fhir+ndjson"},
                gzip.compress(lines)))
    bulk, _ = _bulk(stub)
    got = bulk.download(stub.url("files/p.ndjson"), tmp_path / "p.ndjson", with_token=True)
    assert got.gzip and got.path == tmp_path / "p.ndjson.gz"
    assert gzip.decompress(got.path.read_bytes()) == lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.ndjson.gz"]  # no .part left


def test_the_token_goes_only_where_the_manifest_says_and_only_to_our_server(stub, tmp_path):
    stub.route("GET", "/fhir/files/p.ndjson", (200, {}, b'{"resourceType":"Patient"}\n'))
    bulk, _ = _bulk(stub, auth=BearerAuth(lambda: "sekrit-token"))
    bulk.download(stub.url("files/p.ndjson"), tmp_path / "a.ndjson", with_token=True)
    bulk.download(stub.url("files/p.ndjson"), tmp_path / "b.ndjson", with_token=False)
    with_token, without = stub.hits("GET", "/fhir/files/p.ndjson")
    assert with_token[2]["Authorization"] == "Bearer sekrit-token"
    assert "Authorization" not in without[2]
    with pytest.raises(BulkExportError, match="on another host"):
        bulk.download("http://files.elsewhere.example/p.ndjson", tmp_path / "c.ndjson",
                      with_token=True)
    assert len(stub.requests) == 2


def test_delete_tells_the_server_and_never_raises(stub):
    stub.route("DELETE", "/fhir/status/1", (202, {}, b""))
    bulk, _ = _bulk(stub)
    assert bulk.delete(stub.url("status/1")) is True
    assert bulk.delete("http://127.0.0.1:1/fhir/status/1") is False  # nobody listens there
