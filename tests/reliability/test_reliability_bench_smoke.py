"""``make bench`` works: the harness, at tiny sizes (``--quick``), prints every figure with
its target and a verdict, and writes them to JSON. Three groups of sections, so that
each test stays short and they can run side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: (section, fragment of the label, has a target) for every figure a run prints.
FIGURES = {
    "a": [("a", "default cohort", False), ("a", "raw paging of the same searches", False),
          ("a", "extraction / raw paging", True), ("a", "whole-type paging", False),
          ("a", "2,000-patient cohort", False),
          ("a", "--scope all / single-stream _count=1000 paging", True)],
    "b": [("b", "extract + map", True), ("b", "peak memory, process tree", True),
          ("b", "memory growth", True), ("b", "baseline: parse + validate everything", False),
          ("b", "DuckDB loader", True), ("b", "DuckDB loader / Python loader", False),
          ("b", "extract + map / baseline", True)],
    "c": [("c", "rerun with no changes / full run", True),
          ("c", "all stages (folder source)", False)],
    "d": [("d", "derive + analyse + report", True)],
    "e": [("e", "GB export", True), ("e", "the same load: rate", False)],
}


def _bench(tmp_path: Path, sections: str) -> tuple[str, dict]:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", sections, "--json", str(out),
         "--work", str(tmp_path / "work"), "--cache", str(tmp_path / "cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.parametrize("sections", ["a,c", "b", "d,e"])
def test_quick_bench_prints_every_figure_with_target_and_verdict(tmp_path, sections):
    stdout, data = _bench(tmp_path, sections)
    assert "machine: cpu" in stdout and "load average at start" in stdout
    lines = stdout.splitlines()
    figures = data["figures"]
    for key in sections.split(","):
        for section, fragment, targeted in FIGURES[key]:
            shown = [ln for ln in lines if ln.startswith(f"[{section}]") and fragment in ln]
            assert shown, f"no [{section}] line with {fragment!r}:\n{stdout}"
            if targeted:
                assert any("target" in ln and ("MET" in ln or "MISSED" in ln)
                           for ln in shown), shown
            recorded = [f for f in figures if f["section"] == section
                        and fragment in f["label"]]
            assert recorded and all(f["value"] is not None for f in recorded), fragment
    checked = [f for f in figures if f["target"]]
    assert checked and all(f["met"] in (True, False) for f in checked)
    assert f"targets: {sum(f['met'] for f in checked)} of {len(checked)} met" in stdout
    assert data["machine"]["cores"] and data["plan"] == "quick"
