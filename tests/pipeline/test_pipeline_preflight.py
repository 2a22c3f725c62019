"""Issue 13, item 7: a careless operator's command fails at once, with exit 2 and what to
fix, before it creates a database, a lock file or a report folder: a source that is not
there or not a URL (with the URL to use for ``hapi.fhir.org/baseR4``), an ``--out`` that is
a file, a ``--site`` that would escape a folder. Nothing valid is lost: a correct run
afterwards gives the tables of a clean run."""

from __future__ import annotations

from pathlib import Path

import pytest
from normalized_tables import snapshot
from typer.testing import CliRunner

from connector.cli import EXIT_USAGE, app
from connector.synth import synthesize


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A small synthetic two-site folder (site_a, site_b)."""
    root = tmp_path_factory.mktemp("preflight") / "src"
    synthesize(n_patients=6, n_sites=2, seed=13, out_dir=root, noise=True)
    (root / "ground_truth.json").unlink()
    return root


@pytest.fixture(scope="module")
def clean(source, tmp_path_factory) -> dict:
    """The tables of a clean `cohort run` of ``source``."""
    work = tmp_path_factory.mktemp("clean")
    url = f"sqlite:///{work / 'clean.db'}"
    result = CliRunner().invoke(app, ["run", "--source", str(source), "--db", url,
                                      "--out", str(work / "report"), "-q"])
    assert result.exit_code == 0, result.output
    return snapshot(url)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _created(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("command", ["run", "extract"])
@pytest.mark.parametrize(("bad", "says"), [
    ("{tmp}/no_such_folder", "source folder not found"),
    ("hapi.fhir.org/baseR4", "give its URL with the scheme: https://hapi.fhir.org/baseR4"),
    ("localhost:8080/fhir", "https://localhost:8080/fhir"),
    ("ftp://fhir.example.org/r4", "starts with http:// or https://, not ftp://"),
    ("http://", "--source 'http://': base_url must be an http(s) URL"),
    ("https://user:pw@fhir.example.org/r4", "must not contain credentials"),
    ("{tmp}/missing.toml", "site config not found"),
    ("{tmp}/empty", "no NDJSON or JSON files under"),
])
def test_a_bad_source_creates_nothing(tmp_path, command, bad, says):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "empty").mkdir()
    out = ["--out", str(work / "report")] if command == "run" else []
    result = _invoke(command, "--source", bad.format(tmp=tmp_path), "--db",
                     f"sqlite:///{work / 'cohort.db'}", *out, "-q")
    assert result.exit_code == EXIT_USAGE, result.output
    assert says in result.output and "Traceback" not in result.output
    assert "pw" not in result.output.replace("https://user:pw@", "")
    assert _created(work) == []  # no database, no lock file, no report folder


def test_out_naming_a_file_fails_before_the_pipeline(source, tmp_path):
    occupied = tmp_path / "report.html"
    occupied.write_text("keep me")
    db = tmp_path / "cohort.db"
    for out in (occupied, occupied / "sub"):
        result = _invoke("run", "--source", str(source), "--db", f"sqlite:///{db}",
                         "--out", str(out), "-q")
        assert result.exit_code == EXIT_USAGE, result.output
        assert "is a file" in result.output and "extract:" not in result.output
    assert _created(tmp_path) == ["report.html"] and occupied.read_text() == "keep me"


@pytest.mark.parametrize("command", [["analyze"], ["export", "--format", "csv"]])
def test_out_naming_a_file_is_refused_by_analyze_and_export(tmp_path, command):
    occupied = tmp_path / "taken"
    occupied.write_text("x")
    result = _invoke(*command, "--db", f"sqlite:///{tmp_path / 'cohort.db'}", "--out",
                     str(occupied))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "is a file" in result.output
    assert _created(tmp_path) == ["taken"]


@pytest.mark.parametrize("site", ["..", ".", "../elsewhere", "a/b", "a\\b", "tab\there", ""])
def test_a_site_name_that_escapes_a_folder_is_refused(source, tmp_path, site):
    work = tmp_path / "work"
    work.mkdir()
    result = _invoke("extract", "--source", str(source), "--site", site, "--db",
                     f"sqlite:///{work / 'cohort.db'}", "-q")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Invalid value for '--site'" in result.output
    assert _created(work) == [] and _created(tmp_path) == ["work"]


def test_refused_commands_change_nothing_and_a_correct_run_equals_a_clean_one(
        source, clean, tmp_path):
    url = f"sqlite:///{tmp_path / 'cohort.db'}"
    report = tmp_path / "report"
    first = _invoke("run", "--source", str(source), "--db", url, "--out", str(report), "-q")
    assert first.exit_code == 0, first.output
    assert snapshot(url) == clean
    for args in (["map", "--site", ".."], ["derive", "--site", "../site_a"],
                 ["extract", "--source", str(source), "--site", "site_a/.."],
                 ["export", "--format", "csv", "--out", str(tmp_path / "x"), "--site", ".."],
                 ["run", "--source", "hapi.fhir.org/baseR4"],
                 ["run", "--source", str(source), "--out", str(report / "report.md")]):
        result = _invoke(*args, "--db", url)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
    assert snapshot(url) == clean
    assert not (tmp_path / "x").exists()
