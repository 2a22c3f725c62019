"""Choices of the analysis that a statistician might revisit, in one place.

They are statistical method parameters rather than clinical code sets, so they
live here with their defaults; every run records them under ``settings`` in
results.json so a reader can see which choices produced the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DAYS_PER_MONTH = 30.4375  # 365.25 / 12, the contract's month


@dataclass(frozen=True)
class AnalysisSettings:
    """Method parameters; the defaults are the ones the report documents."""

    alpha: float = 0.05  # two-sided; 95% confidence intervals
    # Landmark for OS by TCE exposure: patients alive and followed at this time after
    # progression are grouped by whether a TCE line had started by then.
    landmark_months: float = 6.0
    # A Cox model is fitted only with at least this many events, and at least one
    # event and two subjects in each compared group; fewer give unstable hazard ratios.
    cox_min_events: int = 10
    # The swimmer plot shows at most this many patients (a deterministic subset) so
    # that bars stay legible on large cohorts.
    swimmer_max_patients: int = 120

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "days_per_month": DAYS_PER_MONTH}
