"""The unmapped-code report: codes seen in study resource types but in no code set.

The map stage counts them as it maps each site (``UnmappedCodes``); the report
recomputes them from the raw store with the current code sets. Observations stored as
their code only are counted once per distinct code, weighted by how many carry it.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson
from sqlalchemy.engine import Engine

from connector.codes.labfilter import ObservationTrim
from connector.codes.text import phrase_tokens
from connector.mapping.fhir import codings, concept_text

COLUMNS = ("resource_type", "system", "code", "display", "count")
UnmappedKey = tuple[str, str, str, str]  # resource_type, system, code, normalized text
#: Distinct concept lists remembered; a site sends the same few thousand codes again and again.
MEMO_LIMIT = 20000


def unmapped_keys(resource_type: str, concepts: list[object]) -> list[tuple[UnmappedKey, str]]:
    """Each coding (by system and code, else by its name) and each text-only name of
    ``concepts``, once, with the display it came with."""
    found: dict[UnmappedKey, str] = {}
    for concept in concepts:
        items = codings(concept)
        for coding in items:
            key = (resource_type, coding.system or "", coding.code or "",
                   "" if coding.code else " ".join(phrase_tokens(coding.display or "")))
            found.setdefault(key, coding.display or "")
        text = concept_text(concept)
        if text and not any(c.code for c in items):
            found.setdefault((resource_type, "", "", " ".join(phrase_tokens(text))), text)
    return list(found.items())


class UnmappedCodes:
    """The unmapped codes of one site: how many resources carry each, and a display."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()  # UnmappedKey → resources
        self.display: dict[UnmappedKey, str] = {}
        self._memo: dict[bytes, list[tuple[UnmappedKey, str]]] = {}

    def note(self, resource_type: str, concepts: list[object], weight: int = 1) -> None:
        for key, display in self._keys(resource_type, concepts):
            self.counts[key] += weight
            held = self.display.get(key)
            if display and (held is None or display < held):
                self.display[key] = display[:200]

    def _keys(self, resource_type: str, concepts: list[object]
              ) -> list[tuple[UnmappedKey, str]]:
        try:
            memo_key = orjson.dumps([resource_type, concepts])
        except (TypeError, orjson.JSONEncodeError):
            return unmapped_keys(resource_type, concepts)
        keys = self._memo.get(memo_key)
        if keys is None:
            keys = unmapped_keys(resource_type, concepts)
            if len(self._memo) < MEMO_LIMIT:
                self._memo[memo_key] = keys
        return keys

    def note_trimmed(self, body: str, n: int, trim: ObservationTrim) -> None:
        """``n`` Observations stored as this code only (a trimmed body): counted as the map
        stage counts a whole one, unless the current code sets now map the code."""
        try:
            resource = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        code = resource.get("code") if isinstance(resource, dict) else None
        if isinstance(code, dict) and not trim.is_study_lab(code):
            self.note("Observation", [code], weight=n)


def collect_unmapped(engine: Engine, sites: Sequence[str] | None = None,
                     ) -> tuple[Counter, dict[UnmappedKey, str]]:
    """Counts of unmapped codings (and text-only names) over ``sites`` (default: every site)."""
    from connector.codes.codesets import load_codesets
    from connector.codes.labfilter import lab_filter_digest
    from connector.mapping.handlers import EVENT_TYPES, FIRST_PASS
    from connector.mapping.resources import SiteMapper
    from connector.mapping.run import iter_raw, raw_sites, trimmed_codes

    codesets = load_codesets()
    trim = ObservationTrim(codesets, lab_filter_digest(codesets))
    counts: Counter = Counter()
    displays: dict[UnmappedKey, str] = {}
    with engine.connect() as conn:
        for site in raw_sites(engine) if sites is None else sites:
            mapper = SiteMapper(codesets, site, secret=None, today=dt.date.today())
            for types in (FIRST_PASS, EVENT_TYPES):
                for row in iter_raw(conn, site, types):
                    mapper.add(row)
                    mapper.drain()
            unmapped = mapper.finish().unmapped
            for body, n in trimmed_codes(conn, site):
                unmapped.note_trimmed(body, n, trim)
            counts.update(unmapped.counts)
            for key, text in unmapped.display.items():
                if key not in displays or text < displays[key]:
                    displays[key] = text
    return counts, displays


def write_unmapped(engine: Engine, path: Path | str, sites: Sequence[str] | None = None) -> int:
    """Write the unmapped-code CSV (most frequent first) of ``sites`` (default: every site);
    returns the number of rows."""
    counts, displays = collect_unmapped(engine, sites)
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for (rtype, system, code, _), n in rows:
            writer.writerow((rtype, system, code, displays.get((rtype, system, code, _), ""), n))
    return len(rows)
