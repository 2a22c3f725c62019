"""The figures of the study-grade sections (issue 16), drawn beside plots.py's."""

from __future__ import annotations

from pathlib import Path

from connector.analysis.results import Analysis
from connector.report.flow import FLOW_PNG, flow_diagram
from connector.report.forest import FOREST_PNG, forest_plot


def draw_study_figures(analysis: Analysis, out_dir: Path) -> dict[str, Path]:
    """Each figure as a 300-dpi PNG with an SVG beside it; keys name the figure."""
    r = analysis.results
    return {"patient_flow": flow_diagram(r, out_dir / FLOW_PNG),
            "forest": forest_plot(r["subgroups"], out_dir / FOREST_PNG)}
