"""Derived rows on their way to the database, and what a derive run counts.

``Derived`` derives one timeline at a time (``derive.py``, pure), keeps its rows
until they are written in batches and adds up the counts that become the run's
``DeriveSummary``; worker processes send theirs back to be merged and written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from sqlalchemy import delete
from sqlalchemy.engine import Connection

from connector.cohort.derive import derive_normalized
from connector.cohort.imwg import normalize_labs
from connector.cohort.model import CohortPatientRecord, LineRecord, PatientTimeline
from connector.cohort.rules import Rules
from connector.cohort.timelines import where_site
from connector.db.fastinsert import insert_rows
from connector.db.models import CohortPatient, PatientBaseline, TherapyLine


@dataclass
class DeriveSummary:
    """What a derive run produced, for the CLI and the run log."""

    sites: list[str] = field(default_factory=list)
    patients: int = 0
    in_cohort: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    labs_dropped: int = 0

    def __str__(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items())) or "none"
        text = (f"{self.in_cohort} patients in cohort of {self.patients} "
                f"(excluded: {reasons}); {self.lines} lines")
        if self.labs_dropped:
            text += f"; {self.labs_dropped} lab values in an unknown unit ignored"
        return text


_PATIENT_FIELDS = tuple(f.name for f in fields(CohortPatientRecord))
_LINE_FIELDS = tuple(f.name for f in fields(LineRecord))


def patient_row(rec: CohortPatientRecord) -> dict:
    """The ``cohort_patient`` row of a derived patient."""
    return {name: getattr(rec, name) for name in _PATIENT_FIELDS}


def line_row(rec: CohortPatientRecord, line: LineRecord) -> dict:
    """The ``therapy_line`` row of one of the patient's lines."""
    row = {name: getattr(line, name) for name in _LINE_FIELDS}
    row["drugs"] = line.drugs_text
    row.update(site=rec.site, source_id=rec.source_id, patient_key=rec.patient_key)
    return row


@dataclass
class Derived:
    """Derived rows not yet written, and the counts of everything derived so far."""

    patient_rows: list[dict] = field(default_factory=list)
    line_rows: list[dict] = field(default_factory=list)
    patients: int = 0
    in_cohort: int = 0
    lines: int = 0
    labs_dropped: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    sites: set[str] = field(default_factory=set)
    orphans: Counter[str] = field(default_factory=Counter)

    def add(self, timeline: PatientTimeline, rules: Rules) -> None:
        """Derive one patient (their raw labs are not kept)."""
        labs, dropped = normalize_labs(timeline.labs, rules)
        rec, lines = derive_normalized(timeline.patient, timeline.exposures,
                                       timeline.procedures, labs, rules)
        self.patient_rows.append(patient_row(rec))
        self.line_rows += [line_row(rec, line) for line in lines]
        self.patients += 1
        self.lines += len(lines)
        self.labs_dropped += dropped
        self.sites.add(rec.site)
        if rec.in_cohort:
            self.in_cohort += 1
        else:
            self.excluded[rec.exclusion_reason or "unknown"] += 1

    def merge(self, other: Derived) -> None:
        """Take ``other``'s rows and add up its counts."""
        self.patient_rows += other.patient_rows
        self.line_rows += other.line_rows
        self.patients += other.patients
        self.in_cohort += other.in_cohort
        self.lines += other.lines
        self.labs_dropped += other.labs_dropped
        self.excluded.update(other.excluded)
        self.sites |= other.sites
        self.orphans.update(other.orphans)

    def pending(self) -> int:
        """How many rows of the larger table wait to be written."""
        return max(len(self.patient_rows), len(self.line_rows))

    def write(self, conn: Connection) -> None:
        """Send the pending rows (one executemany per table) and forget them."""
        insert_rows(conn, CohortPatient, self.patient_rows)
        insert_rows(conn, TherapyLine, self.line_rows)
        self.patient_rows, self.line_rows = [], []

    def summary(self) -> DeriveSummary:
        """The counts so far, as the run reports them."""
        return DeriveSummary(sites=sorted(self.sites), patients=self.patients,
                             in_cohort=self.in_cohort, excluded=dict(self.excluded),
                             lines=self.lines, labs_dropped=self.labs_dropped)


def clear_derived(conn: Connection, site: str | None) -> None:
    """Delete the derived rows of ``site`` (or of every site) inside ``conn``'s transaction."""
    conn.execute(delete(TherapyLine).where(where_site(TherapyLine.site, site)))
    conn.execute(delete(PatientBaseline).where(where_site(PatientBaseline.site, site)))
    conn.execute(delete(CohortPatient).where(where_site(CohortPatient.site, site)))
