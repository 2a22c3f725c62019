"""Run records, watermarks and stored-id queries: the bookkeeping every source shares.

A folder, a REST and a Bulk extraction all record their run in ``extract_run``
(started, then finished with counts, or failed with a reason), keep how far they
got in ``sync_state`` (a watermark per site, mode and key) and ask which ids the
raw store already holds. Those tables mean the same whatever the source, so they
are read and written here, once, with named columns rather than positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from connector.db.clock import utcnow
from connector.db.models import ExtractRun, RawResource, SyncState
from connector.extract.refs import medication_id
from connector.extract.store import StoreCounts
from connector.fhir.config import MEDICATION_USERS

# ------------------------------------------------------------------ run records


def start_run(engine: Engine, site: str, source: str, mode: str) -> int:
    """A ``running`` record of one site's run; its id, for ``finish_run``."""
    with engine.begin() as conn:
        result = conn.execute(insert(ExtractRun).values(
            site=site, source=source, mode=mode, started_at=utcnow(), status="running",
            counts_json="{}", retries=0, errors=0, message=""))
        return int(result.inserted_primary_key[0])


def finish_run(engine: Engine, run_id: int, counts: StoreCounts, *, status: str,
               message: str = "", retries: int = 0, errors: int = 0,
               fetched: Mapping[str, int] | None = None, types: Iterable[str] = ()) -> None:
    """Close a run record: its status, counts per type, retries and errors.

    ``fetched`` (a server source): resources read per type, recorded beside the store's
    counts, with 0 for each of ``types`` that returned nothing; such a record's counts are
    written with sorted keys. Quarantined inputs count as errors."""
    by_type = counts.as_dict()
    option = 0
    if fetched is not None:
        for rtype, n in fetched.items():
            by_type.setdefault(rtype, {})["fetched"] = n
        for rtype in types:
            by_type.setdefault(rtype, {}).setdefault("fetched", 0)
        option = orjson.OPT_SORT_KEYS
    with engine.begin() as conn:
        conn.execute(update(ExtractRun).where(ExtractRun.id == run_id).values(
            finished_at=utcnow(), status=status,
            counts_json=orjson.dumps(by_type, option=option).decode(),
            retries=retries, errors=errors + counts.quarantined, message=message))


def merge_counts(into: StoreCounts, other: StoreCounts) -> None:
    """Add ``other``'s counts to ``into`` (one run's total of several loads)."""
    for name in StoreCounts.NAMES:
        getattr(into, name).update(getattr(other, name))
    into.quarantined += other.quarantined


# ------------------------------------------------------------------ watermarks


def load_watermarks(engine: Engine, site: str, mode: str) -> dict[str, str]:
    """Every watermark of ``site`` in ``mode``, by key (a resource type or a marker)."""
    with engine.connect() as conn:
        rows = conn.execute(select(SyncState.resource_type, SyncState.watermark).where(
            SyncState.site == site, SyncState.mode == mode))
        return {row.resource_type: row.watermark for row in rows}


def load_watermark(engine: Engine, site: str, mode: str, key: str) -> str | None:
    """One watermark, or None when that key has none yet."""
    with engine.connect() as conn:
        return conn.execute(select(SyncState.watermark).where(
            SyncState.site == site, SyncState.mode == mode,
            SyncState.resource_type == key)).scalar()


def save_watermarks(conn: Connection, site: str, mode: str, marks: Mapping[str, str]) -> None:
    """Move the watermarks ``marks`` (key -> instant) of ``site`` in ``mode``, inside the
    caller's transaction; keys not named keep theirs."""
    existing = set(conn.execute(select(SyncState.resource_type).where(
        SyncState.site == site, SyncState.mode == mode)).scalars())
    for key, mark in marks.items():
        if key in existing:
            conn.execute(update(SyncState).where(
                SyncState.site == site, SyncState.mode == mode,
                SyncState.resource_type == key).values(watermark=mark, updated_at=utcnow()))
        else:
            conn.execute(insert(SyncState).values(site=site, resource_type=key, mode=mode,
                                                  watermark=mark, updated_at=utcnow()))


# ------------------------------------------------------------------ stored ids


def stored_ids(engine: Engine, site: str, rtype: str) -> set[str]:
    """The ids of ``site``'s stored, not deleted resources of type ``rtype``."""
    with engine.connect() as conn:
        return set(conn.execute(select(RawResource.resource_id).where(
            RawResource.site == site, RawResource.resource_type == rtype,
            RawResource.deleted.is_(False))).scalars())


def referenced_medications(engine: Engine, site: str, base_url: str) -> set[str]:
    """Ids of same-server Medications referenced by the site's stored administrations,
    requests, dispenses and statements."""
    found: set[str] = set()
    with engine.connect() as conn:
        bodies = conn.execution_options(yield_per=1000).execute(
            select(RawResource.body).where(
                RawResource.site == site, RawResource.deleted.is_(False),
                RawResource.resource_type.in_(MEDICATION_USERS))).scalars()
        for body in bodies:
            ref = medication_id(orjson.loads(body), base_url)
            if ref:
                found.add(ref)
    return found
