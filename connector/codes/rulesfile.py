"""The vocabulary the stages share from ``mappings/rules.toml``: which drug classes are
CAR-T, which procedures the CAR-T screen looks for, which line subclasses are which
kind of T-cell engaging therapy.

The derive stage reads the whole file with its own checks (connector/cohort/rules.py);
extract, mapping and analysis need only these few lists and may not import the derive
stage, so they read them here. A new drug class is then a change to ``mappings/`` only:
its rows in the CSV files and its place in rules.toml, never a list in code. The file is
``$COHORT_RULES_FILE`` else ``mappings/rules.toml``; a copy from before a key existed
takes that key from the shipped file, never from a guess.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[2] / "mappings" / "rules.toml"
RULES_ENV = "COHORT_RULES_FILE"

#: The kinds of T-cell engaging line the analysis compares (results.json
#: ``tce.bispecific_vs_car_t``); a [[subclass]] of rules.toml names its kind.
TCE_KINDS = ("bispecific", "car_t")


class StudyTermsError(ValueError):
    """rules.toml gives one of these lists in a wrong shape."""


@dataclass(frozen=True)
class StudyTerms:
    car_t_classes: tuple[str, ...]  # [car_t] bcma_classes + other_classes
    screen_categories: tuple[str, ...]  # [car_t] screen_categories
    tce_kinds: dict[str, str]  # line subclass -> a TCE_KINDS entry ([[subclass]] tce_kind)


def rules_path() -> Path:
    return Path(os.environ.get(RULES_ENV) or DEFAULT_RULES_PATH)


def study_terms(path: str | Path | None = None) -> StudyTerms:
    """The shared lists from ``path``, else ``$COHORT_RULES_FILE``, else the shipped file."""
    chosen = Path(path) if path else rules_path()
    return _cached(str(chosen), chosen.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _cached(path: str, _mtime: int) -> StudyTerms:
    data = _read(Path(path))
    shipped = data if Path(path) == DEFAULT_RULES_PATH else _read(DEFAULT_RULES_PATH)
    car_t = _table(data, "car_t")
    classes = _names(car_t, "bcma_classes") + _names(car_t, "other_classes")
    screen = car_t.get("screen_categories")
    if screen is None:
        screen = _table(shipped, "car_t").get("screen_categories")
    kinds = _tce_kinds(data) or _tce_kinds(shipped)
    return StudyTerms(car_t_classes=classes,
                      screen_categories=_names({"screen_categories": screen or []},
                                               "screen_categories"),
                      tce_kinds=kinds)


def _read(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    table = data.get(name) or {}
    if not isinstance(table, dict):
        raise StudyTermsError(f"[{name}] must be a table")
    return table


def _names(table: dict[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudyTermsError(f"{key} must be a list of names")
    return tuple(value)


def _tce_kinds(data: dict[str, Any]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for entry in data.get("subclass", []):
        kind = entry.get("tce_kind") if isinstance(entry, dict) else None
        if kind is None:
            continue
        if kind not in TCE_KINDS:
            raise StudyTermsError(f"[[subclass]] {entry.get('name')!r}: tce_kind must be one "
                                  f"of {', '.join(TCE_KINDS)}")
        kinds[str(entry.get("name"))] = kind
    return kinds
