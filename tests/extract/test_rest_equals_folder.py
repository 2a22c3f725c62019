"""The default fixture served by a real FHIR server gives what the folder gives.

Each site of ``fixtures/cohort`` is loaded into its own sekmet server (through
transaction Bundles, the resources the folder source keeps), then extracted over
REST with ``--site`` set, so sites match. Checked:

- scope "all": the raw store holds the same resources as the folder source's
  (same site, type, id and content, apart from the meta.versionId/lastUpdated the
  server assigns), and the whole pipeline gives the same results.json and CSVs;
- scope "cohort": exactly the resources of the screened patients, and the same
  CSVs; results.json differs only in ``excluded.no_car_t``, which can count only
  the patients a cohort-scoped extraction sees (those with a CAR-T record).

Slow (about a minute): the fixture is ~29,000 resources. The pipeline comparison
skips until the map, derive and analysis stages are importable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
import pytest
from fhir_server import load_resources, start_server, stored_resources
from sqlalchemy import select
from sqlmodel import Session

from connector.db.models import RawResource
from connector.extract import run_extract

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "cohort"
SITES = ("site_a", "site_b")
FAST = {"rate_limit": 0, "page_size": 500, "concurrency": 4}


def _pipeline_available() -> bool:
    try:
        import connector.analysis  # noqa: F401
        import connector.cohort  # noqa: F401
        import connector.mapping  # noqa: F401
        import connector.report  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def folder_db(tmp_path_factory):
    if not (FIXTURE / "site_a").is_dir():
        pytest.skip("fixtures/cohort is not there yet")
    from connector.pipeline import open_db

    path = tmp_path_factory.mktemp("folder") / "folder.db"
    engine = open_db(f"sqlite:///{path}")
    run_extract(engine, str(FIXTURE))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def site_servers(folder_db):
    servers = {}
    try:
        for site in SITES:
            servers[site] = start_server()
            load_resources(servers[site], stored_resources(folder_db, site), size=500)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _extract(tmp_path_factory, servers, scope: str):
    from connector.pipeline import open_db

    path = tmp_path_factory.mktemp(f"rest_{scope}") / "rest.db"
    engine = open_db(f"sqlite:///{path}")
    for site, server in servers.items():
        summary = run_extract(engine, server.base_url, site=site, scope=scope, **FAST)
        assert summary.sites == [site]
    return engine


@pytest.fixture(scope="module")
def rest_all(tmp_path_factory, site_servers):
    engine = _extract(tmp_path_factory, site_servers, "all")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def rest_cohort(tmp_path_factory, site_servers):
    engine = _extract(tmp_path_factory, site_servers, "cohort")
    yield engine
    engine.dispose()


def _content(engine) -> dict[tuple[str, str, str], dict]:
    """(site, type, id) -> body without the meta the server assigns, for live rows."""
    out = {}
    with Session(engine) as s:
        rows = s.exec(select(RawResource.site, RawResource.resource_type,
                             RawResource.resource_id, RawResource.body)
                      .where(RawResource.deleted.is_(False))).all()
    for site, rtype, rid, body in rows:
        doc = orjson.loads(body)
        meta = {k: v for k, v in (doc.pop("meta", None) or {}).items()
                if k not in ("versionId", "lastUpdated")}
        if meta:
            doc["meta"] = meta
        out[(site, rtype, rid)] = doc
    return out


def _patient_of(key: tuple[str, str, str], doc: dict) -> str | None:
    if key[1] == "Patient":
        return key[2]
    ref = (doc.get("subject") or {}).get("reference", "")
    return ref.split("/")[-1] if ref.startswith("Patient/") else None


def test_all_scope_raw_store_equals_the_folder_source(folder_db, rest_all):
    folder, rest = _content(folder_db), _content(rest_all)
    assert len(folder) > 20000
    assert folder.keys() == rest.keys()
    different = [k for k in folder if folder[k] != rest[k]]
    assert not different


def test_cohort_scope_fetches_the_screened_patients_whole(folder_db, rest_cohort):
    folder, rest = _content(folder_db), _content(rest_cohort)
    truth = json.loads((FIXTURE / "ground_truth.json").read_text())
    with_car_t = {(p["site"], p["source_id"]) for p in truth["patients"]
                  if p["exclusion_reason"] != "no_car_t"}
    fetched = {(k[0], k[2]) for k in rest if k[1] == "Patient"}
    assert with_car_t <= fetched
    assert len(fetched) < len({(k[0], k[2]) for k in folder if k[1] == "Patient"})
    expected = {k for k, doc in folder.items() if (k[0], _patient_of(k, doc)) in fetched}
    assert rest.keys() == expected
    assert all(rest[k] == folder[k] for k in rest)


def _report(engine, out: Path) -> tuple[dict, dict[str, bytes]]:
    from connector import pipeline

    pipeline.map_(engine)
    pipeline.derive(engine)
    pipeline.analyze(engine, out)
    results = json.loads((out / "results.json").read_text())
    csvs = {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}
    return results, csvs


@pytest.fixture(scope="module")
def folder_report(folder_db, tmp_path_factory):
    if not _pipeline_available():
        pytest.skip("map/derive/analysis stages are not importable yet")
    out = tmp_path_factory.mktemp("report_folder")
    yield _report(folder_db, out)
    shutil.rmtree(out, ignore_errors=True)


def test_all_scope_gives_the_same_results_and_csvs(folder_report, rest_all, tmp_path):
    results, csvs = _report(rest_all, tmp_path / "report")
    assert {"patients.csv", "therapy_lines.csv"} <= set(csvs)
    assert csvs == folder_report[1]
    assert results == folder_report[0]


def test_cohort_scope_gives_the_same_csvs_and_results_but_the_unseen(folder_report,
                                                                      rest_cohort, tmp_path):
    results, csvs = _report(rest_cohort, tmp_path / "report")
    assert csvs == folder_report[1]
    _same_but_the_unseen(results, json.loads(json.dumps(folder_report[0])))


def _same_but_the_unseen(results: dict, expected: dict) -> None:
    """Patients without any CAR-T record are never fetched, so never counted: not in
    ``excluded.no_car_t`` nor in the patient flow's first two steps."""
    assert results["excluded"]["no_car_t"] <= expected["excluded"]["no_car_t"]
    results["excluded"]["no_car_t"] = expected["excluded"]["no_car_t"]
    got_flow, want_flow = results.pop("patient_flow"), expected.pop("patient_flow")
    for got, want in [(got_flow["overall"], want_flow["overall"]),
                      *[(got_flow["by_site"][s], want_flow["by_site"][s])
                        for s in want_flow["by_site"]]]:
        assert got["steps"][2:] == want["steps"][2:]
        assert got["steps"][0]["n"] <= want["steps"][0]["n"]
    assert results == expected


