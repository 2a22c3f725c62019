"""Derived tables → statistics: response rates, Kaplan–Meier, log-rank, Cox.

``run_analysis(engine)`` is the pipeline's entry; ``analyze_frames`` runs the same
methods on any frames shaped like the derived tables (for instance ground truth
via ``frames_from_ground_truth``); ``load_cohort`` is the notebook entry.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from connector.analysis.api import Cohort, load_cohort
from connector.analysis.completeness import load_quality
from connector.analysis.frames import frames_from_ground_truth, load_tables
from connector.analysis.results import Analysis, analyze_frames
from connector.analysis.settings import AnalysisSettings


def run_analysis(engine: Engine, settings: AnalysisSettings | None = None, *,
                 sites: Sequence[str] | None = None) -> Analysis:
    """Analyse the derived tables of the database behind ``engine``.

    ``sites``: only these sites' patients and lines (a run analyses the sites it holds
    the locks of); None: every site.
    """
    patients, lines = load_tables(engine)
    if sites is not None:
        keep = list(sites)
        patients = patients[patients["site"].isin(keep)].reset_index(drop=True)
        lines = lines[lines["site"].isin(keep)].reset_index(drop=True)
    return analyze_frames(patients, lines, settings, quality=load_quality(engine))


__all__ = [
    "Analysis",
    "AnalysisSettings",
    "Cohort",
    "analyze_frames",
    "frames_from_ground_truth",
    "load_cohort",
    "load_quality",
    "load_tables",
    "run_analysis",
]
