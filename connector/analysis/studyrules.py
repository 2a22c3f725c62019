"""The analysis's clinical thresholds, from ``[subgroups]`` of ``mappings/rules.toml``.

Early relapse after CAR-T (< 6 and < 12 months), the OS time points and the drug classes
that make a line BCMA-targeted are choices a clinician may change, so they live with the
other rules, not in code. The file is ``$COHORT_RULES_FILE`` else mappings/rules.toml; a
file without the table (an older copy) falls back to the shipped one, never to a guess.
The BCMA-targeted ingredients come from mappings/drug_classes.csv
(``$COHORT_MAPPINGS_DIR`` else mappings/).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from connector.codes.codesets import load_codesets

ROOT = Path(__file__).resolve().parents[2] / "mappings"


@dataclass(frozen=True)
class StudyRules:
    early_relapse_months: tuple[float, ...]
    os_landmark_months: tuple[float, ...]
    bcma_classes: tuple[str, ...]
    bcma_ingredients: frozenset[str]


def _table(path: Path) -> dict | None:
    with path.open("rb") as handle:
        return tomllib.load(handle).get("subgroups")


@lru_cache(maxsize=4)
def _load(rules_path: str, mappings_dir: str) -> StudyRules:
    table = _table(Path(rules_path)) or _table(ROOT / "rules.toml") or {}
    classes = tuple(str(c) for c in table.get("bcma_classes", ()))
    drug_class = load_codesets(Path(mappings_dir)).drug_class
    ingredients = {ingredient for ingredient, cls in drug_class.items() if cls in classes}
    return StudyRules(
        early_relapse_months=tuple(float(m) for m in table.get("early_relapse_months", ())),
        os_landmark_months=tuple(float(m) for m in table.get("os_landmark_months", ())),
        bcma_classes=classes, bcma_ingredients=frozenset(ingredients))


def study_rules() -> StudyRules:
    rules = os.environ.get("COHORT_RULES_FILE") or str(ROOT / "rules.toml")
    mappings = os.environ.get("COHORT_MAPPINGS_DIR") or str(ROOT)
    return _load(rules, mappings)
