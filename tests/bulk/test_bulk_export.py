"""Bulk $export extraction against sekmet-fhir: levels, kick-off forms, incremental _since,
error files, failed and slow jobs, resume, and agreement with the REST path."""

from __future__ import annotations

import orjson
import pytest
from conftest import FAST
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from connector.db import get_engine, init_db
from connector.db.models import BulkFile, BulkJob, ExtractRun, Quarantine, RawResource, SyncState
from connector.extract import run_extract
from connector.extract.bulk import BulkExtraction
from connector.fhir.bulk import BulkExportError, BulkTimeout


def _bulk(engine, url: str, **options):
    return run_extract(engine, url, bulk=True, **{**FAST, **options})


def _raw(engine) -> dict[tuple[str, str], dict]:
    with Session(engine) as s:
        rows = s.exec(select(RawResource.resource_type, RawResource.resource_id,
                             RawResource.body)).all()
    return {(t, i): orjson.loads(b) for t, i, b in rows}


def _jobs(engine) -> list[BulkJob]:
    with Session(engine) as s:
        return list(s.exec(select(BulkJob).order_by(BulkJob.id)).scalars())


def _runs(engine) -> list[ExtractRun]:
    with Session(engine) as s:
        return list(s.exec(select(ExtractRun).order_by(ExtractRun.id)).scalars())


def _other_engine(tmp_path, name: str = "other.db"):
    eng = get_engine(f"sqlite:///{tmp_path / name}")
    init_db(eng)
    return eng


def test_system_export_stores_what_the_server_holds_and_cleans_up(engine, bulk_server,
                                                                   bulk_data, tmp_path):
    summary = _bulk(engine, bulk_server.base_url)
    raw = _raw(engine)
    expected = {(r["resourceType"], r["id"]) for r in bulk_data["resources"]}
    assert set(raw) == expected and summary.read == len(expected)
    for (rtype, rid), body in raw.items():
        assert body == bulk_server.read(rtype, rid)  # with the server's meta, unchanged
    with Session(engine) as s:
        sources = set(s.exec(select(RawResource.source)).scalars())
    assert sources == {f"$export {t}" for t, _ in expected}
    (job,) = _jobs(engine)
    assert job.state == "done" and job.since is None and job.transaction_time
    assert job.status_url.rsplit("/", 1)[-1] not in bulk_server.ctx.bulk.jobs  # DELETEd
    (run,) = _runs(engine)
    assert run.mode == "bulk" and run.status == "ok" and "level=system" in run.message
    with Session(engine) as s:
        mark = s.exec(select(SyncState).where(SyncState.mode == "bulk")).scalars().one()
        files = s.exec(select(BulkFile)).scalars().all()
    assert mark.watermark == job.transaction_time and mark.resource_type == job.request_key
    assert all(f.done and f.lines_loaded == f.expected_count for f in files)
    assert {f.resource_type for f in files} == {t for t, _ in expected}
    work = tmp_path / ".bulk"
    assert not any(p.is_file() for p in work.rglob("*"))  # downloads removed once loaded


def test_patient_level_export_fetches_the_referenced_medications_by_id(engine, bulk_server):
    _bulk(engine, bulk_server.base_url, bulk_level="patient")
    (job,) = _jobs(engine)
    assert "Medication," not in job.request_key and "patient" in job.request_key
    assert ["_type", "Condition,MedicationAdministration,MedicationDispense,"
            "MedicationRequest,MedicationStatement,Observation,Patient,Procedure"] in [
        [k, ",".join(sorted(v.split(",")))] for k, v in orjson.loads(job.kickoff_params)]
    meds = {rid for (t, rid) in _raw(engine) if t == "Medication"}
    assert meds == {"med-cilta", "med-dex"}  # referenced; med-unused is not
    assert "2 Medication fetched by id" in _runs(engine)[0].message


def test_group_export_takes_only_the_groups_members(engine, fresh_server, bulk_data):
    members = bulk_data["patients"][:2]
    fresh_server.put({"resourceType": "Group", "id": "mm-cart", "type": "person",
                      "actual": True,
                      "member": [{"entity": {"reference": f"Patient/{p}"}} for p in members]})
    _bulk(engine, fresh_server.base_url, group="mm-cart")
    raw = _raw(engine)
    assert {rid for (t, rid) in raw if t == "Patient"} == set(members)
    subjects = {body["subject"]["reference"] for (t, _), body in raw.items()
                if t in ("Observation", "MedicationAdministration", "Procedure")}
    assert subjects == {f"Patient/{p}" for p in members}
    assert "$export group/mm-cart" in _jobs(engine)[0].request_key


def test_a_group_the_server_does_not_know_is_a_clear_error(engine, bulk_server):
    with pytest.raises(Exception, match="HTTP 404.*not found"):
        _bulk(engine, bulk_server.base_url, group="no-such-group")
    assert _runs(engine)[0].status == "failed"


def test_post_kickoff_loads_the_same_as_get(engine, bulk_server, tmp_path):
    _bulk(engine, bulk_server.base_url)
    other = _other_engine(tmp_path)
    _bulk(other, bulk_server.base_url, kickoff_method="POST")
    assert _raw(other) == _raw(engine)
    assert _jobs(other)[0].kickoff_method == "POST"