@pytest.fixture(scope="module")
def duck_cohort(tmp_path_factory, folder_db):
    """The folder through the DuckDB loader with ``--scope cohort`` (connector/extract/
    duckscreen.py): the screen in SQL instead of the server's searches."""
    from connector.pipeline import open_db

    path = tmp_path_factory.mktemp("duck_cohort") / "duck.db"
    engine = open_db(f"sqlite:///{path}")
    summary = run_extract(engine, str(FIXTURE), scope="cohort", loader="duckdb")
    assert sum(summary.counts.outside.values()) > 0
    yield engine
    engine.dispose()


def _whole_keys(engine) -> set[tuple[str, str, str]]:
    with Session(engine) as s:
        return set(s.exec(select(RawResource.site, RawResource.resource_type,
                                 RawResource.resource_id)
                          .where(RawResource.deleted.is_(False),
                                 RawResource.trimmed.is_(None))).all())


def test_duckdb_cohort_scope_keeps_what_the_rest_screen_fetches(rest_cohort, duck_cohort):
    rest, duck = _content(rest_cohort), _content(duck_cohort)
    patients = {(k[0], k[2]) for k in rest if k[1] == "Patient"}
    assert {(k[0], k[2]) for k in duck if k[1] == "Patient"} == patients
    # the same resources, except that Observations no lab code maps are only counted
    assert _whole_keys(duck_cohort) == _whole_keys(rest_cohort) == set(duck)
    assert all(duck[k] == rest[k] for k in duck)


def test_duckdb_cohort_scope_gives_the_rest_cohort_report(folder_report, duck_cohort,
                                                          tmp_path):
    results, csvs = _report(duck_cohort, tmp_path / "report")
    assert csvs == folder_report[1]
    _same_but_the_unseen(results, json.loads(json.dumps(folder_report[0])))
