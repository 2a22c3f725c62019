"""The unmapped-code report: codes seen in study resource types but in no code set.

The map stage counts them as it maps each site (``UnmappedCodes``) and stores the counts
with the site's normalized rows (``unmapped_code``, ``unmapped_count``), so the report
always matches the code sets of the last map and nothing after the map stage reads the
raw store. Observations stored as their code only are counted once per distinct code,
weighted by how many carry it.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine

from connector.codes.labfilter import ObservationTrim
from connector.codes.text import phrase_tokens
from connector.db.models import UnmappedCode, UnmappedCount
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


def store_unmapped(conn: Connection, site: str, codes: UnmappedCodes, *, resources: int,
                   stored_as_code: int, now: dt.datetime) -> None:
    """Replace the site's stored counts (inside the site's map transaction)."""
    conn.execute(delete(UnmappedCode).where(UnmappedCode.site == site))
    conn.execute(delete(UnmappedCount).where(UnmappedCount.site == site))
    rows = [{"site": site, "resource_type": key[0], "system": key[1], "code": key[2],
             "text": key[3], "display": codes.display.get(key, ""), "n": n}
            for key, n in sorted(codes.counts.items())]
    for i in range(0, len(rows), 1000):
        conn.execute(insert(UnmappedCode), rows[i:i + 1000])
    conn.execute(insert(UnmappedCount).values(site=site, resources=resources,
                                              stored_as_code=stored_as_code, mapped_at=now))


def stored_unmapped(engine: Engine, sites: Sequence[str] | None = None,
                    ) -> tuple[Counter, dict[UnmappedKey, str]]:
    """Counts of unmapped codings (and text-only names) over ``sites`` (default: every site),
    as the last map of each stored them."""
    counts: Counter = Counter()
    displays: dict[UnmappedKey, str] = {}
    stmt = select(UnmappedCode.resource_type, UnmappedCode.system, UnmappedCode.code,
                  UnmappedCode.text, UnmappedCode.display, UnmappedCode.n)
    if sites is not None:
        stmt = stmt.where(UnmappedCode.site.in_(list(sites)))
    with engine.connect() as conn:
        for rtype, system, code, text, display, n in conn.execute(stmt):
            key = (rtype, system, code, text)
            counts[key] += int(n)
            if display and (key not in displays or display < displays[key]):
                displays[key] = display
    return counts, displays


def write_unmapped(engine: Engine, path: Path | str, sites: Sequence[str] | None = None) -> int:
    """Write the unmapped-code CSV (most frequent first) of ``sites`` (default: every site);
    returns the number of rows."""
    counts, displays = stored_unmapped(engine, sites)
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for (rtype, system, code, _), n in rows:
            writer.writerow((rtype, system, code, displays.get((rtype, system, code, _), ""), n))
    return len(rows)
