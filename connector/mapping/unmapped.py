"""The unmapped-code report: codes seen in study resource types but in no code set.

It is recomputed from the raw store (codes only, no validation), so it always
matches the current code sets and needs no table of its own.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.engine import Engine

from connector.codes.codesets import load_codesets
from connector.mapping.resources import EVENT_TYPES, RawRow, SiteMapper, SiteResult, UnmappedKey
from connector.mapping.run import FIRST_PASS, iter_raw, raw_sites, trimmed_codes

COLUMNS = ("resource_type", "system", "code", "display", "count")


def collect_unmapped(engine: Engine, sites: Sequence[str] | None = None,
                     ) -> tuple[Counter, dict[UnmappedKey, str]]:
    """Counts of unmapped codings (and text-only names) over ``sites`` (default: every site)."""
    codesets = load_codesets()
    counts: Counter = Counter()
    displays: dict[UnmappedKey, str] = {}
    with engine.connect() as conn:
        for site in raw_sites(engine) if sites is None else sites:
            mapper = SiteMapper(codesets, site, secret=None, today=dt.date.today(),
                                unmapped_only=True)
            for types in (FIRST_PASS, EVENT_TYPES):
                for row in iter_raw(conn, site, types):
                    mapper.add(row)
            _merge(mapper.finish(), 1, counts, displays)
            for body, n in trimmed_codes(conn, site):
                # the same code stored n times: look at it once, count it n times
                probe = SiteMapper(codesets, site, secret=None, today=dt.date.today(),
                                   unmapped_only=True)
                probe.add(RawRow(resource_type="Observation", resource_id="", version_id=None,
                                 content_hash="", source="", body=body))
                _merge(probe.finish(), n, counts, displays)
    return counts, displays


def _merge(result: SiteResult, weight: int, counts: Counter,
           displays: dict[UnmappedKey, str]) -> None:
    for key, n in result.unmapped.items():
        counts[key] += n * weight
    for key, text in result.unmapped_display.items():
        if key not in displays or text < displays[key]:
            displays[key] = text


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
