"""The last day each patient is seen in any resource the site gave, mapped or not.

Overall survival and time to next treatment are censored at the last contact.
Taking it only from the study's events (study drugs, CAR-T and transplant
procedures, study labs) would censor a patient seen for an antibiotic, a
procedure the study ignores or an oral drug no code set knows too early. So the
map stage notes the latest date of every resource it reads, whatever its code,
and writes it to ``patient.last_record_date``; derive takes the latest of it and
the events. Records entered in error are not contact. Observations the extract
stored as their code only (connector/codes/labfilter.py) or only counted (the DuckDB
loader) count through the latest day the extract kept for each patient
(``raw_contact``, connector/extract/contact.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from connector.db.models import Patient, RawContact
from connector.mapping.fhir import Reject, parse_date, reference_target

#: The fields that date a resource (the first found of each group is read).
DATE_FIELDS = ("effectiveDateTime", "effectiveInstant", "performedDateTime", "authoredOn",
               "whenHandedOver", "whenPrepared", "dateAsserted", "issued", "recordedDate",
               "onsetDateTime", "occurrenceDateTime")
PERIOD_FIELDS = ("effectivePeriod", "performedPeriod", "period", "onsetPeriod")
SUBJECT_FIELDS = ("subject", "patient")
NOT_CONTACT = frozenset({"entered-in-error"})


def _patient_of(res: dict[str, Any]) -> str | None:
    for name in SUBJECT_FIELDS:
        target = reference_target(res.get(name))
        if target is not None and target[0] == "Patient":
            return target[1]
    return None


def _days(res: dict[str, Any]) -> Iterable[dt.date]:
    for name in DATE_FIELDS:
        value = res.get(name)
        if isinstance(value, str):
            yield _parsed(value)
    for name in PERIOD_FIELDS:
        period = res.get(name)
        if isinstance(period, dict):
            for key in ("start", "end"):
                if isinstance(period.get(key), str):
                    yield _parsed(period[key])


def _parsed(value: str) -> dt.date:
    try:
        return parse_date(value, "date")
    except Reject:
        return dt.date.min


class LastRecords:
    """Latest plausible date per patient of the resources noted."""

    def __init__(self, latest_allowed: dt.date, earliest_allowed: dt.date) -> None:
        self.latest_allowed = latest_allowed
        self.earliest_allowed = earliest_allowed
        self.days: dict[str, dt.date] = {}

    def note(self, res: dict[str, Any]) -> None:
        """Remember the resource's latest date for its patient (if it has both)."""
        status = res.get("status")
        if isinstance(status, str) and status in NOT_CONTACT:
            return
        patient = _patient_of(res)
        if patient is None:
            return
        days = [d for d in _days(res) if self.earliest_allowed <= d <= self.latest_allowed]
        if not days:
            return
        last = max(days)
        if last > self.days.get(patient, dt.date.min):
            self.days[patient] = last

    def note_day(self, patient: str, day: dt.date) -> None:
        """Remember one plausible day for ``patient``."""
        if self.earliest_allowed <= day <= self.latest_allowed and \
                day > self.days.get(patient, dt.date.min):
            self.days[patient] = day

    def note_trimmed(self, conn: Connection, site: str) -> None:
        """Take in the latest days the extract kept of the site's trimmed Observations."""
        rows = conn.execute(select(RawContact.patient_ref, RawContact.last_day)
                            .where(RawContact.site == site))
        for ref, day in rows:
            target = reference_target({"reference": ref})
            if target is not None and target[0] == "Patient":
                self.note_day(target[1], _parsed(day))

    def apply(self, patient_rows: list[dict[str, Any]]) -> None:
        """Set ``last_record_date`` on collected patient rows."""
        for row in patient_rows:
            row["last_record_date"] = self.days.get(row["source_id"])

    def write(self, conn: Connection, site: str, batch: int = 1000) -> None:
        """Set ``patient.last_record_date`` of the site's patients already written."""
        stmt = (update(Patient)
                .where(Patient.site == site, Patient.source_id == bindparam("pid"))
                .values(last_record_date=bindparam("day")))
        items = sorted(self.days.items())
        for i in range(0, len(items), batch):
            conn.execute(stmt, [{"pid": pid, "day": day} for pid, day in items[i:i + batch]])
