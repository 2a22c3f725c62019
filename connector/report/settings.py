"""The report's drawing rules, from the ``[report]`` table of ``mappings/rules.toml``.

A clinician may want Kaplan–Meier curves cut earlier or later, so the cut lives with
the other rules and not in code. The file is the derive stage's (``$COHORT_RULES_FILE``
else ``mappings/rules.toml``); the report reads only its own table, and a rules file
without one (an older copy) falls back to the shipped default, never to a guess.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[2] / "mappings" / "rules.toml"
RULES_ENV = "COHORT_RULES_FILE"


class ReportRulesError(ValueError):
    """The [report] table has a missing, unknown or invalid value."""


@dataclass(frozen=True)
class ReportRules:
    km_min_at_risk: int  # curves stop once fewer than this many remain at risk
    source: str


def _table(path: Path) -> dict | None:
    with path.open("rb") as handle:
        return tomllib.load(handle).get("report")


def report_rules(path: str | Path | None = None) -> ReportRules:
    """The [report] rules from ``path``, else ``$COHORT_RULES_FILE``, else the default file."""
    chosen = Path(path or os.environ.get(RULES_ENV) or DEFAULT_RULES_PATH)
    table = _table(chosen)
    if table is None:
        table = _table(DEFAULT_RULES_PATH)
    if table is None:
        raise ReportRulesError(f"{chosen}: no [report] table")
    unknown = sorted(set(table) - {"km_min_at_risk", "source"})
    if unknown:
        raise ReportRulesError(f"[report] has unknown keys: {', '.join(unknown)}")
    value = table.get("km_min_at_risk")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ReportRulesError("[report] km_min_at_risk must be a whole number ≥ 1")
    if not str(table.get("source", "")).strip():
        raise ReportRulesError("[report] has no 'source' note")
    return ReportRules(km_min_at_risk=value, source=str(table["source"]))
