"""The raw store: FHIR resources with provenance, newest version wins.

Writes go in batches inside the caller's transaction. A resource that arrives
again with the same content changes nothing; one with a newer ``versionId`` (or a
later ``meta.lastUpdated``) replaces the stored copy; an older one is ignored.
Input that is not a usable resource goes to quarantine with its reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Dialect

from connector.codes.labfilter import ObservationTrim, default_trim
from connector.db.clock import utcnow as _utcnow
from connector.db.fastinsert import PLACEHOLDERS, bind_value, insert_sql
from connector.db.models import Quarantine, RawResource
from connector.extract.checks import (
    ABSOLUTE_REFERENCE,
    foreign_reference,
    is_resource_type,
    unknown_type_reason,
)
from connector.extract.contact import contact_of, merge_day, today_text, write_contacts

#: The resource types the study reads; other FHIR types are counted and skipped, and a
#: ``resourceType`` that is no FHIR type is quarantined (connector/extract/checks.py).
WANTED_TYPES = frozenset(
    {"Patient", "MedicationAdministration", "Medication", "Procedure", "Observation",
     # oral drugs are mostly recorded as these (issue 15; connector/mapping/orders.py)
     "MedicationRequest", "MedicationDispense", "MedicationStatement",
     # baseline covariates for Table 1 (issue 16; connector/mapping/conditions.py)
     "Condition"}
)

BATCH_SIZE = 2000
#: The quarantine reason of the earlier of two copies of one id that differ in content
#: but not in versionId or lastUpdated (the later in file order is kept).
CONFLICT_REASON = ("conflicting duplicate: the same id came again in this load with other "
                   "content and the same version; the later copy in file order was kept")
_ID_CHUNK = 500  # ids per existence query (well under every driver's parameter limit)


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _version_key(version_id: str | None, last_updated: str | None) -> tuple[int, Any]:
    """Orderable key: numeric versionId first, else lastUpdated, else unknown."""
    if version_id is not None and version_id.isdigit():
        return (2, int(version_id))
    if last_updated:
        try:
            return (1, dt.datetime.fromisoformat(last_updated.replace("Z", "+00:00")))
        except ValueError:
            return (1, last_updated)
    return (0, 0)


def version_order(new: tuple[str | None, str | None],
                  old: tuple[str | None, str | None]) -> int:
    """1 when (versionId, lastUpdated) ``new`` is the later copy, -1 when ``old`` is, 0 when
    they cannot be told apart: a numeric versionId decides first, then lastUpdated."""
    kn, ko = _version_key(*new), _version_key(*old)
    if kn[0] == ko[0] == 2 and kn != ko:
        return 1 if _cmp(kn, ko) else -1
    if new[1] and old[1]:
        ln, lo = _version_key(None, new[1]), _version_key(None, old[1])
        if ln != lo:
            return 1 if _cmp(ln, lo) else -1
    return 0


def is_newer(new: tuple[str | None, str | None], old: tuple[str | None, str | None]) -> bool:
    """Whether (versionId, lastUpdated) ``new`` supersedes ``old``.

    When the two cannot be ordered (no version information, or the same), the later
    arrival wins, which is what a re-sent file means.
    """
    return version_order(new, old) >= 0


def _cmp(a: tuple[int, Any], b: tuple[int, Any]) -> bool:
    try:
        return a > b
    except TypeError:
        return str(a) > str(b)


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


@dataclass(slots=True)
class _Pending:
    site: str
    rtype: str
    rid: str
    version_id: str | None
    last_updated: str | None
    digest: str
    body: str
    source: str
    deleted: bool = False
    trimmed: str | None = None  # the filter's digest when only the code is kept
    #: (subject reference, latest day) of a trimmed Observation (connector/extract/contact.py)
    contact: tuple[str, str] | None = None


@dataclass(slots=True)
class Rejected:
    """Input that goes to quarantine, with its reason."""

    raw: bytes | str
    reason: str
    site: str
    source: str
    rtype: str | None = None
    rid: str | None = None


@dataclass(slots=True)
class Nested:
    """A Bundle met where a resource was expected (e.g. one line of NDJSON): its entries
    are loaded (connector/extract/bundle.py)."""

    bundle: dict
    raw: bytes | None
    site: str
    source: str


#: What ``prepare`` makes of one input: a resource to store, a rejection, a Bundle to
#: open, or the name of a resource type the study does not read (counted as skipped).
Prepared = _Pending | Rejected | Nested | str


def prepare_raw(raw: bytes, *, site: str, source: str,
                trim: ObservationTrim | None, base: str | None = None) -> Prepared:
    """``prepare`` for one JSON text (an NDJSON line)."""
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected(raw, f"invalid JSON: {exc}", site, source)
    return prepare(resource, site=site, source=source, raw=raw, trim=trim, base=base)


def prepare(resource: Any, *, site: str, source: str, raw: bytes | None = None,
            deleted: bool = False, trim: ObservationTrim | None = None,
            base: str | None = None) -> Prepared:
    """Check one parsed resource and make its row: canonical text, hash, trimmed body.

    Pure (no database): everything about one input that does not depend on what is
    stored already. (Preparing a file's lines in a worker process while this one
    writes was measured and gave nothing: the load is bound by SQLite's inserts.)"""
    if not isinstance(resource, dict):
        return Rejected(raw or orjson.dumps(resource), "not a JSON object", site, source)
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if not isinstance(rtype, str) or not rtype:
        return Rejected(raw or orjson.dumps(resource), "missing resourceType", site, source)
    if rtype not in WANTED_TYPES:
        if rtype == "Bundle":
            return Nested(resource, raw, site, source)
        if is_resource_type(rtype):
            return rtype
        return Rejected(raw or orjson.dumps(resource), unknown_type_reason(rtype), site,
                        source)
    if not isinstance(rid, str) or not rid or len(rid) > 64:
        return Rejected(raw or orjson.dumps(resource), "missing or invalid id", site, source,
                        rtype)
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        meta = {}
    version_id = meta.get("versionId")
    last_updated = meta.get("lastUpdated")
    try:
        body = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. nesting deeper than orjson allows
        return Rejected(raw or repr(resource)[:100_000], f"cannot be stored: {exc}", site,
                        source, rtype)
    if ABSOLUTE_REFERENCE.search(body):  # rare: most exports use relative references
        problem = foreign_reference(resource, base)
        if problem:
            return Rejected(raw or body, problem, site, source, rtype, rid)
    digest = content_hash(body)
    kept = trim.trimmed(resource) if trim is not None else None
    if kept is not None:
        body = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    return _Pending(
        site=site,
        rtype=rtype,
        rid=rid,
        version_id=str(version_id) if version_id is not None else None,
        last_updated=str(last_updated) if last_updated is not None else None,
        digest=digest,
        body=body.decode(),
        source=source,
        deleted=deleted,
        trimmed=trim.digest if kept is not None and trim is not None else None,
        contact=contact_of(resource, today_text()) if kept is not None else None,
    )


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
        self._pending: dict[tuple[str, str, str], _Pending] = {}
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

    def _conflict(self, item: _Pending, stored: tuple[str | None, str | None],
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

    def _existing(self, items: list[_Pending]) -> dict[tuple[str, str, str], _Stored]:
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
                rows = self.conn.exec_driver_sql(_lookup_sql(self.conn.dialect, len(chunk)),
                                                 (self._load_mark(), site, rtype, *chunk))
                for rid, version, updated, digest, deleted, trimmed, this_load in rows:
                    existing[(site, rtype, rid)] = _Stored(version, updated, digest,
                                                           bool(deleted), trimmed,
                                                           bool(this_load))
        return existing

    def _load_mark(self) -> Any:
        """This load's ``fetched_at`` as the driver stores it (compared in ``_existing``)."""
        if self._mark is None:
            self._mark = _insert_plan(self.conn.dialect, self._fetched_at)[1]
        return self._mark

    def _stored_body(self, item: _Pending) -> str:
        return self.conn.execute(select(RawResource.body).where(
            RawResource.site == item.site, RawResource.resource_type == item.rtype,
            RawResource.resource_id == item.rid)).scalar_one()

    def _values(self, item: _Pending) -> dict[str, Any]:
        return {
            "site": item.site, "resource_type": item.rtype, "resource_id": item.rid,
            "version_id": item.version_id, "last_updated": item.last_updated,
            "fetched_at": self._fetched_at, "content_hash": item.digest,
            "source": item.source, "deleted": item.deleted, "trimmed": item.trimmed,
            "body": item.body,
        }

    def _insert(self, items: list[_Pending]) -> None:
        """Insert new rows with one driver-level ``executemany``.

        SQLAlchemy's own executemany processes every parameter of every row in
        Python (much of the load's time); here the constant values (load time,
        flags) are converted once with the column types' own processors and the
        rows go to the driver as plain tuples.
        """
        sql, fetched, flags = _insert_plan(self.conn.dialect, self._fetched_at)
        rows = [(i.site, i.rtype, i.rid, i.version_id, i.last_updated, fetched, i.digest,
                 i.source, flags[i.deleted], i.trimmed, i.body) for i in items]
        self.conn.exec_driver_sql(sql, rows)

    def _write_contacts(self, items: list[_Pending]) -> None:
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
        inserts: list[_Pending] = []
        updates: list[dict[str, Any]] = []
        retrimmed: list[_Pending] = []
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


_INSERT_COLUMNS = ("site", "resource_type", "resource_id", "version_id", "last_updated",
                   "fetched_at", "content_hash", "source", "deleted", "trimmed", "body")


_LOOKUP_COLUMNS = ("resource_id", "version_id", "last_updated", "content_hash", "deleted",
                   "trimmed")


_LOOKUPS: dict[tuple[str, str, int], str] = {}


def _lookup_sql(dialect: Dialect, n_ids: int) -> str:
    """SELECT the stored state of ``n_ids`` ids of one site and type, in the driver's style.

    Remembered by dialect name, parameter style and count (not by the dialect object,
    which lives only as long as its engine)."""
    key = (dialect.name, dialect.paramstyle, n_ids)
    if key not in _LOOKUPS:
        _LOOKUPS[key] = _build_lookup_sql(dialect, n_ids)
    return _LOOKUPS[key]


def _build_lookup_sql(dialect: Dialect, n_ids: int) -> str:
    mark = PLACEHOLDERS.get(dialect.paramstyle)
    if mark is None:
        raise NotImplementedError(f"parameter style {dialect.paramstyle!r}")
    prep = dialect.identifier_preparer
    table = prep.format_table(RawResource.__table__)
    return (f"SELECT {', '.join(prep.quote(c) for c in _LOOKUP_COLUMNS)}, "  # noqa: S608
            f"CASE WHEN {prep.quote('fetched_at')} = {mark} THEN 1 ELSE 0 END "
            f"FROM {table} WHERE {prep.quote('site')} = {mark} "
            f"AND {prep.quote('resource_type')} = {mark} "
            f"AND {prep.quote('resource_id')} IN ({', '.join([mark] * n_ids)})")


def _insert_plan(dialect: Dialect, fetched_at: dt.datetime
                 ) -> tuple[str, Any, dict[bool, Any]]:
    """(INSERT statement in the driver's parameter style, load time, deleted flags) as the
    driver expects them, converted by the same column types SQLAlchemy would use."""
    table = RawResource.__table__
    sql = insert_sql(dialect, table, _INSERT_COLUMNS)
    if sql is None:
        raise NotImplementedError(f"parameter style {dialect.paramstyle!r}")
    return sql, bind_value(dialect, table, "fetched_at", fetched_at), {
        flag: bind_value(dialect, table, "deleted", flag) for flag in (False, True)}
