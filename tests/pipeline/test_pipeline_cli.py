"""The whole pipeline through the CLI on the committed default cohort.

This is what `make demo` runs: it must count the cohort of ground_truth.json, write
every file of the report folder, and give the same database and results when run twice.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from connector.cli import app

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "cohort"

PATIENT_COLUMNS = ["site", "source_id", "patient_key", "birth_year", "sex", "index_product",
                   "index_date", "progression_date", "death_date", "last_contact_date"]
LINE_COLUMNS = ["site", "source_id", "patient_key", "line", "start_date", "end_date", "drugs",
                "therapy_class", "subclass", "best_response", "pfs_event_date",
                "pfs_censor_date"]
# Content of these tables must not change on a rerun (ids, timestamps and run logs may).
STABLE_TABLES = {
    "raw_resource": ["site", "resource_type", "resource_id", "version_id", "content_hash"],
    "quarantine": ["site", "stage", "content_hash", "reason"],
    "patient": ["site", "source_id", "patient_key", "birth_year", "sex", "death_date"],
    "medication_exposure": ["site", "patient_source_id", "source_id", "ingredient",
                            "drug_class", "start_date", "end_date"],
    "procedure_event": ["site", "patient_source_id", "source_id", "category", "product",
                        "performed_date"],
    "lab_result": ["site", "patient_source_id", "source_id", "analyte", "effective_date",
                   "value", "unit", "value_code"],
    "cohort_patient": ["site", "source_id", "in_cohort", "exclusion_reason", "index_date",
                       "progression_date", "progression_basis", "death_date"],
    "therapy_line": ["site", "source_id", "line", "start_date", "end_date", "drugs",
                     "therapy_class", "subclass", "best_response", "pfs_event_date",
                     "pfs_censor_date"],
}


def _snapshot(db_file: Path) -> dict[str, list[tuple]]:
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            assert set(STABLE_TABLES) <= set(inspect(conn).get_table_names())
            return {table: sorted(tuple(map(str, row)) for row in conn.execute(
                        text(f"SELECT {', '.join(cols)} FROM {table}")))  # noqa: S608
                    for table, cols in STABLE_TABLES.items()}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """`cohort run` twice on one database; the report folder and table snapshots of each."""
    work = tmp_path_factory.mktemp("demo")
    source = work / "cohort"
    shutil.copytree(FIXTURE, source)  # a private copy: nobody regenerates it under us
    db_file = work / "cohort.db"
    runner = CliRunner()
    outs, snapshots = [], []
    for i in (1, 2):
        out = work / f"report{i}"
        result = runner.invoke(app, ["run", "--source", str(source), "--db",
                                     f"sqlite:///{db_file}", "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        outs.append(out)
        snapshots.append(_snapshot(db_file))
    truth = json.loads((source / "ground_truth.json").read_text())
    return outs, snapshots, truth


def test_results_count_the_ground_truth_cohort(two_runs):
    outs, _, truth = two_runs
    results = json.loads((outs[0] / "results.json").read_text())
    in_cohort = [p for p in truth["patients"] if p["in_cohort"]]
    assert results["n_patients"] == len(in_cohort) == 79
    assert results["n_sites"] == 2
    expected = Counter(p["exclusion_reason"] for p in truth["patients"] if not p["in_cohort"])
    assert results["excluded"] == dict(expected)
    assert results["n_lines"] == sum(len(p["lines"]) for p in in_cohort)
    for key in ("orr", "vgpr_or_better", "pfs_median_months"):
        for group in ("overall", "tce", "non_tce"):
            assert set(results["first_line"][key][group]) == {"estimate", "ci_low", "ci_high", "n"}
    print(f"\nn_patients={results['n_patients']} excluded={results['excluded']} "
          f"first-line ORR={results['first_line']['orr']['overall']['estimate']:.3f}")


def test_results_equal_the_same_analysis_of_ground_truth(two_runs):
    """On the default cohort the connector's results are those of the true cohort."""
    from connector.analysis import analyze_frames, frames_from_ground_truth

    outs, _, _ = two_runs
    results = json.loads((outs[0] / "results.json").read_text())
    truth = analyze_frames(*frames_from_ground_truth(FIXTURE / "ground_truth.json",
                                                     include_excluded=True)).results
    for key in ("n_patients", "n_sites", "n_lines", "excluded", "first_line",
                "os_median_months", "os_median_months_by_ever_tce"):
        assert results[key] == truth[key], key


def test_report_folder_has_every_contract_file(two_runs):
    out = two_runs[0][0]
    for name in ("results.json", "report.md", "report.html", "patients.csv",
                 "therapy_lines.csv"):
        assert (out / name).stat().st_size > 0, name
    assert list(out.glob("*.png")), "at least one plot"
    with (out / "patients.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == PATIENT_COLUMNS and len(rows) == 80
    with (out / "therapy_lines.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header == LINE_COLUMNS


def test_second_run_changes_nothing(two_runs):
    outs, snapshots, _ = two_runs
    first, second = snapshots
    for table in STABLE_TABLES:
        assert first[table] == second[table], f"{table} changed on rerun"
    for name in ("results.json", "patients.csv", "therapy_lines.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    assert len(first["raw_resource"]) == len({r[:3] for r in first["raw_resource"]})


def test_python_dash_m_is_the_same_program():
    result = subprocess.run([sys.executable, "-m", "connector", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    for command in ("synth", "run", "extract", "map", "derive", "analyze"):
        assert command in result.stdout
