"""The raw store: FHIR resources with provenance, newest version wins.

Writes go in batches inside the caller's transaction. A resource that arrives
again with the same content changes nothing; one with a newer ``versionId`` (or a
later ``meta.lastUpdated``) replaces the stored copy; an older one is ignored.
Input that is not a usable resource goes to quarantine with its reason.

What one input becomes is decided without the database (``prepare.py``), which copy
is the later by ``versions.py``, and the batch's two hot statements are written for
the driver (``rawsql.py``); this module holds the store that puts them together.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from connector.codes.labfilter import ObservationTrim, default_trim
from connector.db.clock import utcnow as _utcnow
from connector.db.models import Quarantine, RawResource
from connector.extract.contact import merge_day, write_contacts
from connector.extract.prepare import (
    WANTED_TYPES,
    Nested,
    Pending,
    Prepared,
    Rejected,
    content_hash,
    prepare,
    prepare_raw,
)
from connector.extract.rawsql import insert_plan, lookup_sql
from connector.extract.versions import is_newer, version_order

BATCH_SIZE = 2000
#: The quarantine reason of the earlier of two copies of one id that differ in content
#: but not in versionId or lastUpdated (the later in file order is kept).
CONFLICT_REASON = ("conflicting duplicate: the same id came again in this load with other "
                   "content and the same version; the later copy in file order was kept")
_ID_CHUNK = 500  # ids per existence query (well under every driver's parameter limit)


@dataclass
class StoreCounts:
    """What one load did, per resource type."""

    new: Counter = field(default_factory=Counter)
    updated: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    older: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    deleted: Counter = field(default_factory=Counter)
    #: kept as a count of their code only (the DuckDB load path: Observations no lab
    #: code maps; connector/extract/duck.py)
    counted: Counter = field(default_factory=Counter)
    #: lines of patients outside the screened cohort, left out (the DuckDB path with
    #: ``--scope cohort``; connector/extract/duckscreen.py)
    outside: Counter = field(default_factory=Counter)
    #: ids met twice in one load with different content (connector/extract/store.py
    #: ``RawStore.accept`` says which copy is kept)
    conflicts: Counter = field(default_factory=Counter)
    quarantined: int = 0

    NAMES = ("new", "updated", "unchanged", "older", "skipped", "deleted", "counted", "outside",
             "conflicts")

    def as_dict(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name in self.NAMES:
            for rtype, n in getattr(self, name).items():
                out.setdefault(rtype, {})[name] = n
        return out

    @property
    def stored(self) -> int:
        return sum(self.new.values()) + sum(self.updated.values())


class _Stored(NamedTuple):
    """A stored row as the batch writer compares it with a new copy of the resource."""

    version_id: str | None
    last_updated: str | None
    content_hash: str
    deleted: bool
    trimmed: str | None  # the trim digest when stored as its code only
    this_load: bool  # written earlier in this same load


#: ``RawStore(trim=DEFAULT)``: the filter of the current mappings/ (connector.codes.labfilter).
DEFAULT: Any = object()


class RawStore:
    """Batching writer for ``raw_resource`` and ``quarantine`` on one connection."""

    def __init__(self, conn: Connection, *, batch_size: int = BATCH_SIZE,
                 trim: ObservationTrim | None = DEFAULT,
                 loaded_at: dt.datetime | None = None) -> None:
        """``loaded_at``: the time of the load this store is part of, shared by the stores of
        one load (one per file): rows it wrote earlier in the load are then known by their
        ``fetched_at``, so an id met again with other content counts as a conflict."""
        self.conn = conn
        self.batch_size = batch_size
        self.trim: ObservationTrim | None = default_trim() if trim is DEFAULT else trim
        self.counts = StoreCounts()
        self._pending: dict[tuple[str, str, str], Pending] = {}
        self._fetched_at = loaded_at or _utcnow()
        self._mark: Any = None
        #: the base URL of the server the resources come from (None for a folder): an
        #: absolute reference is local only under it (connector/extract/checks.py)
        self.base: str | None = None
        #: Bundles being opened (connector/extract/bundle.py bounds the nesting)
        self.bundle_depth = 0

    # -- input ------------------------------------------------------------

    def add_raw(self, raw: bytes, *, site: str, source: str) -> None:
        """Parse one JSON text (an NDJSON line) and add it, or quarantine it."""
        self.accept(prepare_raw(raw, site=site, source=source, trim=self.trim, base=self.base))

    def add(
        self,
        resource: Any,
        *,
        site: str,
        source: str,
        raw: bytes | None = None,
        deleted: bool = False,
        base: str | None = None,
    ) -> None:
        """Add one parsed resource; ``raw`` is its original text when known, ``base`` the
        base URL it was read from when not the store's (a Bundle entry's ``fullUrl``)."""
        self.accept(prepare(resource, site=site, source=source, raw=raw, deleted=deleted,
                            trim=self.trim, base=base or self.base))

    def accept(self, item: Prepared) -> None:
        """Take one prepared input: queue a resource, count a skipped type, open a Bundle,
        or quarantine."""
        if isinstance(item, str):
            self.counts.skipped[item] += 1
            return
        if isinstance(item, Nested):
            from connector.extract.bundle import load_bundle

            load_bundle(self, item.bundle, site=item.site, source=item.source, raw=item.raw)
            return
        if isinstance(item, Rejected):
            self.quarantine(item.raw, site=item.site, source=item.source, reason=item.reason,
                            resource_type=item.rtype, resource_id=item.rid)
            return
        rtype = item.rtype
        key = (item.site, rtype, item.rid)
        earlier = self._pending.get(key)
        if earlier is not None:
            # The same id twice in one batch: an identical copy is counted unchanged; of
            # two different ones the later is kept (see ``_conflict``).
            if earlier.digest == item.digest:
                self.counts.unchanged[rtype] += 1
                return
            self.counts.older[rtype] += 1
            if not self._conflict(item, (earlier.version_id, earlier.last_updated),
                                  earlier.body):
                return
        self._pending[key] = item
        if len(self._pending) >= self.batch_size:
            self.flush()

    def _conflict(self, item: Pending, stored: tuple[str | None, str | None],
                  stored_body: str | Callable[[], str]) -> bool:
        """Count an id met twice in one load with different content; True when ``item``
        (the later in file order) is the copy kept.

        The copy with the higher numeric ``versionId`` wins, else the one with the later
        ``meta.lastUpdated``, else the later in file order. In that last case nothing
        says which copy is right, so the losing one is also quarantined whole with the
        reason: its content stays visible instead of vanishing."""
        self.counts.conflicts[item.rtype] += 1
        order = version_order((item.version_id, item.last_updated), stored)
        if order == 0:
            body = stored_body() if callable(stored_body) else stored_body
            self.quarantine(body, site=item.site, source=item.source,
                            resource_type=item.rtype, resource_id=item.rid,
                            reason=CONFLICT_REASON)
        return order >= 0

    def mark_deleted(self, *, site: str, resource_type: str, resource_id: str,
                     source: str) -> None:
        """Record a deletion reported by the server (the row stays, flagged)."""
        result = self.conn.execute(
            update(RawResource)
            .where(RawResource.site == site, RawResource.resource_type == resource_type,
                   RawResource.resource_id == resource_id, RawResource.deleted.is_(False))
            .values(deleted=True, fetched_at=self._fetched_at, source=source)
        )
        if result.rowcount:
            self.counts.deleted[resource_type] += result.rowcount

    def quarantine(self, raw: bytes | str, *, site: str, source: str, reason: str,
                   resource_type: str | None = None, resource_id: str | None = None,
                   stage: str = "extract") -> None:
        """Keep unusable input whole, with its reason; repeated loads add nothing."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        digest = content_hash(text.encode())
        exists = self.conn.execute(
            select(Quarantine.id).where(
                Quarantine.site == site, Quarantine.stage == stage,
                Quarantine.content_hash == digest, Quarantine.reason == reason)
        ).first()
        self.counts.quarantined += 1
        if exists:
            return
        self.conn.execute(insert(Quarantine).values(
            site=site, stage=stage, resource_type=resource_type, resource_id=resource_id,
            reason=reason[:500], source=source, content_hash=digest, raw=text,
            created_at=self._fetched_at))

    # -- output -----------------------------------------------------------

    def _existing(self, items: list[Pending]) -> dict[tuple[str, str, str], _Stored]:
        """The stored (version, lastUpdated, hash, deleted, trimmed) of the batch's ids.

        Asked per (site, type) with ``resource_id IN (...)``: a row-value
        ``(site, type, id) IN (...)`` is not matched to the unique index by SQLite,
        which then scans the whole table for every batch (quadratic in the load).
        """
        by_kind: dict[tuple[str, str], list[str]] = {}
        for item in items:
            by_kind.setdefault((item.site, item.rtype), []).append(item.rid)
        existing: dict[tuple[str, str, str], _Stored] = {}
        for (site, rtype), ids in by_kind.items():
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start:start + _ID_CHUNK]
                # driver-level SQL: building the statement in SQLAlchemy costs more than
                # the lookup itself
                rows = self.conn.exec_driver_sql(lookup_sql(self.conn.dialect, len(chunk)),
                                                 (self._load_mark(), site, rtype, *chunk))
                for rid, version, updated, digest, deleted, trimmed, this_load in rows:
                    existing[(site, rtype, rid)] = _Stored(version, updated, digest,
                                                           bool(deleted), trimmed,
                                                           bool(this_load))
        return existing

    def _load_mark(self) -> Any:
        """This load's ``fetched_at`` as the driver stores it (compared in ``_existing``)."""
        if self._mark is None:
            self._mark = insert_plan(self.conn.dialect, self._fetched_at)[1]
        return self._mark

    def _stored_body(self, item: Pending) -> str:
        return self.conn.execute(select(RawResource.body).where(
            RawResource.site == item.site, RawResource.resource_type == item.rtype,
            RawResource.resource_id == item.rid)).scalar_one()

    def _values(self, item: Pending) -> dict[str, Any]:
        return {
            "site": item.site, "resource_type": item.rtype, "resource_id": item.rid,
            "version_id": item.version_id, "last_updated": item.last_updated,
            "fetched_at": self._fetched_at, "content_hash": item.digest,
            "source": item.source, "deleted": item.deleted, "trimmed": item.trimmed,
            "body": item.body,
        }

    def _insert(self, items: list[Pending]) -> None:
        """Insert new rows with one driver-level ``executemany``.

        SQLAlchemy's own executemany processes every parameter of every row in
        Python (much of the load's time); here the constant values (load time,
        flags) are converted once with the column types' own processors and the
        rows go to the driver as plain tuples.
        """
        sql, fetched, flags = insert_plan(self.conn.dialect, self._fetched_at)
        rows = [(i.site, i.rtype, i.rid, i.version_id, i.last_updated, fetched, i.digest,
                 i.source, flags[i.deleted], i.trimmed, i.body) for i in items]
        self.conn.exec_driver_sql(sql, rows)

    def _write_contacts(self, items: list[Pending]) -> None:
        """The last day of the batch's trimmed Observations, per patient (a later day only)."""
        book: dict[tuple[str, str], str] = {}
        for item in items:
            if item.contact is not None and not item.deleted:
                merge_day(book, item.site, *item.contact)
        write_contacts(self.conn, book)

    def flush(self) -> None:
        """Write the pending batch: insert new ids, update newer versions."""
        if not self._pending:
            return
        items = list(self._pending.values())
        self._pending.clear()
        self._write_contacts(items)
        existing = self._existing(items)
        inserts: list[Pending] = []
        updates: list[dict[str, Any]] = []
        retrimmed: list[Pending] = []
        for item in items:
            old = existing.get((item.site, item.rtype, item.rid))
            if old is None:
                inserts.append(item)
                self.counts.new[item.rtype] += 1
            elif old.this_load and old.content_hash != item.digest:
                if self._conflict(item, (old.version_id, old.last_updated),
                                  lambda item=item: self._stored_body(item)):
                    updates.append(self._values(item))
                    self.counts.updated[item.rtype] += 1
                else:
                    self.counts.older[item.rtype] += 1
            elif old.content_hash == item.digest and old.deleted == item.deleted:
                if old.trimmed is not None and item.trimmed is None:  # trimmed, wanted now
                    updates.append(self._values(item))
                    self.counts.updated[item.rtype] += 1
                    continue
                self.counts.unchanged[item.rtype] += 1
                if old.trimmed is not None and old.trimmed != item.trimmed:
                    retrimmed.append(item)  # still unused under the new code sets
            elif is_newer((item.version_id, item.last_updated),
                          (old.version_id, old.last_updated)):
                updates.append(self._values(item))
                self.counts.updated[item.rtype] += 1
            else:
                self.counts.older[item.rtype] += 1
        if inserts:
            self._insert(inserts)
        for values in updates:
            self.conn.execute(
                update(RawResource)
                .where(RawResource.site == values["site"],
                       RawResource.resource_type == values["resource_type"],
                       RawResource.resource_id == values["resource_id"])
                .values(**values)
            )
        for item in retrimmed:
            self.conn.execute(
                update(RawResource)
                .where(RawResource.site == item.site, RawResource.resource_type == item.rtype,
                       RawResource.resource_id == item.rid)
                .values(trimmed=item.trimmed)
            )


__all__ = ["BATCH_SIZE", "CONFLICT_REASON", "DEFAULT", "WANTED_TYPES", "Nested", "Pending",
           "Prepared", "RawStore", "Rejected", "StoreCounts", "content_hash", "is_newer",
           "prepare", "prepare_raw", "version_order"]
