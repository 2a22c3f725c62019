"""OMOP concept ids for the study's vocabulary, from ``mappings/omop_concepts.csv``.

The file maps each study value (an ingredient, a procedure category, an analyte, a
unit, a sex, an episode kind) to a standard OMOP concept with the source of that
mapping. A value without a confirmed concept has ``concept_id`` 0, which is what the
CDM asks for when no standard concept is known; the export lists every row written
with concept 0 (``omop_concept_zero.csv``) so a site's vocabulary team can fill the
file from Athena and export again.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "mappings"
FILENAME = "omop_concepts.csv"
COLUMNS = ["kind", "key", "vocabulary", "code", "concept_id", "concept_name", "status",
           "source"]


class ConceptFileError(ValueError):
    """``omop_concepts.csv`` is malformed (a clear message, not a silent 0)."""


@dataclass(frozen=True)
class Concept:
    concept_id: int
    code: str
    name: str


@dataclass
class ConceptMap:
    """(kind, key) → concept; anything not in the file is concept 0."""

    entries: dict[tuple[str, str], Concept] = field(default_factory=dict)

    def id(self, kind: str, key: str | None) -> int:
        entry = self.entries.get((kind, (key or "").strip().lower()))
        return entry.concept_id if entry else 0

    def code(self, kind: str, key: str | None) -> str:
        entry = self.entries.get((kind, (key or "").strip().lower()))
        return entry.code if entry else ""


def mappings_dir() -> Path:
    """``COHORT_MAPPINGS_DIR`` (a site's reviewed copy) or the repository's mappings/."""
    override = os.environ.get("COHORT_MAPPINGS_DIR")
    return Path(override) if override else DEFAULT_DIR


def load_concepts(directory: Path | None = None) -> ConceptMap:
    path = (directory or mappings_dir()) / FILENAME
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != COLUMNS:
                raise ConceptFileError(f"{path}: columns must be {', '.join(COLUMNS)}")
            rows = list(reader)
    except OSError as exc:
        raise ConceptFileError(f"{path}: cannot be read ({type(exc).__name__})") from None
    out = ConceptMap()
    for line, row in enumerate(rows, start=2):
        key = (row["kind"].strip(), row["key"].strip().lower())
        if key in out.entries:
            raise ConceptFileError(f"{path}:{line}: {key[0]} '{key[1]}' is listed twice")
        try:
            concept_id = int(row["concept_id"])
        except ValueError:
            raise ConceptFileError(f"{path}:{line}: concept_id must be an integer") from None
        if not row["source"].strip():
            raise ConceptFileError(f"{path}:{line}: every mapping needs a source")
        out.entries[key] = Concept(concept_id, row["code"].strip(), row["concept_name"].strip())
    return out
