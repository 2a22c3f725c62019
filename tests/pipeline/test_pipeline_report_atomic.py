"""Issue 13, item 7: report files are written atomically. A run that fails while writing
its report leaves the previous report whole (not tonight's results.json beside last
night's report.html), and leaves no half-written or temporary file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import connector.report
from connector.cli import app
from connector.synth import synthesize


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _ok(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_failed_report_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    src = tmp_path / "src"
    synthesize(n_patients=6, n_sites=2, seed=7, out_dir=src, noise=False)
    db = f"sqlite:///{tmp_path / 'cohort.db'}"
    report = tmp_path / "report"
    _ok("run", "--source", str(src / "site_a"), "--db", db, "--out", str(report), "-q")
    before = _files(report)
    assert {"results.json", "report.html", "report.md", "patients.csv"} <= set(before)

    # site_b arrives; tonight's report would differ from last night's
    _ok("extract", "--source", str(src / "site_b"), "--db", db, "-q")
    _ok("map", "--db", db, "-q")
    _ok("derive", "--db", db, "-q")
    real = connector.report.write_report

    def fails_at_the_end(analysis, out_dir, **kwargs):  # noqa: ANN001, ANN202
        real(analysis, out_dir, **kwargs)  # every file written, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(connector.report, "write_report", fails_at_the_end)
    failed = CliRunner().invoke(app, ["analyze", "--db", db, "--out", str(report), "-q"])
    assert failed.exit_code != 0 and isinstance(failed.exception, OSError)
    assert _files(report) == before  # the previous report, byte for byte
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]  # no leftovers

    monkeypatch.setattr(connector.report, "write_report", real)
    _ok("analyze", "--db", db, "--out", str(report), "-q")
    after = _files(report)
    assert set(after) >= set(before) and after["results.json"] != before["results.json"]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["results.json", "report.html"])
def test_report_files_are_replaced_not_rewritten(tmp_path, name):
    """A reader holding last night's file keeps reading it whole: the new one is a new file
    moved into place (another inode), not the old one truncated and written again."""
    src = tmp_path / "src"
    synthesize(n_patients=4, n_sites=1, seed=3, out_dir=src, noise=False)
    db = f"sqlite:///{tmp_path / 'cohort.db'}"
    report = tmp_path / "report"
    _ok("run", "--source", str(src), "--db", db, "--out", str(report), "-q")
    inode = (report / name).stat().st_ino
    with (report / name).open("rb") as reader:
        _ok("analyze", "--db", db, "--out", str(report), "-q")
        assert reader.read() == (report / name).read_bytes()  # the old file, whole
    assert (report / name).stat().st_ino != inode
