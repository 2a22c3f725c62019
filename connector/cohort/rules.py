"""The derive rules, loaded from ``mappings/rules.toml``.

Values live in the TOML file so a clinician can change a window or a threshold
without touching code; this module only gives them types and checks that none
is missing or misspelt, because a silently ignored key would change results
without anyone noticing.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[2] / "mappings" / "rules.toml"
RULES_ENV = "COHORT_RULES_FILE"


class RulesError(ValueError):
    """The rules file is missing a value, has an unknown one, or a wrong type."""


@dataclass(frozen=True)
class CarTRules:
    bcma_classes: tuple[str, ...]
    other_classes: tuple[str, ...]
    bcma_products: tuple[str, ...]
    other_products: tuple[str, ...]
    infusion_categories: tuple[str, ...]
    same_infusion_days: int
    productless_is_bcma: bool
    bridging_max_days_after_harvest: int = 0
    screen_categories: tuple[str, ...] = ()  # read by connector/codes/screen.py

    @property
    def all_classes(self) -> tuple[str, ...]:
        return self.bcma_classes + self.other_classes


@dataclass(frozen=True)
class LymphodepletionRules:
    ingredients: tuple[str, ...]
    min_days_before: int
    max_days_before: int


@dataclass(frozen=True)
class TransplantRules:
    categories: tuple[str, ...]
    conditioning_ingredients: tuple[str, ...]
    conditioning_max_days_before: int
    tandem_days: int
    induction_max_days: int = 0
    induction_max_gap_days: int = 0


@dataclass(frozen=True)
class LineRules:
    regimen_window_days: int
    gap_days: int
    non_trigger_classes: tuple[str, ...]
    late_add_days: int
    late_add_classes: tuple[str, ...]
    add_without_progression_days: int = 0


@dataclass(frozen=True)
class MaintenanceRules:
    ingredients: tuple[str, ...]
    ingredients_if_in_previous: tuple[str, ...]
    after_transplant_days: int
    after_regimen_days: int
    previous_regimen_min_drugs: int
    previous_regimen_min_days: int
    min_duration_days: int
    min_duration_after_transplant_days: int


@dataclass(frozen=True)
class ProgressionRules:
    disease_status_analyte: str
    disease_status_codes: tuple[str, ...]
    baseline_lookback_days: int
    maintenance_ingredients: tuple[str, ...] = ()
    maintenance_max_days_after_index: int = 0


@dataclass(frozen=True)
class ImwgRules:
    serum_measurable: float
    urine_measurable: float
    flc_measurable: float
    flc_ratio_normal_low: float
    flc_ratio_normal_high: float
    pd_relative: float
    serum_pd_abs: float
    serum_pd_abs_high_nadir: float
    serum_high_nadir: float
    urine_pd_abs: float
    dflc_pd_abs: float
    nadir: str
    mr_reduction: float
    pr_reduction: float
    vgpr_reduction: float
    urine_pr_reduction: float
    urine_pr_abs: float
    urine_vgpr_abs: float
    urine_mr_reduction: float
    serum_undetectable: float
    ife_analyte: str
    ife_negative_codes: tuple[str, ...]
    marrow_analyte: str
    cr_marrow_below: float
    confirmations: int
    baseline_lookback_days: int
    urine_ife_analyte: str = "urine_ife"
    cr_needs_urine_ife: str = "if_urine_measured"  # always | if_urine_measured | never
    derive_scr: bool = False
    clonality_analyte: str = "marrow_clonality"
    clonality_negative_codes: tuple[str, ...] = ("negative",)


@dataclass(frozen=True)
class UnitRule:
    """The canonical unit of an analyte and how to convert stray units to it."""

    unit: str
    aliases: tuple[str, ...] = ()
    factors: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SubclassRule:
    name: str
    classes: tuple[str, ...] = ()
    ingredients: tuple[str, ...] = ()
    procedures: tuple[str, ...] = ()
    always: bool = False
    tce_kind: str = ""  # read by the analysis (connector/codes/rulesfile.py)


@dataclass(frozen=True)
class ClassifyRules:
    tce_classes: tuple[str, ...]
    tce_procedures: tuple[str, ...]
    subclasses: tuple[SubclassRule, ...]


@dataclass(frozen=True)
class BaselineRules:
    """Table 1 covariates at progression after CAR-T (connector/cohort/baseline.py)."""

    # findings (Conditions) and R-ISS recorded up to this many days after progression count
    record_days_after: int = 30
    # the LDH nearest progression within this window (days before / after) is the baseline
    ldh_days_before: int = 60
    ldh_days_after: int = 14
    # upper limit of normal, U/L (laboratories differ; a site may set its own)
    ldh_upper_limit: float = 250.0
    # prior regimens: a pause of at least this many days with no myeloma drug, or a new
    # drug after the line window, starts the next one (IMWG: a planned treatment ends and
    # another starts after a pause)
    prior_pause_days: int = 14


@dataclass(frozen=True)
class Rules:
    car_t: CarTRules
    lymphodepletion: LymphodepletionRules
    transplant: TransplantRules
    lines: LineRules
    maintenance: MaintenanceRules
    progression: ProgressionRules
    imwg: ImwgRules
    units: dict[str, UnitRule]
    classify: ClassifyRules
    baseline: BaselineRules = BaselineRules()
    path: str = ""

    def replace(self, section: str, **changes: Any) -> Rules:
        """A copy with some values of one section changed (for tests and what-ifs)."""
        updated = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: updated})


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    """Make a section dataclass from a TOML table, refusing missing or unknown keys."""
    if not isinstance(table, dict):
        raise RulesError(f"[{where}] must be a table")
    values = {k: v for k, v in table.items() if k != "source"}
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RulesError(f"[{where}] has unknown keys: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in values:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise RulesError(f"[{where}] is missing '{f.name}'")
        kwargs[f.name] = _coerce(values[f.name], str(f.type), f"{where}.{f.name}")
    return cls(**kwargs)


def _coerce(value: Any, type_name: str, where: str) -> Any:
    if type_name.startswith("tuple"):
        if not isinstance(value, list):
            raise RulesError(f"{where} must be a list")
        return tuple(value)
    if type_name == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RulesError(f"{where} must be a number")
        return float(value)
    if type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RulesError(f"{where} must be a whole number")
        return value
    if type_name == "bool" and not isinstance(value, bool):
        raise RulesError(f"{where} must be true or false")
    if type_name == "str" and not isinstance(value, str):
        raise RulesError(f"{where} must be text")
    if type_name.startswith("dict"):
        return {str(k): float(v) for k, v in dict(value).items()}
    return value


def _check_sources(data: dict[str, Any]) -> None:
    """Every table must say where its values come from."""
    for name, table in data.items():
        if isinstance(table, dict) and "source" not in table:
            raise RulesError(f"[{name}] has no 'source' note")
    for i, table in enumerate(data.get("subclass", [])):
        if "source" not in table:
            raise RulesError(f"[[subclass]] #{i + 1} has no 'source' note")


def parse_rules(data: dict[str, Any], path: str = "") -> Rules:
    """Rules from an already-parsed TOML document."""
    _check_sources(data)
    units_table = {k: v for k, v in data.get("units", {}).items() if k != "source"}
    units = {name: _build(UnitRule, table, f"units.{name}") for name, table in units_table.items()}
    subclasses = tuple(_build(SubclassRule, t, "subclass") for t in data.get("subclass", []))
    if not subclasses:
        raise RulesError("no [[subclass]] entries")
    classify = _build(ClassifyRules, {**data.get("classify", {}), "subclasses": []}, "classify")
    classify = dataclasses.replace(classify, subclasses=subclasses)
    sections = {
        "car_t": CarTRules, "lymphodepletion": LymphodepletionRules,
        "transplant": TransplantRules, "lines": LineRules, "maintenance": MaintenanceRules,
        "progression": ProgressionRules, "imwg": ImwgRules,
    }
    built = {}
    for name, cls in sections.items():
        if name not in data:
            raise RulesError(f"missing table [{name}]")
        built[name] = _build(cls, data[name], name)
    if built["imwg"].nadir not in ("confirmed", "running_min"):
        raise RulesError("imwg.nadir must be 'confirmed' or 'running_min'")
    if built["imwg"].cr_needs_urine_ife not in ("always", "if_urine_measured", "never"):
        raise RulesError("imwg.cr_needs_urine_ife must be 'always', 'if_urine_measured' or "
                         "'never'")
    # [baseline] is optional: a rules file from before issue 16 keeps working
    baseline = _build(BaselineRules, data["baseline"], "baseline") if "baseline" in data \
        else BaselineRules()
    return Rules(units=units, classify=classify, baseline=baseline, path=path, **built)


def load_rules(path: str | Path | None = None) -> Rules:
    """The rules from ``path``, else ``$COHORT_RULES_FILE``, else ``mappings/rules.toml``."""
    chosen = Path(path or os.environ.get(RULES_ENV) or DEFAULT_RULES_PATH)
    with chosen.open("rb") as fh:
        data = tomllib.load(fh)
    return parse_rules(data, str(chosen))
