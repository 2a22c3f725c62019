"""A notebook API over the derived tables: load once, run any one analysis, or all of them.

The methods call the same functions as the pipeline, so a number seen in a
notebook is the number in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from connector.analysis.completeness import load_quality
from connector.analysis.frames import (
    CohortFrames,
    cohort_frames,
    frames_from_ground_truth,
    load_tables,
)
from connector.analysis.rates import rate_of, rates_by
from connector.analysis.results import Analysis, analyze_frames
from connector.analysis.settings import AnalysisSettings
from connector.analysis.survival import (
    KMResult,
    cox_hazard_ratio,
    kaplan_meier,
    kaplan_meier_by,
    landmark_os,
    time_varying_tce_cox,
)

_FLAGS = {"orr": "responder", "vgpr_or_better": "vgpr_plus", "cr_or_better": "cr_plus"}


@dataclass
class Cohort:
    """The derived tables of one database (or ground truth) as DataFrames.

    ``patients`` holds every patient (``in_cohort`` says who is in the study),
    ``lines`` every line; the analysis methods use the in-cohort view. ``quality``:
    per site, the quarantined and unmapped counts of the database (None without one).
    """

    patients: pd.DataFrame
    lines: pd.DataFrame
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    quality: dict[str, dict[str, int]] | None = None

    @classmethod
    def from_ground_truth(cls, path: str | Path, **kwargs: Any) -> Cohort:
        patients, lines = frames_from_ground_truth(path, include_excluded=True)
        return cls(patients, lines, **kwargs)

    @property
    def view(self) -> CohortFrames:
        """In-cohort patients and their lines with the analysis columns."""
        return cohort_frames(self.patients, self.lines)

    def _lines(self, first_line_only: bool) -> pd.DataFrame:
        lines = self.view.lines
        return lines[lines["is_first"]] if first_line_only else lines

    def response_rate(self, measure: str = "orr", by: str | None = "therapy_class",
                      first_line_only: bool = True) -> pd.DataFrame:
        """A response rate (orr, vgpr_or_better, cr_or_better) overall or by a line column."""
        lines = self._lines(first_line_only)
        usable = lines[lines["cr_determinable"] if measure == "cr_or_better"
                       else lines["evaluable"]]
        flag = _FLAGS[measure]
        rows = {"overall": rate_of(usable[flag], self.settings.alpha)}
        if by:
            rows.update(rates_by(usable, flag, by, alpha=self.settings.alpha))
        return pd.DataFrame.from_dict(rows, orient="index")

    def pfs(self, by: str | None = "therapy_class", first_line_only: bool = True
            ) -> dict[str, KMResult]:
        """Kaplan–Meier fits of line PFS (months), overall and per group of ``by``."""
        lines = self._lines(first_line_only)
        valid = lines[lines["pfs_valid"]]
        fits = {"overall": kaplan_meier(valid["pfs_months"], valid["pfs_event"], "all",
                                        self.settings.alpha)}
        if by:
            groups = sorted(valid[by].dropna().unique().tolist())
            fits.update(kaplan_meier_by(valid, "pfs_months", "pfs_event", by, groups,
                                        self.settings.alpha))
        return fits

    def pfs_hazard_ratio(self, first_line_only: bool = True) -> dict[str, Any]:
        """Cox HR of PFS for TCE vs non-TCE lines, stratified by site."""
        lines = self._lines(first_line_only)
        valid = lines[lines["pfs_valid"]].assign(is_tce=lambda f: f["therapy_class"] == "tce")
        return cox_hazard_ratio(valid, "pfs_months", "pfs_event", "is_tce",
                                cluster=None if first_line_only else "pid",
                                alpha=self.settings.alpha,
                                min_events=self.settings.cox_min_events)

    def os(self, by_ever_tce: bool = False) -> dict[str, KMResult]:
        """Kaplan–Meier fits of OS from progression; by ever-TCE is immortal-time biased."""
        patients = self.view.patients
        valid = patients[patients["os_valid"]]
        if not by_ever_tce:
            return {"overall": kaplan_meier(valid["os_months"], valid["os_event"], "all",
                                            self.settings.alpha)}
        grouped = valid.assign(group=valid["ever_tce"].map({True: "tce", False: "non_tce"}))
        return kaplan_meier_by(grouped, "os_months", "os_event", "group", ["tce", "non_tce"],
                               self.settings.alpha)

    def os_landmark(self, months: float | None = None) -> dict[str, Any]:
        """OS from a landmark by TCE started before it (default: the settings' landmark)."""
        mark = landmark_os(self.view.patients, months or self.settings.landmark_months,
                           self.settings.alpha)
        return mark.results(self.settings.alpha, self.settings.cox_min_events)

    def os_tce_time_varying(self) -> dict[str, Any]:
        """Cox HR of death with TCE exposure as a time-varying covariate."""
        return time_varying_tce_cox(self.view.patients, alpha=self.settings.alpha,
                                    min_events=self.settings.cox_min_events)

    def analyze(self) -> Analysis:
        """Everything, as the pipeline runs it."""
        return analyze_frames(self.patients, self.lines, self.settings, quality=self.quality)


def load_cohort(db_url: str, settings: AnalysisSettings | None = None) -> Cohort:
    """The derived tables of the database at ``db_url``."""
    from connector.db import get_engine

    engine = get_engine(db_url)
    try:
        patients, lines = load_tables(engine)
        quality = load_quality(engine)
    finally:
        engine.dispose()
    return Cohort(patients, lines, settings or AnalysisSettings(), quality)
