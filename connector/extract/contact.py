"""The last day each patient appears in an Observation the raw store keeps as its code only.

An Observation no lab code set maps (a vital sign, a routine chemistry result) is stored
trimmed to its code (connector/codes/labfilter.py), or, by the DuckDB loader, only counted.
Yet such results are the densest evidence that a patient was seen: overall survival and
time to next treatment are censored at the last contact, and leaving them out would
censor patients too early. So the extract keeps, per patient, the latest day of those
Observations in ``raw_contact``, and the map stage takes it into the last contact
(connector/mapping/contact.py) beside the dates of the resources it reads whole.

Only full dates (YYYY-MM-DD) count, never a day after the load, and never a result
entered in error. A later load only moves a patient's day forward: a result deleted at
the source leaves its day behind, a small, conservative error for a censoring date.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from connector.db.clock import utcnow
from connector.db.models import RawContact

#: Where an Observation carries its clinical day (the latest found counts).
DATE_FIELDS = ("effectiveDateTime", "effectiveInstant", "issued")
PERIOD_FIELD = "effectivePeriod"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _day(value: Any) -> str | None:
    if isinstance(value, str) and _DAY.match(value):
        return value[:10]
    return None


def contact_of(resource: dict[str, Any], today: str) -> tuple[str, str] | None:
    """(subject reference text, latest day) of an Observation, or None without both."""
    if resource.get("status") == "entered-in-error":
        return None
    subject = resource.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(ref, str) or not ref:
        return None
    days = [_day(resource.get(name)) for name in DATE_FIELDS]
    period = resource.get(PERIOD_FIELD)
    if isinstance(period, dict):
        days += [_day(period.get("start")), _day(period.get("end"))]
    usable = [d for d in days if d is not None and d <= today]
    return (ref, max(usable)) if usable else None


def today_text() -> str:
    return utcnow().date().isoformat()


def merge_day(book: dict[tuple[str, str], str], site: str, ref: str, day: str) -> None:
    """Keep the later of the day noted so far and ``day`` for (site, reference)."""
    key = (site, ref)
    if day > book.get(key, ""):
        book[key] = day


def write_contacts(conn: Connection, book: dict[tuple[str, str], str]) -> None:
    """Move each (site, reference)'s stored day forward to the one in ``book``."""
    if not book:
        return
    sites = {site for site, _ in book}
    stored: dict[tuple[str, str], str] = {}
    for site in sites:
        refs = [ref for s, ref in book if s == site]
        for i in range(0, len(refs), 500):
            rows = conn.execute(select(RawContact.patient_ref, RawContact.last_day).where(
                RawContact.site == site, RawContact.patient_ref.in_(refs[i:i + 500])))
            stored.update({(site, ref): day for ref, day in rows})
    new = [{"site": s, "patient_ref": r, "last_day": d} for (s, r), d in sorted(book.items())
           if (s, r) not in stored]
    later = [{"s": s, "r": r, "d": d} for (s, r), d in sorted(book.items())
             if (s, r) in stored and d > stored[(s, r)]]
    if new:
        conn.execute(RawContact.__table__.insert(), new)
    if later:
        conn.execute(update(RawContact).where(
            RawContact.site == bindparam("s"), RawContact.patient_ref == bindparam("r"))
            .values(last_day=bindparam("d")), later)
    book.clear()
