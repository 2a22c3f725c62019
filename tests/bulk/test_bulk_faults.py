"""Bulk export through the fault proxy: a 503 while polling, a download dropped half way,
a 429 at kick-off, and files that expired before an interrupted run came back."""

from __future__ import annotations

import time

import pytest
from conftest import FAST
from sqlalchemy import select
from sqlmodel import Session

from connector.db.models import BulkJob, ExtractRun, RawResource
from connector.extract import run_extract
from connector.extract.bulk import BulkExtraction


def _inject(proxy, kind: str, where: str, times: int = 1) -> None:
    """The first ``times`` requests whose path contains ``where`` get fault ``kind``."""
    real = type(proxy).decide
    left = {"n": times}

    def decide(path: str) -> str | None:
        chosen = real(proxy, path)
        if where in path and left["n"] > 0:
            left["n"] -= 1
            with proxy.lock:
                proxy.faults[kind] += 1
            return kind
        return chosen

    proxy.decide = decide


def _bulk(engine, url: str, **options):
    return run_extract(engine, url, bulk=True, **{**FAST, **options})


def _stored(engine) -> set[tuple[str, str]]:
    with Session(engine) as s:
        return set(s.exec(select(RawResource.resource_type, RawResource.resource_id)).all())


def _expected(bulk_data) -> set[tuple[str, str]]:
    return {(r["resourceType"], r["id"]) for r in bulk_data["resources"]}


def _run(engine) -> ExtractRun:
    with Session(engine) as s:
        return s.exec(select(ExtractRun).order_by(ExtractRun.id.desc())).scalars().first()


def test_a_503_while_polling_is_waited_out(engine, bulk_proxied, bulk_data):
    server, proxy = bulk_proxied
    _inject(proxy, "503", "/bulk-status/", times=2)
    _bulk(engine, server.base_url)
    assert proxy.faults["503"] == 2
    polls = [p for p in proxy.paths if "/bulk-status/" in p]
    assert len(polls) >= 3  # two refused, then the answer (and the DELETE)
    assert _stored(engine) == _expected(bulk_data)
    run = _run(engine)
    assert run.status == "ok" and run.retries >= 2


def test_a_download_dropped_half_way_is_fetched_again(engine, bulk_proxied, bulk_data):
    server, proxy = bulk_proxied
    _inject(proxy, "truncate", "/bulk-files/")
    _bulk(engine, server.base_url)
    assert proxy.faults["truncate"] == 1
    files = [p for p in proxy.paths if "/bulk-files/" in p]
    assert len(files) == len(set(files)) + 1  # one file twice, the others once
    assert _stored(engine) == _expected(bulk_data)
    assert _run(engine).retries >= 1


def test_a_connection_reset_during_download_is_retried(engine, bulk_proxied, bulk_data):
    server, proxy = bulk_proxied
    _inject(proxy, "reset", "/bulk-files/", times=2)
    _bulk(engine, server.base_url)
    assert proxy.faults["reset"] == 2
    assert _stored(engine) == _expected(bulk_data)


def test_a_429_at_kickoff_honours_retry_after(engine, bulk_proxied, bulk_data):
    server, proxy = bulk_proxied
    proxy.retry_after = "1"
    _inject(proxy, "429", "$export")
    started = time.monotonic()
    _bulk(engine, server.base_url)
    assert time.monotonic() - started >= 1.0  # waited as asked
    assert proxy.faults["429"] == 1
    assert sum("$export" in p for p in proxy.paths) == 2
    with Session(engine) as s:
        assert len(s.exec(select(BulkJob)).all()) == 1  # one job, kicked off once it was let
    assert _stored(engine) == _expected(bulk_data)


def test_files_that_expired_before_the_rerun_lead_to_a_new_export(engine, bulk_proxied,
                                                                  bulk_data, monkeypatch):
    server, proxy = bulk_proxied
    real_load = BulkExtraction._load
    calls = {"n": 0}

    def dying_load(self, f, path, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_load(self, f, path, **kw)

    monkeypatch.setattr(BulkExtraction, "_load", dying_load)
    with pytest.raises(KeyboardInterrupt):
        _bulk(engine, server.base_url)
    monkeypatch.undo()
    with Session(engine) as s:
        (job,) = s.exec(select(BulkJob)).scalars().all()
    assert job.state == "downloading"
    server.ctx.bulk.delete(job.status_url.rsplit("/", 1)[-1])  # the server cleans up early
    _bulk(engine, server.base_url)
    with Session(engine) as s:
        states = [j.state for j in s.exec(select(BulkJob).order_by(BulkJob.id)).scalars()]
    assert states == ["abandoned", "done"]
    assert _stored(engine) == _expected(bulk_data)
