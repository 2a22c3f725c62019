"""One site's raw resources → normalized rows, quarantine entries and unmapped codes.

``SiteMapper`` is what every resource type's handler (connector/mapping/handlers.py)
works with: the site's code sets, the patients and Medications seen so far, the
checks all event types share (status, subject, dates, modifiers) and the writer
(connector/mapping/writer.py) that validates, deduplicates and hands rows out. Each
resource goes through its handler, cheapest step first: find its study code (most
resources stop here and are only counted as unmapped), then the checks, then R4B
validation in batches. Any failure after the code matched is a quarantine with a
reason; nothing raises out.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass, field

import orjson

from connector.codes.codesets import CodeSets
from connector.mapping.contact import LastRecords
from connector.mapping.fhir import Excluded, Reject, subject_patient
from connector.mapping.handlers import HANDLERS
from connector.mapping.match import DrugMatch, match_drug
from connector.mapping.modifiers import unknown_modifier
from connector.mapping.unmapped import UnmappedCodes
from connector.mapping.writer import (
    EVENT_TABLES,
    Addition,
    BatchValidator,
    Drained,
    RowWriter,
    structure_problem,
)

log = logging.getLogger(__name__)

#: Distinct answers a site's matching caches hold; bounded so odd extracts cannot grow them.
MATCH_CACHE = 20000


@dataclass(frozen=True)
class RawRow:
    """The columns of ``raw_resource`` the map stage reads."""

    resource_type: str
    resource_id: str
    version_id: str | None
    content_hash: str
    source: str
    body: str


@dataclass
class SiteResult:
    """What the map stage wrote for one site: its counts (the rows are streamed out by
    ``SiteMapper.drain``)."""

    site: str
    counts: Counter = field(default_factory=Counter)  # table → rows kept
    unmapped: UnmappedCodes = field(default_factory=UnmappedCodes)
    unmapped_resources: int = 0
    stale_trimmed: int = 0  # see connector.mapping.run.stale_trimmed
    excluded: Counter = field(default_factory=Counter)  # resource type → resources
    ignored: int = 0  # known codes that are not study events
    duplicates: int = 0
    reasons: Counter = field(default_factory=Counter)


class SiteMapper:
    """Maps the raw resources of one site; feed Patients and Medications first."""

    def __init__(self, codesets: CodeSets, site: str, *, secret: bytes | None,
                 today: dt.date, validate_many: BatchValidator | None = None) -> None:
        self.cs = codesets
        self.site = site
        self.secret = secret
        self.max_date = today + dt.timedelta(days=codesets.max_future_days)
        self.result = SiteResult(site=site)
        self.patients: dict[str, int | None] = {}  # source id → birth year
        self.bad_patients: set[str] = set()
        self.medications: dict[str, tuple[RawRow, dict]] = {}
        self.medication_problem: dict[str, str | None] = {}
        self.writer = RowWriter(site, codesets.max_string_chars, validate_many)
        self.last_records = LastRecords(self.max_date, codesets.min_event_date)
        # (system, code) as sent → analyte or None (connector/mapping/observation.py)
        self.lab_codes: dict[tuple[str, str], str | None] = {}
        self._drug_matches: dict[bytes, list[DrugMatch]] = {}

    # -- entry points -------------------------------------------------------

    def add(self, row: RawRow) -> None:
        """Map one raw resource (any study type)."""
        try:
            resource = orjson.loads(row.body)
        except orjson.JSONDecodeError:
            self.quarantine(row, "stored body is not JSON")
            return
        if not isinstance(resource, dict):
            self.quarantine(row, "stored body is not a JSON object")
            return
        handler = HANDLERS.get(row.resource_type)
        if handler is None:
            return
        if row.resource_type not in ("Patient", "Medication") and (
                # unknown_modifier's own shortcut, before the allowed set is built
                "modifierExtension" not in row.body
                or not unknown_modifier(resource, self.cs.allowed_modifiers(row.resource_type),
                                        row.body)):
            # a resource with a modifier the tool does not know says nothing reliable,
            # not even that the patient was seen that day
            self.last_records.note(resource)
        try:
            handler(self, row, resource)
        except Reject as exc:
            self.quarantine(row, exc.reason)
        except Excluded:
            self.result.excluded[row.resource_type] += 1
        except RecursionError:
            self.quarantine(row, "resource nested too deeply")
        except Exception as exc:  # noqa: BLE001  (one odd resource must not stop the site)
            log.warning("unexpected %s while mapping a %s", type(exc).__name__,
                        row.resource_type, exc_info=log.isEnabledFor(logging.DEBUG))
            self.quarantine(row, f"unexpected error while mapping: {type(exc).__name__}")
        # Outside the try: a failing validation pool must stop the run, not blame one row.
        if self.writer.full():
            self.writer.flush()

    def finish(self) -> SiteResult:
        """Validate what is still queued and complete the counts (``drain`` the last rows)."""
        writer = self.writer
        writer.flush()
        writer.resolve()
        result = self.result
        result.counts.update({"patient": len(self.patients),
                              **{table: writer.kept(table) for table in EVENT_TABLES},
                              "quarantine": writer.quarantined})
        result.duplicates = writer.duplicates
        result.reasons = Counter(writer.reasons)
        return result

    def buffered(self) -> int:
        """Rows waiting to be drained."""
        return self.writer.buffered()

    def drain(self) -> Drained:
        """Hand over the rows produced so far (the map stage writes them)."""
        return self.writer.drain()

    # -- what the handlers share ------------------------------------------------

    def match_drug(self, concepts: list[object]) -> list[DrugMatch]:
        """``match_drug``, remembered per distinct set of concepts: a site gives the same
        few hundred drugs thousands of times, and name matching is the costly part."""
        try:
            key = orjson.dumps(concepts)
        except (TypeError, orjson.JSONEncodeError):
            return match_drug(self.cs, concepts)
        found = self._drug_matches.get(key)
        if found is None:
            found = match_drug(self.cs, concepts)
            if len(self._drug_matches) < MATCH_CACHE:
                self._drug_matches[key] = found
        return list(found)

    def status(self, resource_type: str, res: dict) -> str:
        """The event's status, if it says the event happened (else Excluded or Reject)."""
        status = res.get("status")
        if status is None:
            raise Reject("missing status")
        happened = self.cs.statuses.get(resource_type, {}).get(status) if isinstance(
            status, str) else None
        if happened is None:
            raise Reject(f"unknown status value for {resource_type}")
        if not happened:
            raise Excluded
        return status

    def subject(self, res: dict) -> str:
        """The id of the site's Patient the event belongs to."""
        patient = subject_patient(res)
        if patient in self.patients:
            return patient
        if patient in self.bad_patients:
            raise Reject("subject Patient was quarantined")
        raise Reject("reference to unknown patient")

    def check_date(self, day: dt.date, patient: str, what: str) -> None:
        if day < self.cs.min_event_date or day > self.max_date:
            raise Reject(f"implausible {what} date")
        birth_year = self.patients[patient]
        if birth_year is not None and day.year < birth_year:
            raise Reject(f"{what} date before the patient's birth")

    def check_structure(self, resource_type: str, res: dict, body: str | None = None) -> None:
        problem = structure_problem(resource_type, res, self.cs.max_string_chars, body)
        if problem:
            raise Reject(problem)

    def check_modifiers(self, row: RawRow, res: dict) -> None:
        problem = unknown_modifier(res, self.cs.allowed_modifiers(row.resource_type), row.body)
        if problem:
            raise Reject(problem)

    def defer(self, row: RawRow, res: dict, additions: list[Addition]) -> None:
        """Queue rows whose resource passed the cheap checks for batch validation."""
        self.check_modifiers(row, res)
        self.writer.defer(row, res, additions)

    def unmapped(self, resource_type: str, concepts: list[object]) -> None:
        """A resource of a study type whose code no code set maps: count it and its codes."""
        self.result.unmapped_resources += 1
        self.result.unmapped.note(resource_type, concepts)

    def quarantine(self, row: RawRow, reason: str) -> None:
        self.writer.quarantine(row, reason)
