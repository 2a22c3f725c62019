"""Analysis → report folder: results.json, CSVs, figures (PNG + SVG), report.md, report.html.

Nothing in the folder carries a timestamp, so the same database gives the same
results.json and CSVs byte for byte (and, on one installation, the same figures).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from connector.analysis.results import Analysis
from connector.report.content import TITLE, build_sections
from connector.report.document import Image, Section, Table, to_html, to_markdown
from connector.report.plots import draw_all
from connector.report.settings import report_rules
from connector.report.study_figures import draw_study_figures
from connector.report.tables import LINES_CSV, PATIENTS_CSV, write_tables

RESULTS_JSON = "results.json"


def results_text(results: dict) -> str:
    """results.json's exact text: fixed key order, two-space indent, no NaN, final newline."""
    return json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(analysis: Analysis, out_dir: str | Path,
                 extra_sections: Sequence[Section] = ()) -> list[Path]:
    """Write the report folder and return the files written, sorted by name.

    ``extra_sections`` are added to report.md/html before the methods, e.g. a section
    listing the mapping stage's unmapped codes (``Section.from_frame(title, df, text)``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_JSON
    results_path.write_text(results_text(analysis.results), encoding="utf-8")
    written = [results_path, *write_tables(analysis.patients, analysis.lines, out_dir)]
    rules = report_rules()
    images = draw_all(analysis, out_dir, rules.km_min_at_risk)
    study = draw_study_figures(analysis, out_dir)  # patient flow, forest plot (issue 16)
    images.update(study)
    written += [f for png in images.values() for f in (png, png.with_suffix(".svg"))]
    names = sorted([p.name for p in written] + ["report.md", "report.html"])
    sections = build_sections(analysis, images, list(extra_sections), names,
                              rules.km_min_at_risk)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(to_markdown(TITLE, sections, out_dir), encoding="utf-8")
    html_path.write_text(to_html(TITLE, sections, out_dir), encoding="utf-8")
    written += [md_path, html_path]
    return sorted(written, key=lambda p: p.name)


__all__ = ["LINES_CSV", "PATIENTS_CSV", "Image", "Section", "Table", "results_text",
           "write_report"]
