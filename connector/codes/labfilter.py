"""The Observation filter: keep only the code of Observations the study does not use.

A hospital extract is mostly routine results (vital signs, chemistry, blood
counts) that no code set in ``mappings/labs.csv`` maps: about four in five
resources of a lab-heavy export. Storing them whole would cost most of the raw
store's size and of the load's time, and keep clinical data the study has no
use for. So the raw store keeps, for such an Observation, its id, version, the
hash of the whole resource and a *trimmed body*: ``resourceType`` and ``code``,
enough for the unmapped-code report and for telling a changed resource from an
unchanged one.

The decision is the map stage's own (``CodeSets.lab_analyte`` on each coding),
so a trimmed Observation is exactly one the map stage would count as unmapped; it
lives here, below both stages, so that extract (which trims) and mapping (which
checks trimmed rows against changed code sets) share it without importing each other.
An Observation whose ``code`` is missing or malformed is kept whole, so the map
stage quarantines it with its reason as before. When ``labs.csv`` gains a code,
the stored trimmed rows that now match are reported by ``cohort map``; a
folder or Bulk source restores them on its next load (same hash, now wanted),
and a REST source reads Observations whole again because the filter's digest
is part of its watermark (``connector/extract/remote.py``).

Set ``COHORT_KEEP_ALL_BODIES=1`` to store every body whole.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from connector.codes.codesets import CodeSets, load_codesets

KEEP_ALL_ENV = "COHORT_KEEP_ALL_BODIES"
#: What a trimmed body holds. Not the id or meta (they have columns of their own), so
#: Observations with the same code share one body text, and the unmapped-code report
#: and the stale check read each distinct code once (``GROUP BY body``).
TRIMMED_KEYS = ("resourceType", "code")


#: Distinct (system, code) answers remembered; a hospital uses a few thousand lab codes.
MEMO_LIMIT = 50_000


@dataclass(frozen=True)
class ObservationTrim:
    """Which Observations to store as their code only."""

    codesets: CodeSets
    digest: str
    _memo: dict[tuple[str, str], str | None] = field(default_factory=dict, compare=False,
                                                     repr=False)

    def trimmed(self, resource: dict[str, Any]) -> dict[str, Any] | None:
        """The trimmed copy of ``resource``, or None to keep it whole."""
        if resource.get("resourceType") != "Observation":
            return None
        code = resource.get("code")
        if not isinstance(code, dict) or self.is_study_lab(code):
            return None
        return {key: resource[key] for key in TRIMMED_KEYS if key in resource}

    def is_study_lab(self, code: dict[str, Any]) -> bool:
        return study_lab_coding(self.codesets, code, self._memo) is not None


def study_lab_coding(codesets: CodeSets, code: dict[str, Any],
                     memo: dict[tuple[str, str], str | None]) -> tuple[str, dict] | None:
    """The analyte of the first coding of ``code`` a lab code set maps, with that coding.

    The hot path of a lab-heavy extract and map: most Observations are not study labs,
    so answers are remembered per (system, code) as sent (``memo``, bounded) and nothing
    is built until a code matches. The map stage and the filter decide alike.
    """
    items = code.get("coding")
    if not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, dict):
            continue
        system, value = item.get("system"), item.get("code")
        if not isinstance(system, str) or not isinstance(value, str) or not value:
            continue
        key = (system, value)
        if key in memo:
            analyte = memo[key]
        else:
            analyte = codesets.lab_analyte(system, value)
            if len(memo) < MEMO_LIMIT:
                memo[key] = analyte
        if analyte:
            return analyte, item
    return None


def lab_filter_digest(codesets: CodeSets) -> str:
    """Changes whenever the set of kept lab codes (or their systems) changes."""
    text = "|".join(sorted(f"{ns}:{code}" for ns, code in codesets.labs)) + "#" + "|".join(
        sorted(f"{uri}={ns}" for uri, ns in codesets.systems.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_BUILT: dict[int, ObservationTrim] = {}


def default_trim() -> ObservationTrim | None:
    """The filter of the current ``mappings/``, or None when every body is to be kept."""
    if os.environ.get(KEEP_ALL_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None
    codesets = load_codesets()  # cached per directory
    trim = _BUILT.get(id(codesets))
    if trim is None or trim.codesets is not codesets:
        trim = _BUILT[id(codesets)] = ObservationTrim(codesets, lab_filter_digest(codesets))
    return trim
