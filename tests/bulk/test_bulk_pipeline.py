"""End to end: a bulk export of a server holding a cohort gives the same results.json and CSVs
as the folder source. Skipped while the map/derive/analysis/report stages are not importable.

The quick test uses a small synthetic cohort and writes only results.json and the CSVs;
the slow one runs ``cohort run --source URL --bulk`` per site against servers loaded with
fixtures/cohort/ (when that folder exists) and compares with ``cohort run --source
fixtures/cohort``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from conftest import FAST
from fhir_server import load_resources, start_server, stored_resources

from connector.db import get_engine, init_db
from connector.extract import run_extract

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "cohort"
STAGES = ("connector.mapping", "connector.cohort", "connector.analysis", "connector.report")


def _stages_or_skip() -> None:
    for name in STAGES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            pytest.skip(f"{name} is not importable yet: {exc}")


def _sites(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def _servers(folder_engine, sites: list[str], tmp_path: Path) -> dict:
    """One sekmet per site, holding what the folder source kept for that site."""
    servers = {}
    for site in sites:
        server = start_server()
        server.ctx.bulk.root = tmp_path / f"sekmet-{site}"
        load_resources(server, stored_resources(folder_engine, site))
        servers[site] = server
    return servers


def _results_and_csvs(engine, out: Path) -> dict[str, str]:
    """results.json and the CSVs exactly as the report writes them (without the figures)."""
    from connector import pipeline
    from connector.analysis import run_analysis
    from connector.report import results_text
    from connector.report.tables import write_tables

    pipeline.map_(engine)
    pipeline.derive(engine)
    analysis = run_analysis(engine)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(results_text(analysis.results), encoding="utf-8")
    write_tables(analysis.patients, analysis.lines, out)
    return _report_files(out)


def _report_files(out: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out.iterdir())
            if p.name == "results.json" or p.suffix == ".csv"}


def test_bulk_export_gives_the_same_results_as_the_folder_source(tmp_path):
    _stages_or_skip()
    from connector.synth import synthesize

    folder = tmp_path / "cohort"
    synthesize(n_patients=4, n_sites=2, seed=11, out_dir=folder)
    by_folder = get_engine(f"sqlite:///{tmp_path / 'folder.db'}")
    init_db(by_folder)
    run_extract(by_folder, str(folder))
    expected = _results_and_csvs(by_folder, tmp_path / "report_folder")
    assert "results.json" in expected and len(expected) >= 3

    by_bulk = get_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    init_db(by_bulk)
    servers = _servers(by_folder, _sites(folder), tmp_path)
    try:
        for site, server in servers.items():
            run_extract(by_bulk, server.base_url, site=site, bulk=True, **FAST)
    finally:
        for server in servers.values():
            server.stop()
    assert _results_and_csvs(by_bulk, tmp_path / "report_bulk") == expected


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURE.is_dir(), reason="fixtures/cohort/ is not generated yet")
def test_cohort_run_bulk_on_the_fixture_cohort_matches_the_folder_run(tmp_path):
    _stages_or_skip()
    from typer.testing import CliRunner

    from connector.cli import app

    runner = CliRunner()
    folder_db = f"sqlite:///{tmp_path / 'folder.db'}"
    result = runner.invoke(app, ["run", "--source", str(FIXTURE), "--db", folder_db,
                                 "--out", str(tmp_path / "report_folder"), "-q"])
    assert result.exit_code == 0, result.output
    expected = _report_files(tmp_path / "report_folder")

    by_folder = get_engine(folder_db)
    servers = _servers(by_folder, _sites(FIXTURE), tmp_path)
    bulk_db = f"sqlite:///{tmp_path / 'bulk.db'}"
    try:
        for site, server in servers.items():
            result = runner.invoke(app, ["run", "--source", server.base_url, "--site", site,
                                         "--bulk", "--db", bulk_db,
                                         "--out", str(tmp_path / "report_bulk"), "-q"])
            assert result.exit_code == 0, result.output
    finally:
        for server in servers.values():
            server.stop()
    # each run reports only the site it ran (issue 13 item 4); analyze reports them all
    result = runner.invoke(app, ["analyze", "--db", bulk_db,
                                 "--out", str(tmp_path / "report_bulk"), "-q"])
    assert result.exit_code == 0, result.output
    assert _report_files(tmp_path / "report_bulk") == expected
