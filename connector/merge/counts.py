"""The data-quality counts that leave a site with its rows, so a merged report's data
completeness equals the sites' own: the quarantine as counts by stage and resource type,
the unmapped codes as codes and counts (no display, no free-text name).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from connector.merge.policy import table

#: The site's data-quality counts (the report's data completeness reads them, see
#: ``connector.analysis.completeness.load_quality``), replaced with the site's rows.
SITE_COUNT_TABLES: tuple[str, ...] = ("quarantine_count", "unmapped_code", "unmapped_count")
#: Each text column of the count tables: "keep" (codes, the study's vocabulary) or "drop"
#: (free text from the source, emptied by ``_unmapped_codes``). A test checks that every
#: text column of these tables is here, so a column added later is decided on.
SITE_COUNT_TEXT: dict[str, dict[str, str]] = {
    "quarantine_count": {"site": "keep", "stage": "keep", "resource_type": "keep"},
    "unmapped_code": {"site": "keep", "resource_type": "keep", "system": "keep",
                      "code": "keep", "text": "drop", "display": "drop"},
    "unmapped_count": {"site": "keep"},
}
#: A FHIR resource type name. The extract stage records only types it recognized, but
#: a quarantine row is unusable input by definition: anything else travels as "".
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
#: The ``display`` of the merged row that counts the names without a code (the names stay
#: at the site).
UNCODED = "(names without a code, not carried by merge)"


def _type_name(value: object) -> str:
    """``value`` if it is a resource type name, else "" (it may be anything)."""
    text = "" if value is None else str(value)
    return text if _TYPE_NAME.fullmatch(text) else ""


def _quarantine_counts(conn: Connection, site: str) -> list[dict[str, Any]]:
    """The site's quarantine as counts by stage and resource type.

    Counted from the quarantine itself (a site database) plus the counts a merged
    database already carries (a share file merged on): bodies, resource ids and
    reasons (which may quote the input) stay where they are.
    """
    q, qc = table("quarantine"), table("quarantine_count")
    counts: Counter[tuple[str, str]] = Counter()
    grouped = (select(q.c.stage, q.c.resource_type, func.count()).where(q.c.site == site)
               .group_by(q.c.stage, q.c.resource_type))
    carried = select(qc.c.stage, qc.c.resource_type, qc.c.n).where(qc.c.site == site)
    for query in (grouped, carried):
        for stage, rtype, n in conn.execute(query):
            counts[(str(stage), _type_name(rtype))] += int(n)
    return [{"site": site, "stage": stage, "resource_type": rtype, "n": n}
            for (stage, rtype), n in sorted(counts.items())]


def _unmapped_codes(conn: Connection, site: str) -> list[dict[str, Any]]:
    """The site's unmapped codes as codes and counts.

    A display, and the name of a coding that has no code (``text``), are free text
    from the source and stay at the site; the names without a code are counted
    together per resource type and system, so the totals still match the site's.
    """
    t = table("unmapped_code")
    counts: Counter[tuple[str, str, str]] = Counter()
    for rtype, system, code, n in conn.execute(
            select(t.c.resource_type, t.c.system, t.c.code, t.c.n).where(t.c.site == site)):
        counts[(str(rtype), str(system), str(code))] += int(n)
    return [{"site": site, "resource_type": rtype, "system": system, "code": code,
             "text": "", "display": "" if code else UNCODED, "n": n}
            for (rtype, system, code), n in sorted(counts.items())]


def site_counts(conn: Connection, site: str) -> dict[str, list[dict[str, Any]]]:
    """The rows of ``SITE_COUNT_TABLES`` that leave the site: counts, codes, the map time."""
    t = table("unmapped_count")
    totals = [dict(r) for r in conn.execute(select(t).where(t.c.site == site)).mappings()]
    return {"quarantine_count": _quarantine_counts(conn, site),
            "unmapped_code": _unmapped_codes(conn, site), "unmapped_count": totals}
