"""One input made ready for the raw store, without touching the database.

``prepare`` checks a parsed resource (a type the study reads, a usable id, references
that stay on the source server) and makes its row: canonical text, content hash and,
for an Observation no lab code maps, the trimmed body. What is not a resource to store
comes back as a ``Rejected`` (quarantine with a reason), a ``Nested`` Bundle to open,
or the name of a type the study does not read. The store (``store.py``) then decides
against what is stored already.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from connector.codes.labfilter import ObservationTrim
from connector.extract.checks import (
    ABSOLUTE_REFERENCE,
    foreign_reference,
    is_resource_type,
    unknown_type_reason,
)
from connector.extract.contact import contact_of, today_text

#: The resource types the study reads; other FHIR types are counted and skipped, and a
#: ``resourceType`` that is no FHIR type is quarantined (connector/extract/checks.py).
WANTED_TYPES = frozenset(
    {"Patient", "MedicationAdministration", "Medication", "Procedure", "Observation",
     # oral drugs are mostly recorded as these (issue 15; connector/mapping/orders.py)
     "MedicationRequest", "MedicationDispense", "MedicationStatement",
     # baseline covariates for Table 1 (issue 16; connector/mapping/conditions.py)
     "Condition"}
)


def content_hash(raw: bytes) -> str:
    """The SHA-256 of a resource's canonical text (``raw_resource.content_hash``)."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(slots=True)
class Pending:
    """A resource ready to store: its row, and what the store needs to compare it."""

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
Prepared = Pending | Rejected | Nested | str


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
    return Pending(
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
