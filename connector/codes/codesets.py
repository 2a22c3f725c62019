"""The reviewed code sets in ``mappings/``, loaded into lookup tables.

The files are data a clinician or terminologist edits; this module only reads
them and checks that they are consistent (every drug has a class, every lab
code an analyte with a unit table), so that a typo in a CSV fails loudly at
load time instead of silently dropping events.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from connector.codes.labtext import LabText, load_lab_text
from connector.codes.text import PhraseIndex, name_tokens, normalize_unit, phrase_tokens

#: Where the code sets live; ``COHORT_MAPPINGS_DIR`` overrides it (e.g. a site's reviewed copy).
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "mappings"

#: HCPCS Level I *is* CPT, and servers file CPT codes under either URI, so both
#: share one namespace (their code formats never collide).
_NAMESPACE_ALIASES = {"cpt": "hcpcs"}

STATUSES = ("confirmed", "unconfirmed")


class CodeSetError(ValueError):
    """A mapping file is malformed or inconsistent."""


@dataclass(frozen=True)
class ProcedureCode:
    category: str  # a procedure_event category, or "ignore" for known non-events
    product: str


@dataclass(frozen=True)
class Analyte:
    name: str
    kind: str  # quantity | coded
    canonical_unit: str
    unit_required: bool
    min: float | None
    max: float | None


@dataclass(frozen=True)
class UnitRule:
    factor: float
    canonical_unit: str


@dataclass
class Written:
    """Drug and procedure entries as the files spell them, before normalizing.

    A search sent to a FHIR server (the CAR-T screen, connector/codes/screen.py) must
    carry the code as the server stores it, not the normalized lookup key."""

    drug_codes: list[tuple[str, str]] = field(default_factory=list)  # (ingredient, code)
    drug_names: list[tuple[str, str]] = field(default_factory=list)  # (ingredient, name)
    procedure_codes: list[tuple[str, str]] = field(default_factory=list)  # (category, code)
    procedure_names: list[tuple[str, str]] = field(default_factory=list)  # (category, text)


@dataclass
class CodeSets:
    """Every lookup table the map stage uses, keyed by normalized values."""

    systems: dict[str, str] = field(default_factory=dict)  # normalized URI → namespace
    drug_class: dict[str, str] = field(default_factory=dict)  # ingredient → class
    drug_codes: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, code) → ingr.
    drug_names: PhraseIndex = field(default_factory=PhraseIndex)  # name tokens → ingredient
    procedures: dict[tuple[str, str], ProcedureCode] = field(default_factory=dict)
    procedure_names: PhraseIndex = field(default_factory=PhraseIndex)  # → ProcedureCode
    labs: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, code) → analyte
    analytes: dict[str, Analyte] = field(default_factory=dict)
    units: dict[tuple[str, str], UnitRule] = field(default_factory=dict)  # (analyte, unit)
    statuses: dict[str, dict[str, bool]] = field(default_factory=dict)  # type → status → hap.
    coded_values: dict[tuple[str, str, str], str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)
    lab_text: LabText = field(default_factory=LabText)  # text / below-limit M-protein
    conditions: dict[tuple[str, str], str] = field(default_factory=dict)  # (ns, code) → finding
    condition_names: PhraseIndex = field(default_factory=PhraseIndex)  # text → finding
    #: resource type → modifier extension URLs known not to change what the study reads
    #: (``"*"``: any type); any other modifier quarantines (connector/mapping/modifiers.py)
    modifiers: dict[str, frozenset[str]] = field(default_factory=dict)
    written: Written = field(default_factory=Written)
    directory: Path = DEFAULT_DIR

    # -- derived helpers ---------------------------------------------------

    def allowed_modifiers(self, resource_type: str) -> frozenset[str]:
        return self.modifiers.get(resource_type, frozenset()) | self.modifiers.get(
            "*", frozenset())

    def namespace(self, system: object) -> str | None:
        """The short name of a code system URI, however the server spelled it."""
        if not isinstance(system, str):
            return None
        ns = self.systems.get(normalize_system(system))
        return canonical_namespace(ns) if ns else None

    def lab_analyte(self, system: object, code: object) -> str | None:
        """The analyte a lab coding stands for; None when it is not a study lab."""
        namespace = self.namespace(system)
        if namespace is None or not isinstance(code, str) or not code:
            return None
        return self.labs.get((namespace, normalize_code(namespace, code)))

    @property
    def min_event_date(self) -> dt.date:
        return dt.date.fromisoformat(self.limits.get("min_event_date", "1900-01-01"))

    @property
    def max_future_days(self) -> int:
        return int(self.limits.get("max_future_days", "366"))

    @property
    def min_birth_year(self) -> int:
        return int(self.limits.get("min_birth_year", "1880"))

    @property
    def max_string_chars(self) -> int:
        return int(self.limits.get("max_string_chars", "10000"))


# ------------------------------------------------------------------ normalizing


def normalize_system(uri: str) -> str:
    """A code system URI without version suffix, trailing slash, scheme or case differences."""
    uri = uri.strip().split("|", 1)[0].strip().rstrip("/").lower()
    if uri.startswith("https://"):
        uri = "http://" + uri[len("https://"):]
    if uri.startswith("http://www."):
        uri = "http://" + uri[len("http://www."):]
    return uri


def normalize_code(namespace: str | None, code: str) -> str:
    """Codes compare case-insensitively and without spaces; NDCs by labeler-product."""
    code = code.strip().upper()
    if namespace == "ndc":
        return ndc_product(code)
    return code.replace(" ", "")


def ndc_product(code: str) -> str:
    """The labeler-product part of an NDC as 5-4 digits (``57894-0449``).

    NDCs arrive hyphenated in 4-4-2, 5-3-2 or 5-4-1 form, or as 11 digits
    (5-4-2); the package segment does not matter to the study.
    """
    code = code.strip()
    if "-" in code:
        parts = code.split("-")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            return f"{parts[0].zfill(5)}-{parts[1].zfill(4)}"
        return code
    digits = code
    if digits.isdigit() and len(digits) == 11:
        return f"{digits[:5]}-{digits[5:9]}"
    if digits.isdigit() and len(digits) == 9:  # labeler-product only, 5-4
        return f"{digits[:5]}-{digits[5:]}"
    return code


def canonical_namespace(name: str) -> str:
    return _NAMESPACE_ALIASES.get(name, name)


# ---------------------------------------------------------------------- loading


def mappings_dir() -> Path:
    override = os.environ.get("COHORT_MAPPINGS_DIR")
    return Path(override) if override else DEFAULT_DIR


def load_codesets(directory: Path | None = None) -> CodeSets:
    """Load and cross-check every mapping file (cached per directory)."""
    return _load_cached(str((directory or mappings_dir()).resolve()))


@lru_cache(maxsize=8)
def _load_cached(directory: str) -> CodeSets:
    return _load(Path(directory))


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    if not path.exists():
        raise CodeSetError(f"mapping file missing: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in (*required, "source") if c not in (reader.fieldnames or [])]
        if missing:
            raise CodeSetError(f"{path.name}: missing column(s) {', '.join(missing)}")
        for lineno, row in enumerate(reader, start=2):
            clean = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if not any(clean.values()):
                continue
            status = clean.get("status")
            if status is not None and status not in STATUSES:
                raise CodeSetError(f"{path.name}:{lineno}: status must be confirmed or "
                                   f"unconfirmed, not {status!r}")
            yield lineno, clean


def _load(directory: Path) -> CodeSets:
    cs = CodeSets(directory=directory)
    _load_systems(cs, directory / "systems.csv")
    _load_drugs(cs, directory)
    _load_procedures(cs, directory / "procedures.csv")
    _load_analytes(cs, directory / "analytes.csv")
    _load_labs(cs, directory / "labs.csv")
    _load_units(cs, directory / "units.csv")
    _load_statuses(cs, directory / "statuses.csv")
    _load_coded_values(cs, directory / "coded_values.csv")
    for _, row in _rows(directory / "limits.csv", ("name", "value")):
        cs.limits[row["name"]] = row["value"]
    cs.lab_text = load_lab_text(directory / "lab_text.csv", _rows)
    _load_conditions(cs, directory / "conditions.csv")
    _load_modifiers(cs, directory / "modifier_extensions.csv")
    return cs


def _load_modifiers(cs: CodeSets, path: Path) -> None:
    """Modifier extensions the map may ignore; a site copy of mappings/ from before the
    file existed allows none."""
    if not path.exists():
        return
    found: dict[str, set[str]] = {}
    for lineno, row in _rows(path, ("url", "resource_type", "status")):
        if "://" not in row["url"] and not row["url"].startswith("urn:"):
            raise CodeSetError(f"{path.name}:{lineno}: url must be a URL or URN")
        found.setdefault(row["resource_type"] or "*", set()).add(row["url"])
    cs.modifiers = {rtype: frozenset(urls) for rtype, urls in found.items()}


def _system_key(cs: CodeSets, path: Path, lineno: int, system: str) -> str:
    """A mapping file names a system by short name (``rxnorm``) or by a full URI."""
    if system in cs.systems.values():
        return canonical_namespace(system)
    if "://" in system or system.startswith("urn:"):
        uri = normalize_system(system)
        if uri not in cs.systems:
            cs.systems[uri] = uri  # a local system is its own namespace
        return canonical_namespace(cs.systems[uri])
    raise CodeSetError(f"{path.name}:{lineno}: unknown system {system!r} "
                       "(add it to systems.csv or give a full URI)")


def _load_systems(cs: CodeSets, path: Path) -> None:
    for _, row in _rows(path, ("name", "uri", "status")):
        cs.systems[normalize_system(row["uri"])] = row["name"]


def _load_drugs(cs: CodeSets, directory: Path) -> None:
    for lineno, row in _rows(directory / "drug_classes.csv", ("ingredient", "drug_class",
                                                               "status")):
        if row["ingredient"] != row["ingredient"].lower():
            raise CodeSetError(f"drug_classes.csv:{lineno}: ingredients are lower case")
        cs.drug_class[row["ingredient"]] = row["drug_class"]
    path = directory / "drug_codes.csv"
    for lineno, row in _rows(path, ("ingredient", "system", "code", "status")):
        _check_ingredient(cs, path, lineno, row["ingredient"])
        ns = _system_key(cs, path, lineno, row["system"])
        cs.drug_codes[(ns, normalize_code(ns, row["code"]))] = row["ingredient"]
        cs.written.drug_codes.append((row["ingredient"], row["code"]))
    path = directory / "drug_names.csv"
    for lineno, row in _rows(path, ("ingredient", "name", "status")):
        _check_ingredient(cs, path, lineno, row["ingredient"])
        tokens = name_tokens(row["name"])
        if not tokens:
            raise CodeSetError(f"{path.name}:{lineno}: empty name")
        cs.drug_names.add(tokens, row["ingredient"])
        cs.written.drug_names.append((row["ingredient"], row["name"]))


def _check_ingredient(cs: CodeSets, path: Path, lineno: int, ingredient: str) -> None:
    if ingredient not in cs.drug_class:
        raise CodeSetError(f"{path.name}:{lineno}: ingredient {ingredient!r} has no class "
                           "in drug_classes.csv")


def _load_procedures(cs: CodeSets, path: Path) -> None:
    for lineno, row in _rows(path, ("category", "product", "system", "code", "status")):
        if row["product"] and row["product"] not in cs.drug_class:
            raise CodeSetError(f"{path.name}:{lineno}: product {row['product']!r} is not an "
                               "ingredient of drug_classes.csv")
        entry = ProcedureCode(category=row["category"], product=row["product"])
        if row["system"] == "text":
            cs.procedure_names.add(name_tokens(row["code"]), entry)
            cs.written.procedure_names.append((row["category"], row["code"]))
            continue
        ns = _system_key(cs, path, lineno, row["system"])
        cs.procedures[(ns, normalize_code(ns, row["code"]))] = entry
        cs.written.procedure_codes.append((row["category"], row["code"]))


def _float_or_none(value: str) -> float | None:
    return float(value) if value else None


def _load_analytes(cs: CodeSets, path: Path) -> None:
    for lineno, row in _rows(path, ("analyte", "kind", "canonical_unit", "unit_required",
                                    "min", "max")):
        if row["kind"] not in ("quantity", "coded"):
            raise CodeSetError(f"{path.name}:{lineno}: kind must be quantity or coded")
        cs.analytes[row["analyte"]] = Analyte(
            name=row["analyte"], kind=row["kind"], canonical_unit=row["canonical_unit"],
            unit_required=row["unit_required"] == "yes",
            min=_float_or_none(row["min"]), max=_float_or_none(row["max"]))


def _load_labs(cs: CodeSets, path: Path) -> None:
    for lineno, row in _rows(path, ("system", "code", "analyte", "status")):
        if row["analyte"] not in cs.analytes:
            raise CodeSetError(f"{path.name}:{lineno}: analyte {row['analyte']!r} is not in "
                               "analytes.csv")
        ns = _system_key(cs, path, lineno, row["system"])
        cs.labs[(ns, normalize_code(ns, row["code"]))] = row["analyte"]


def _load_units(cs: CodeSets, path: Path) -> None:
    by_canonical: dict[str, list[Analyte]] = {}
    for analyte in cs.analytes.values():
        if analyte.kind == "quantity":
            by_canonical.setdefault(analyte.canonical_unit, []).append(analyte)
    generic: list[tuple[str, str, UnitRule]] = []
    specific: list[tuple[str, str, UnitRule]] = []
    for lineno, row in _rows(path, ("canonical_unit", "unit", "factor", "analyte")):
        rule = UnitRule(factor=float(row["factor"]), canonical_unit=row["canonical_unit"])
        if row["analyte"]:
            analyte = cs.analytes.get(row["analyte"])
            if analyte is None or analyte.canonical_unit != row["canonical_unit"]:
                raise CodeSetError(f"{path.name}:{lineno}: analyte {row['analyte']!r} does not "
                                   f"have canonical unit {row['canonical_unit']!r}")
            specific.append((row["analyte"], normalize_unit(row["unit"]), rule))
        else:
            for analyte in by_canonical.get(row["canonical_unit"], []):
                generic.append((analyte.name, normalize_unit(row["unit"]), rule))
    for analyte_name, unit, rule in generic + specific:  # specific rows win
        cs.units[(analyte_name, unit)] = rule
    for analyte in cs.analytes.values():
        key = (analyte.name, normalize_unit(analyte.canonical_unit))
        if analyte.kind == "quantity" and key not in cs.units:
            raise CodeSetError(f"units.csv: no row for the canonical unit of {analyte.name}")


def _load_statuses(cs: CodeSets, path: Path) -> None:
    for lineno, row in _rows(path, ("resource_type", "value", "happened", "status")):
        if row["happened"] not in ("yes", "no"):
            raise CodeSetError(f"{path.name}:{lineno}: happened must be yes or no")
        cs.statuses.setdefault(row["resource_type"], {})[row["value"]] = (
            row["happened"] == "yes")


def _load_coded_values(cs: CodeSets, path: Path) -> None:
    for lineno, row in _rows(path, ("analyte", "system", "code", "value_code", "status")):
        if row["analyte"] not in cs.analytes:
            raise CodeSetError(f"{path.name}:{lineno}: unknown analyte {row['analyte']!r}")
        if row["system"] == "text":
            key = (row["analyte"], "text", " ".join(phrase_tokens(row["code"])))
        else:
            ns = _system_key(cs, path, lineno, row["system"])
            key = (row["analyte"], ns, normalize_code(ns, row["code"]))
        cs.coded_values[key] = row["value_code"]


#: The baseline findings a Condition can carry (connector/mapping/conditions.py).
FINDINGS = ("del_17p", "t_4_14", "t_14_16", "gain_1q", "extramedullary")


def _load_conditions(cs: CodeSets, path: Path) -> None:
    for lineno, row in _rows(path, ("finding", "system", "code", "status")):
        if row["finding"] not in FINDINGS:
            raise CodeSetError(f"{path.name}:{lineno}: finding must be one of "
                               f"{', '.join(FINDINGS)}")
        if row["system"] == "text":
            tokens = phrase_tokens(row["code"])
            if not tokens:
                raise CodeSetError(f"{path.name}:{lineno}: empty text")
            cs.condition_names.add(tokens, row["finding"])
            continue
        ns = _system_key(cs, path, lineno, row["system"])
        cs.conditions[(ns, normalize_code(ns, row["code"]))] = row["finding"]
