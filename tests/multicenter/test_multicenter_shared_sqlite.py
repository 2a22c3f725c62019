"""Issue 13, item 4: two sites in one SQLite database, each run by its own process.

A run maps, derives and reports only the sites whose locks it holds (another run may be
half-way through loading the rest); ``cohort analyze`` takes the lock of every site it
reports; a database kept busy by another process's long transaction ends the run with
exit 4 and a message, not a traceback. Every run here is a real second process (``python
-m connector``), and the tables are compared with clean runs of each site alone."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from normalized_tables import TABLES, sites_in, snapshot

from connector.cli import EXIT_LOCKED, EXIT_USAGE
from connector.db import get_engine
from connector.lock import site_lock
from connector.synth import synthesize

ROOT = Path(__file__).resolve().parents[2]


def _cohort(*args: str, env: dict | None = None, timeout: float = 240
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "connector", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _ok(*args: str) -> subprocess.CompletedProcess:
    done = _cohort(*args)
    assert done.returncode == 0, done.stderr
    return done


def _report_sites(report: Path) -> set[str]:
    with (report / "patients.csv").open(newline="", encoding="utf-8") as fh:
        return {row["site"] for row in csv.DictReader(fh)}


def _results(report: Path) -> dict:
    return json.loads((report / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict:
    """Two sites' folders and, for each, a clean run of that site alone (tables, results)."""
    work = tmp_path_factory.mktemp("shared_sqlite")
    src = work / "src"
    synthesize(n_patients=8, n_sites=2, seed=41, out_dir=src, noise=True)
    clean = {}
    for name in ("site_a", "site_b"):
        url = f"sqlite:///{work / f'clean_{name}.db'}"
        _ok("run", "--source", str(src / name), "--db", url, "--out", str(work / f"r_{name}"),
            "-q")
        clean[name] = {"tables": snapshot(url), "results": _results(work / f"r_{name}")}
    return {"src": src, "clean": clean}


def _merged(*tables: dict) -> dict:
    return {t: sorted(row for one in tables for row in one[t]) for t in TABLES}


def test_a_run_maps_derives_and_reports_only_the_sites_it_locked(sites, tmp_path):
    """site_a is half-loaded by another run (which holds its lock); a run of site_b must not
    map, derive or report that half, and must not touch it."""
    half = tmp_path / "half" / "site_a"
    half.mkdir(parents=True)
    for name in ("Patient.ndjson", "MedicationAdministration.ndjson"):
        shutil.copy(sites["src"] / "site_a" / name, half / name)
    url = f"sqlite:///{tmp_path / 'cohort.db'}"
    _ok("extract", "--source", str(half), "--db", url, "-q")
    raw_a = snapshot(url)["raw_resource"]
    engine = get_engine(url)
    report = tmp_path / "report"
    with site_lock(engine, "site_a"):  # the other run, still loading site_a
        done = _cohort("run", "--source", str(sites["src"] / "site_b"), "--db", url,
                       "--out", str(report), "-q")
    engine.dispose()
    assert done.returncode == 0, done.stderr
    assert "(site_b)" in done.stdout and "site_a" not in done.stdout
    assert sites_in(url, "patient") == {"site_b"} == sites_in(url, "cohort_patient")
    clean_b = sites["clean"]["site_b"]
    assert snapshot(url, sites=["site_b"]) == clean_b["tables"]
    assert snapshot(url, sites=["site_a"])["raw_resource"] == raw_a  # untouched
    assert _report_sites(report) == {"site_b"}
    assert _results(report)["n_patients"] == clean_b["results"]["n_patients"]
    assert _results(report)["n_sites"] == 1


def test_analyze_takes_the_locks_of_the_sites_it_reports(sites, tmp_path):
    url = f"sqlite:///{tmp_path / 'cohort.db'}"
    for name in ("site_a", "site_b"):
        _ok("run", "--source", str(sites["src"] / name), "--db", url, "--out",
            str(tmp_path / f"r_{name}"), "-q")
    engine = get_engine(url)
    report = tmp_path / "report"
    with site_lock(engine, "site_a"):  # a run of site_a is going
        everything = _cohort("analyze", "--db", url, "--out", str(report), "-q")
        only_b = _cohort("analyze", "--db", url, "--out", str(report), "--site", "site_b",
                         "-q")
    engine.dispose()
    assert everything.returncode == EXIT_LOCKED, everything.stderr
    assert "lock for site 'site_a'" in everything.stderr
    assert "Traceback" not in everything.stderr
    assert only_b.returncode == 0, only_b.stderr
    assert _report_sites(report) == {"site_b"}
    assert _results(report)["n_patients"] == sites["clean"]["site_b"]["results"]["n_patients"]
    _ok("analyze", "--db", url, "--out", str(report), "-q")  # lock released: every site
    assert _report_sites(report) == {"site_a", "site_b"}
    clean = sites["clean"]
    assert _results(report)["n_patients"] == sum(c["results"]["n_patients"]
                                                 for c in clean.values())
    assert snapshot(url) == _merged(clean["site_a"]["tables"], clean["site_b"]["tables"])


def test_a_database_kept_busy_gives_exit_4_and_a_message_then_resumes(sites, tmp_path):
    """Another process's long write transaction (say, site_a's map) outlasts the busy
    timeout: the run of site_b stops with exit 4 and a message, and the next run loads
    site_b as a clean run does."""
    url = f"sqlite:///{tmp_path / 'cohort.db'}"
    _ok("run", "--source", str(sites["src"] / "site_a"), "--db", url, "--out",
        str(tmp_path / "r_a"), "-q")
    blocker = sqlite3.connect(tmp_path / "cohort.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the database's write lock
    try:
        busy = _cohort("run", "--source", str(sites["src"] / "site_b"), "--db", url,
                       "--out", str(tmp_path / "r_b"), "-q",
                       env={"COHORT_SQLITE_BUSY_SECONDS": "1"}, timeout=120)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert busy.returncode == EXIT_LOCKED, busy.stderr
    assert "the database is busy" in busy.stderr and "COHORT_SQLITE_BUSY_SECONDS" in busy.stderr
    assert "Traceback" not in busy.stderr and "OperationalError" not in busy.stderr
    assert not (tmp_path / "r_b").exists()
    _ok("run", "--source", str(sites["src"] / "site_b"), "--db", url, "--out",
        str(tmp_path / "r_b"), "-q")
    clean = sites["clean"]
    assert snapshot(url) == _merged(clean["site_a"]["tables"], clean["site_b"]["tables"])
    assert _report_sites(tmp_path / "r_b") == {"site_b"}


@pytest.mark.parametrize("value", ["soon", "-1", "0"])
def test_a_bad_busy_timeout_is_a_usage_error(tmp_path, value):
    done = _cohort("map", "--db", f"sqlite:///{tmp_path / 'x.db'}", "-q",
                   env={"COHORT_SQLITE_BUSY_SECONDS": value})
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "COHORT_SQLITE_BUSY_SECONDS must be a number of seconds" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_runs_of_two_sites_at_once_each_report_their_own(sites, tmp_path):
    url = f"sqlite:///{tmp_path / 'cohort.db'}"
    _ok("extract", "--source", str(sites["src"] / "site_a"), "--db", url, "-q")  # schema made
    runs = {name: subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "--source", str(sites["src"] / name),
         "--db", url, "--out", str(tmp_path / f"r_{name}"), "-q"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("site_a", "site_b")}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err)
        assert _report_sites(tmp_path / f"r_{name}") == {name}
    clean = sites["clean"]
    assert snapshot(url) == _merged(clean["site_a"]["tables"], clean["site_b"]["tables"])
