"""Between the handlers and the database: validation, deduplication, quarantine.

A handler (connector/mapping/handlers.py) decides what rows a resource gives and hands
them here with ``defer``. They wait until a batch of resources is validated against
R4B (in worker processes for a large site, while the next batch is mapped), then each
row competes with the rows of the same natural key: the first by sort order wins, so a
resource recorded twice is one event. A streaming map drains the winners in batches;
a row that later loses to an earlier duplicate is retracted from the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from connector.mapping.fhir import bad_string
from connector.mapping.validate import r4b_problem

Row = dict[str, Any]

#: Validates many stored bodies at once: items are (resource type, body, max string chars).
#: The answers may come back lazily (an iterator over worker results), in item order.
BatchValidator = Callable[[list[tuple[str, str, int]]], Iterable[str | None]]
PENDING_BATCH = 4000
#: Rows (of all tables) a streaming mapper holds before ``drain`` should be called.
DRAIN_ROWS = 2000

#: The event tables, in the order rows are drained and written.
EVENT_TABLES = ("medication_exposure", "procedure_event", "lab_result", "condition_record")


def may_hold_bad_string(body: str | None, max_chars: int) -> bool:
    """Whether a stored body could hold an oversized or NUL string.

    A decoded JSON string is never longer than its encoded text, and a NUL can
    only arrive as the escape ``\\u0000`` (raw control characters are invalid
    JSON), so a short body without that escape needs no scan.
    """
    return body is None or len(body) > max_chars or "\\u0000" in body


def structure_problem(resource_type: str, res: dict, max_chars: int,
                      body: str | None = None) -> str | None:
    """Why a resource cannot be stored (a bad string, invalid R4B), or None.

    ``body`` is the stored text of ``res`` when known; it lets the string scan be skipped.
    """
    try:
        if may_hold_bad_string(body, max_chars):
            problem = bad_string(res, max_chars)
            if problem:
                return problem
        return r4b_problem(resource_type, res, body)
    except RecursionError:
        return "resource nested too deeply"


def validate_stored(item: tuple[str, str, int]) -> str | None:
    """``structure_problem`` of a stored body; the unit of work of a validation process."""
    resource_type, body, max_chars = item
    try:
        return structure_problem(resource_type, orjson.loads(body), max_chars, body)
    except Exception as exc:  # noqa: BLE001  (reported as a reason, never raised)
        return f"unexpected error while validating: {type(exc).__name__}"


class Candidates:
    """Rows keyed by their table's natural key; the first by sort order wins.

    Only the keys and the winners' sort orders stay for the whole site; rows wait
    in ``buffer`` until drained. When a later resource beats a row already
    drained (written), its key goes to ``retract`` so the writer deletes it first.
    """

    def __init__(self) -> None:
        self.held: dict[tuple, tuple] = {}  # natural key → sort order of the winner
        self.buffer: dict[tuple, Row] = {}
        self.retract: list[tuple] = []
        self.duplicates = 0

    def add(self, key: tuple, order: tuple, row: Row) -> None:
        held = self.held.get(key)
        if held is not None:
            self.duplicates += 1
            if held <= order:
                return
            if key not in self.buffer:
                self.retract.append(key)
        self.held[key] = order
        self.buffer[key] = row

    def drain(self) -> tuple[list[tuple], list[Row]]:
        """Keys to delete, then rows to insert, since the last drain."""
        retract, rows = self.retract, list(self.buffer.values())
        self.retract, self.buffer = [], {}
        return retract, rows


@dataclass
class Drained:
    """Rows produced since the last drain, and natural keys of written rows that lost."""

    patients: list[Row] = field(default_factory=list)
    exposures: list[Row] = field(default_factory=list)
    procedures: list[Row] = field(default_factory=list)
    labs: list[Row] = field(default_factory=list)
    conditions: list[Row] = field(default_factory=list)
    quarantine: list[Row] = field(default_factory=list)
    retract: dict[str, list[tuple]] = field(default_factory=dict)  # table → keys


#: A row waiting for its resource's validation: (table, natural key, sort order, values).
Addition = tuple[str, tuple, tuple, Row]
#: The stored resource a quarantine row describes (``RawRow`` of connector.mapping.resources).
Pending = tuple[Any, dict | None, list[Addition]]


class RowWriter:
    """The rows of one site on their way out: validated, deduplicated, then drained."""

    def __init__(self, site: str, max_chars: int,
                 validate_many: BatchValidator | None = None) -> None:
        self.site = site
        self.max_chars = max_chars
        self.tables = {name: Candidates() for name in EVENT_TABLES}
        self.patient_rows: list[Row] = []
        self.quarantine_rows: list[Row] = []
        self.reasons: dict[str, int] = {}
        self._quarantined: set[tuple[str, str]] = set()
        self._validate_many = validate_many
        # Resources that passed the handlers' checks, waiting for batch validation.
        self._pending: list[Pending] = []
        # A batch sent to the validation workers, answered while the next one is mapped.
        self._inflight: tuple[list[Pending], Iterable[str | None]] | None = None

    # -- in -------------------------------------------------------------------

    def defer(self, row: Any, res: dict, additions: list[Addition]) -> None:
        """Queue rows of a resource until it is validated (``flush`` when ``full``)."""
        self._pending.append((row, res, additions))

    def full(self) -> bool:
        """A batch is queued: the mapper flushes it outside any one resource's handling,
        so a failing validation pool stops the run instead of blaming a resource."""
        return len(self._pending) >= PENDING_BATCH

    def quarantine(self, row: Any, reason: str) -> None:
        """Keep a resource aside with its reason (once per content and reason)."""
        reason = reason[:500]
        if (row.content_hash, reason) in self._quarantined:
            return
        self._quarantined.add((row.content_hash, reason))
        head = reason.split(":", 1)[0]
        self.reasons[head] = self.reasons.get(head, 0) + 1
        self.quarantine_rows.append({
            "site": self.site, "stage": "map", "resource_type": row.resource_type,
            "resource_id": row.resource_id, "reason": reason, "source": row.source,
            "content_hash": row.content_hash, "raw": row.body})

    # -- validation -------------------------------------------------------------

    def flush(self) -> None:
        """Validate the queued resources (in worker processes when given) and keep the valid.

        A batch sent to workers is answered at the next flush, so the workers
        validate while the mapper maps the following resources.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        if self._validate_many is None:
            self._keep_valid(pending, [
                structure_problem(row.resource_type, res, self.max_chars, row.body)
                for row, res, _ in pending])
            return
        # Workers get the stored text (cheap to pickle), not the parsed dicts.
        sent: list[Pending] = [(row, None, additions) for row, _, additions in pending]
        answers = self._validate_many([(row.resource_type, row.body, self.max_chars)
                                       for row, _, _ in pending])
        self.resolve()
        self._inflight = (sent, answers)

    def resolve(self) -> None:
        """Wait for the batch in the workers, if any, and keep its valid resources."""
        if self._inflight is not None:
            sent, answers = self._inflight
            self._inflight = None
            self._keep_valid(sent, list(answers))

    def _keep_valid(self, pending: list[Pending], problems: list[str | None]) -> None:
        for (row, _, additions), problem in zip(pending, problems, strict=True):
            if problem:
                self.quarantine(row, problem)
                continue
            for table, key, order, values in additions:
                self.tables[table].add(key, order, values)

    # -- out --------------------------------------------------------------------

    @property
    def quarantined(self) -> int:
        return len(self._quarantined)

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.tables.values())

    def kept(self, table: str) -> int:
        return len(self.tables[table].held)

    def buffered(self) -> int:
        """Rows waiting to be drained."""
        return (len(self.patient_rows) + len(self.quarantine_rows)
                + sum(len(c.buffer) for c in self.tables.values()))

    def drain(self) -> Drained:
        """Hand over the rows produced so far (the streaming map's writer calls this)."""
        out = Drained(patients=self.patient_rows, quarantine=self.quarantine_rows)
        self.patient_rows, self.quarantine_rows = [], []
        for table, rows in zip(EVENT_TABLES, (out.exposures, out.procedures, out.labs,
                                              out.conditions), strict=True):
            retract, drained = self.tables[table].drain()
            rows.extend(drained)
            if retract:
                out.retract[table] = retract
        return out