def test_next_export_asks_only_for_changes_since_the_previous_transaction_time(
        engine, fresh_server, bulk_data):
    _bulk(engine, fresh_server.base_url)
    first = _jobs(engine)[0]
    obs = next(r for r in bulk_data["resources"] if r["resourceType"] == "Observation")
    changed = {**fresh_server.read("Observation", obs["id"]), "status": "amended"}
    fresh_server.put(changed)
    summary = _bulk(engine, fresh_server.base_url)
    second = _jobs(engine)[1]
    assert second.since == first.transaction_time
    assert ["_since", first.transaction_time] in orjson.loads(second.kickoff_params)
    assert summary.read == 1 and summary.counts.updated["Observation"] == 1
    assert _raw(engine)[("Observation", obs["id"])]["status"] == "amended"
    full = _bulk(engine, fresh_server.base_url, since="full")
    assert _jobs(engine)[2].since is None and full.read == len(bulk_data["resources"])
    assert full.counts.stored == 0  # nothing new: the store is already up to date


def test_error_file_outcomes_are_kept_in_quarantine_and_counted(engine, bulk_server):
    # sekmet ignores a parameter it does not know and reports it in an error file
    summary = _bulk(engine, bulk_server.base_url, partial_manifests=True)
    with Session(engine) as s:
        (q,) = s.exec(select(Quarantine)).scalars().all()
    assert q.resource_type == "OperationOutcome" and q.stage == "extract"
    assert q.reason.startswith("bulk export warning: ") and "allowPartialManifests" in q.reason
    assert orjson.loads(q.raw)["resourceType"] == "OperationOutcome"
    assert summary.quarantined == 1 and summary.read > 0
    assert "export outcomes: 1 warning" in _runs(engine)[0].message


def test_a_failed_job_is_reported_with_the_servers_message_and_not_polled_again(
        engine, fresh_server, monkeypatch):
    def broken(job):
        raise RuntimeError("export volume is full")

    monkeypatch.setattr(fresh_server.ctx.bulk, "_patient_scope", broken)
    with pytest.raises(BulkExportError, match="export failed on the server.*export volume is full"):
        _bulk(engine, fresh_server.base_url)
    run = _runs(engine)[0]
    assert run.status == "failed" and "export volume is full" in run.message
    assert _jobs(engine)[0].state == "failed"
    monkeypatch.undo()
    _bulk(engine, fresh_server.base_url)
    assert [j.state for j in _jobs(engine)] == ["failed", "done"]


def test_a_slow_export_stops_at_the_time_limit_and_the_next_run_resumes_it(
        engine, fresh_server, monkeypatch, bulk_data):
    exports = fresh_server.ctx.bulk
    real_run = exports._run
    monkeypatch.setattr(exports, "_run", lambda job: None)  # the job never gets going
    with pytest.raises(BulkTimeout, match="did not finish within 0 s"):
        _bulk(engine, fresh_server.base_url, bulk_timeout=0.2)
    (job,) = _jobs(engine)
    assert job.state == "polling" and job.status_url
    server_job = exports.jobs[job.status_url.rsplit("/", 1)[-1]]
    real_run(server_job)  # the server finishes it while nobody is watching
    summary = _bulk(engine, fresh_server.base_url)
    assert [j.id for j in _jobs(engine)] == [job.id]  # no second kick-off
    assert _jobs(engine)[0].state == "done" and summary.read == len(bulk_data["resources"])
    assert "(resumed)" in _runs(engine)[1].message


def test_an_interrupted_load_resumes_without_downloading_finished_files(
        engine, bulk_proxied, tmp_path, monkeypatch):
    server, proxy = bulk_proxied
    real_load = BulkExtraction._load
    calls = {"n": 0}

    def dying_load(self, f, path, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the third file is on disk, not in the database
        return real_load(self, f, path, **kw)

    monkeypatch.setattr(BulkExtraction, "_load", dying_load)
    with pytest.raises(KeyboardInterrupt):
        _bulk(engine, server.base_url)
    with Session(engine) as s:
        done = s.exec(select(BulkFile.url).where(BulkFile.done.is_(True))).scalars().all()
    assert len(done) == 2
    monkeypatch.undo()
    before = len(proxy.paths)
    _bulk(engine, server.base_url)
    again = proxy.paths[before:]
    fetched = [p for p in again if "/bulk-files/" in p]
    assert not any(p.endswith(tuple(u.split("/fhir", 1)[1] for u in done)) for p in fetched)
    assert len(fetched) == 2  # of five files: two were loaded, one was on disk already
    assert not any("$export" in p for p in again)  # the same job, no second kick-off
    other = _other_engine(tmp_path)
    _bulk(other, server.base_url)
    assert _raw(other) == _raw(engine)


def test_bulk_and_rest_fill_the_raw_store_alike(engine, bulk_server, tmp_path):
    _bulk(engine, bulk_server.base_url)
    rest = _other_engine(tmp_path)
    run_extract(rest, bulk_server.base_url, scope="all")
    assert _raw(rest) == _raw(engine)


def test_cli_extract_with_bulk_and_its_usage_errors(bulk_server, tmp_path):
    from connector.cli import app

    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = runner.invoke(app, ["extract", "--source", bulk_server.base_url, "--bulk",
                                 "--db", db, "-q"])
    assert result.exit_code == 0, result.output
    assert "extract: 89 read, 89 stored, 0 quarantined" in result.output
    result = runner.invoke(app, ["extract", "--source", bulk_server.base_url, "--since",
                                 "2024-01-01", "--db", db, "-q"])
    assert result.exit_code == 2 and "add --bulk" in result.output
    (tmp_path / "folder").mkdir()
    result = runner.invoke(app, ["extract", "--source", str(tmp_path / "folder"), "--bulk",
                                 "--db", db, "-q"])
    assert result.exit_code == 2 and "--bulk needs a FHIR server" in result.output
    result = runner.invoke(app, ["extract", "--source", bulk_server.base_url, "--bulk",
                                 "--since", "yesterday", "--db", db, "-q"])
    assert result.exit_code == 2 and "--since 'yesterday'" in result.output
