"""The report folder: its files, CSV headers, determinism, wording and the extra-section hook."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re

import pandas as pd
import pytest
from demo_cohort import demo_frames

from connector.analysis import analyze_frames
from connector.report import Section, write_report

PATIENTS_HEADER = ("site,source_id,patient_key,birth_year,sex,index_product,index_date,"
                   "progression_date,death_date,last_contact_date")
LINES_HEADER = ("site,source_id,patient_key,line,start_date,end_date,drugs,therapy_class,"
                "subclass,best_response,pfs_event_date,pfs_censor_date")
FIGURES = ("km_first_line_pfs", "km_os", "km_os_by_ever_tce", "km_os_landmark", "swimmer",
           "response_rates", "patient_flow", "forest_subgroups")
EXPECTED_FILES = {"results.json", "report.md", "report.html", "patients.csv",
                  "therapy_lines.csv", *(f"{f}.{kind}" for f in FIGURES for kind in ("png", "svg"))}
ISO_OR_EMPTY = re.compile(r"^(\d{4}-\d{2}-\d{2})?$")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    analysis = analyze_frames(*demo_frames(79, seed=21))
    written = write_report(analysis, out)
    return analysis, out, written


def test_folder_contents(report):
    _, out, written = report
    assert {p.name for p in written} == EXPECTED_FILES
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_json_is_the_analysis(report):
    analysis, out, _ = report
    assert json.loads((out / "results.json").read_text()) == analysis.results


def test_csv_headers_rows_and_dates(report):
    analysis, out, _ = report
    patients_text = (out / "patients.csv").read_text()
    lines_text = (out / "therapy_lines.csv").read_text()
    assert patients_text.splitlines()[0] == PATIENTS_HEADER
    assert lines_text.splitlines()[0] == LINES_HEADER
    patients = list(csv.DictReader(patients_text.splitlines()))
    lines = list(csv.DictReader(lines_text.splitlines()))
    assert len(patients) == analysis.results["n_patients"]  # in-cohort only
    assert len(lines) == analysis.results["n_lines"]
    assert all(not row["source_id"].startswith("x") for row in patients)
    for row in patients:
        for col in ("index_date", "progression_date", "death_date", "last_contact_date"):
            assert ISO_OR_EMPTY.match(row[col]), row[col]
        assert re.fullmatch(r"\d{4}|", row["birth_year"])
    assert any(row["death_date"] == "" for row in patients)  # alive -> empty
    for row in lines:
        assert row["therapy_class"] in {"tce", "non_tce"}
        assert row["best_response"] in {"sCR", "CR", "VGPR", "PR", "MR", "SD", "PD", "NE"}
        assert re.fullmatch(r"\d+", row["line"])
        for col in ("start_date", "end_date", "pfs_event_date", "pfs_censor_date"):
            assert ISO_OR_EMPTY.match(row[col])
    keys = [(r["site"], r["source_id"], int(r["line"])) for r in lines]
    assert keys == sorted(keys)


def test_same_data_same_bytes(tmp_path):
    patients, lines = demo_frames(60, seed=9)
    first = write_report(analyze_frames(patients, lines), tmp_path / "a")
    shuffled = write_report(analyze_frames(patients.sample(frac=1, random_state=4),
                                           lines.sample(frac=1, random_state=5)),
                            tmp_path / "b")
    for a, b in zip(first, shuffled, strict=True):
        assert a.name == b.name
        if a.suffix in {".json", ".csv", ".md", ".png", ".svg", ".html"}:
            assert a.read_bytes() == b.read_bytes(), a.name


def test_markdown_sections_and_published_comparison(report):
    _, out, _ = report
    md = (out / "report.md").read_text()
    for heading in ("## Summary", "## Comparison with the published study", "## Cohort",
                    "## First salvage line", "## All lines after progression",
                    "## Overall survival from progression after CAR-T", "## Treatment course",
                    "## Patient flow", "## Table 1. Patients at progression after BCMA CAR-T",
                    "## Methods and definitions"):
        assert heading in md
    assert "| 17.9 mo (95% CI 14.0–NE) |" in md
    assert "| 43.4% (denominator likely ~76 evaluable patients) |" in md
    assert "Immortal-time bias" in md
    assert "No CAR-T infusion on record: 4" in md  # the patient flow's exclusions
    for figure in FIGURES:
        assert f"]({figure}.png)" in md and f"([SVG]({figure}.svg))" in md


def test_html_is_self_contained(report):
    _, out, _ = report
    html = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(list(out.glob("*.svg")))
    assert all(s.startswith("data:image/svg+xml;base64,") for s in sources)
    assert "http://" not in html and "https://" not in html
    assert "<table>" in html and "Patient flow" in html


def test_not_reached_median_is_said(tmp_path):
    patients, lines = demo_frames(40, seed=4)
    patients["death_date"] = None  # nobody died: OS median not reached
    analysis = analyze_frames(patients, lines)
    assert analysis.results["os_median_months"]["estimate"] is None
    assert analysis.results["os_median_months"]["n"] == 40
    write_report(analysis, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| All patients | not reached (95% CI" in md


def test_extra_sections_hook(tmp_path):
    analysis = analyze_frames(*demo_frames(20, seed=2))
    unmapped = pd.DataFrame({"system": ["http://loinc.org"], "code": ["99999-9"], "count": [3]})
    extra = Section.from_frame("Unmapped codes", unmapped, "Codes no mapping file knows.")
    write_report(analysis, tmp_path, extra_sections=[extra])
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "## Unmapped codes" in md and "| http://loinc.org | 99999-9 | 3 |" in md
    assert md.index("## Unmapped codes") < md.index("## Methods and definitions")
    assert "<td>99999-9</td>" in html


def test_empty_cohort_still_writes_every_file(tmp_path):
    analysis = analyze_frames(pd.DataFrame(), pd.DataFrame())
    written = write_report(analysis, tmp_path)
    assert {p.name for p in written} == EXPECTED_FILES
    assert (tmp_path / "patients.csv").read_text() == PATIENTS_HEADER + "\n"
    assert "no data" in (tmp_path / "report.md").read_text()


def test_large_cohort_swimmer_shows_a_subset(tmp_path):
    patients, lines = demo_frames(400, seed=8, n_excluded=0)
    analysis = analyze_frames(patients, lines)
    write_report(analysis, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "a fixed subset of 120" in md


def test_pipeline_entry_points(engine, tmp_path):
    from connector import pipeline
    from connector.db import session_scope
    from connector.db.models import CohortPatient, TherapyLine

    patients, lines = demo_frames(15, seed=6)
    with session_scope(engine) as session:
        for row in patients.to_dict("records"):
            session.add(CohortPatient(**{k: (None if pd.isna(v) else v)
                                         for k, v in row.items()}))
        for row in lines.to_dict("records"):
            session.add(TherapyLine(**{k: (None if pd.isna(v) else v) for k, v in row.items()}))
    results = pipeline.analyze(engine, tmp_path / "out")
    assert results["n_patients"] == 15
    assert (tmp_path / "out" / "report.html").exists()
    assert dt.date.today().isoformat() not in (tmp_path / "out" / "report.md").read_text()



def test_next_treatment_section_and_completeness_line(report):
    analysis, out, _ = report
    md = (out / "report.md").read_text()
    assert "## Time to next treatment and PFS with a switch as event" in md
    ttnt = analysis.results["time_to_next_treatment"]["first_line"]["median_months"]["overall"]
    assert f"n={ttnt['n']}, {ttnt['events']} events" in md
    counts = analysis.results["cohort"]["new_line_fallback_by_site"]
    assert not any(counts.values())  # the demo dates every progression by labs ...
    assert "new-line fallback" not in md  # ... so no "0 patients" sentence is written


def test_completeness_line_names_sites_and_counts(tmp_path):
    patients, lines = demo_frames(30, seed=5)
    first_site = sorted(patients["site"].unique())[0]
    chosen = patients.index[patients["site"] == first_site][:3]
    patients.loc[chosen, "progression_basis"] = "new_line_fallback"
    analysis = analyze_frames(patients, lines)
    counts = analysis.results["cohort"]["new_line_fallback_by_site"]
    assert counts[first_site] == 3
    write_report(analysis, tmp_path)
    md = (tmp_path / "report.md").read_text()
    shown = first_site.replace("_", " ").title()
    assert f"{shown}: 3 patients with the progression date from the new-line fallback" in md
    assert "0 patients with" not in md and "0 deaths" not in md
