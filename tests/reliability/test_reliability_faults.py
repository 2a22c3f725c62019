"""30% of requests faulted (429, 503, 500, resets, truncated and slow answers): REST and
bulk extractions end with the same raw store, normalized and derived tables as
fault-free runs against the same server."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from fault_proxy import ALL_KINDS
from fhir_server import load_resources, start_behind_proxy
from reliability_db import DERIVED_TABLES, MAPPED_TABLES, RAW_TABLES, diff, snapshot
from sqlalchemy import select
from sqlmodel import Session

from connector import pipeline
from connector.db.models import ExtractRun
from connector.extract import run_extract
from connector.fhir.config import RetryConfig
from connector.synth import synthesize

RATE = 0.3
RETRY = RetryConfig(max_attempts=12, backoff_initial=0.01, backoff_max=0.05, budget=5000)
REST = {"rate_limit": 0, "page_size": 40, "patients_per_request": 4, "overlap_seconds": 0,
        "timeout": 0.4, "retry": RETRY}
BULK = {"poll_max_wait": 0.05, "rate_limit": 0, "timeout": 0.4, "retry": RETRY}


def _resources(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.rglob("*.ndjson")):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return out


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """A server with a small synthetic cohort behind the fault proxy: (server, proxy)."""
    folder = tmp_path_factory.mktemp("synth") / "cohort"
    synthesize(4, 1, 31, folder)
    server, proxy = start_behind_proxy(seed=30)
    server.ctx.bulk.root = tmp_path_factory.mktemp("sekmet") / "bulk"
    load_resources(server, _resources(folder))
    yield server, proxy
    proxy.stop()
    server.stop()


def _reset(proxy, rate: float) -> None:
    proxy.rate, proxy.kinds, proxy.retry_after, proxy.slow_seconds = rate, ALL_KINDS, "0", 0.7
    proxy.script, proxy.hook, proxy.only = [], None, None
    proxy.faults.clear()
    proxy.requests = 0


def _all_stages(engine) -> dict[str, list[tuple]]:
    pipeline.map_(engine)
    pipeline.derive(engine)
    return snapshot(engine, RAW_TABLES + MAPPED_TABLES[:-1] + DERIVED_TABLES)


def _last_run(engine) -> ExtractRun:
    with Session(engine) as s:
        return s.exec(select(ExtractRun).order_by(ExtractRun.id.desc())).scalars().first()


@pytest.mark.parametrize("scope", ["cohort", "all"])
def test_rest_extraction_at_30_percent_faults_equals_a_clean_run(proxied, tmp_path, scope):
    server, proxy = proxied
    _reset(proxy, 0.0)
    clean = pipeline.open_db(f"sqlite:///{tmp_path / 'clean.db'}")
    run_extract(clean, server.base_url, site="s", scope=scope, **REST)
    _reset(proxy, RATE)
    faulty = pipeline.open_db(f"sqlite:///{tmp_path / 'faulty.db'}")
    run_extract(faulty, server.base_url, site="s", scope=scope, **REST)
    faults = sum(proxy.faults.values())
    assert proxy.requests >= 40
    assert faults >= 0.2 * proxy.requests, proxy.faults
    assert len(proxy.faults) >= 5, proxy.faults  # nearly every kind of fault happened
    run = _last_run(faulty)
    assert run.status == "ok" and run.retries >= faults - 2
    assert json.loads(run.counts_json)["Patient"]["fetched"] > 0
    a, b = _all_stages(clean), _all_stages(faulty)
    assert a["patient"] and a["lab_result"] and a["cohort_patient"]
    assert not diff(a, b), diff(a, b)


def test_bulk_export_at_30_percent_faults_equals_a_clean_run(proxied, tmp_path):
    server, proxy = proxied
    _reset(proxy, 0.0)
    clean = pipeline.open_db(f"sqlite:///{tmp_path / 'clean.db'}")
    run_extract(clean, server.base_url, site="s", bulk=True,
                work_dir=str(tmp_path / "work-clean"), **BULK)
    _reset(proxy, RATE)
    faulty = pipeline.open_db(f"sqlite:///{tmp_path / 'faulty.db'}")
    run_extract(faulty, server.base_url, site="s", bulk=True,
                work_dir=str(tmp_path / "work-faulty"), **BULK)
    faults = sum(proxy.faults.values())
    # a bulk run makes only a handful of requests, so at 30% a few of them fail
    assert proxy.requests >= 5 and faults >= 1, (proxy.requests, proxy.faults)
    assert _last_run(faulty).status == "ok"
    a, b = _all_stages(clean), _all_stages(faulty)
    assert a["raw_resource"] and a["patient"]
    assert not diff(a, b), diff(a, b)
