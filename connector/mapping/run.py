"""The map stage: raw_resource → normalized tables, one transaction per site.

A site's normalized rows and its map-stage quarantine are rebuilt as a whole
(delete, then insert in batches, in one transaction), so a rerun gives the
same tables and an interrupted run leaves the previous ones in place. Rows are
written as they are produced, so memory does not grow with the site's size.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from connector.codes.codesets import CodeSets, load_codesets
from connector.codes.labfilter import ObservationTrim, lab_filter_digest
from connector.db.clock import utcnow
from connector.db.fastinsert import insert_rows
from connector.db.models import (
    ConditionRecord,
    LabResult,
    MedicationExposure,
    Patient,
    ProcedureEvent,
    Quarantine,
    RawCodeCount,
    RawResource,
    Site,
)
from connector.keys import load_secret
from connector.mapping.handlers import EVENT_TYPES, FIRST_PASS
from connector.mapping.resources import RawRow, SiteMapper, SiteResult
from connector.mapping.unmapped import UnmappedCodes, store_unmapped
from connector.mapping.writer import DRAIN_ROWS, BatchValidator, Drained, validate_stored
from connector.progress import Progress

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
READ_BATCH = 2000
#: Below this many raw rows, validation stays in this process.
PARALLEL_MIN_ROWS = 20000

TABLES = ("patient", "medication_exposure", "procedure_event", "lab_result", "condition_record")


@dataclass
class MapSummary:
    """What a map run wrote, for the CLI and for scripts."""

    sites: list[str] = field(default_factory=list)
    rows: Counter = field(default_factory=Counter)  # table → rows written
    quarantined: int = 0
    unmapped: int = 0  # resources of study types whose code matched nothing
    excluded: int = 0  # resources whose status says the event did not happen
    duplicates: int = 0  # events collapsed onto an earlier one with the same key
    ignored: int = 0  # known codes that are not study events (e.g. CAR-T transport)
    reasons: Counter = field(default_factory=Counter)  # quarantine reason → count
    stale_trimmed: int = 0  # stored as their code only, but the lab code sets now want them

    def add(self, result: SiteResult) -> None:
        self.sites.append(result.site)
        for name in TABLES:
            self.rows[name] += result.counts[name]
        self.quarantined += result.counts["quarantine"]
        self.unmapped += result.unmapped_resources
        self.excluded += sum(result.excluded.values())
        self.duplicates += result.duplicates
        self.ignored += result.ignored
        self.reasons.update(result.reasons)
        self.stale_trimmed += result.stale_trimmed

    def __str__(self) -> str:
        tables = ", ".join(f"{name} {self.rows[name]}" for name in TABLES)
        sites = ", ".join(self.sites) or "no sites"
        text = (f"{tables}; {self.quarantined} quarantined, {self.unmapped} unmapped, "
                f"{self.excluded} excluded by status, {self.duplicates} duplicates "
                f"collapsed ({sites})")
        if self.stale_trimmed:
            text += (f"; {self.stale_trimmed} Observations stored as their code only now match "
                     "a lab code: extract again to fetch them whole")
        return text


def run_map(engine: Engine, site: str | None = None,
            progress: Progress | None = None) -> MapSummary:
    """Rebuild the normalized tables of ``site`` (or of every site in the raw store)."""
    codesets = load_codesets()
    secret = load_secret()
    progress = progress or Progress.silent()
    sites = [site] if site else raw_sites(engine)
    summary = MapSummary()
    total = _count_rows(engine, sites)
    with validation_pool(total) as validate_many, \
            progress.task("map", total=total) as advance:
        for name in sites:
            result = map_site(engine, name, codesets=codesets, secret=secret, advance=advance,
                              validate_many=validate_many)
            summary.add(result)
            counts = result.counts
            log.info("map %s: %d patients, %d exposures, %d procedures, %d labs, "
                     "%d quarantined", name, counts["patient"], counts["medication_exposure"],
                     counts["procedure_event"], counts["lab_result"], counts["quarantine"])
    return summary


def map_workers() -> int:
    """Validation processes: ``COHORT_MAP_WORKERS``, else the CPUs (at most 8)."""
    configured = os.environ.get("COHORT_MAP_WORKERS", "").strip()
    if configured:
        return max(1, int(configured))
    return max(1, min(os.cpu_count() or 1, 8))


@contextmanager
def validation_pool(total_rows: int) -> Iterator[BatchValidator | None]:
    """Worker processes for R4B validation when the load is worth their start-up.

    R4B validation is most of the map's CPU time; for a large site spreading it
    over processes shortens the run, while for a small one starting them would
    cost more than it saves. ``None`` means validate in this process.
    """
    workers = map_workers()
    if workers <= 1 or total_rows < PARALLEL_MIN_ROWS:
        yield None
        return
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        def validate_many(items: list[tuple[str, str, int]]) -> Iterator[str | None]:
            # Submitted now, answered lazily: the caller maps on while workers validate.
            chunk = max(50, len(items) // (workers * 2))
            return executor.map(validate_stored, items, chunksize=chunk)

        yield validate_many
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def map_site(engine: Engine, site: str, *, codesets: CodeSets, secret: bytes | None,
             advance: Callable[[float], None] | None = None,
             today: dt.date | None = None,
             validate_many: BatchValidator | None = None) -> SiteResult:
    """Map one site inside one transaction: delete its old rows, then stream in the new.

    Rows are inserted in batches as they are produced; a row that later loses to
    a duplicate with an earlier sort order is deleted again (rare), so only the
    natural keys of the site's rows stay in memory.
    """
    advance = advance or (lambda _n=1: None)
    with engine.begin() as conn:
        clear_site_rows(conn, site)
        mapper = SiteMapper(codesets, site, secret=secret, today=today or dt.date.today(),
                            validate_many=validate_many)
        now = utcnow()
        read = 0
        for types in (FIRST_PASS, EVENT_TYPES):
            for row in iter_raw(conn, site, types):
                mapper.add(row)
                read += 1
                if read % 256 == 0 and mapper.buffered() >= DRAIN_ROWS:
                    write_drained(conn, site, mapper.drain(), now)
                if read % 500 == 0:
                    advance(500)
        advance(read % 500)
        result = mapper.finish()
        write_drained(conn, site, mapper.drain(), now)
        mapper.last_records.note_trimmed(conn, site)
        mapper.last_records.write(conn, site)
        trimmed = count_trimmed(conn, site)
        touch_site(conn, site, now, create_site=read + trimmed > 0)
        result.unmapped_resources += trimmed  # each one is an Observation no lab code maps
        note_trimmed_codes(conn, site, codesets, result.unmapped)
        store_unmapped(conn, site, result.unmapped, resources=result.unmapped_resources,
                       stored_as_code=trimmed, now=now)
    result.stale_trimmed = stale_trimmed(engine, site, codesets)
    if result.stale_trimmed:
        log.warning("map %s: %d Observations were stored as their code only under other lab "
                    "code sets and are study labs under the current ones; extract again "
                    "(a folder or Bulk source restores them on its next load, a REST source "
                    "reads Observations whole again)", site, result.stale_trimmed)
    return result


def raw_sites(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted({r[0] for r in conn.execute(select(RawResource.site).distinct())}
                      | {r[0] for r in conn.execute(select(RawCodeCount.site).distinct())})


def _count_rows(engine: Engine, sites: list[str]) -> int:
    if not sites:
        return 0
    with engine.connect() as conn:
        return int(conn.execute(
            select(func.count()).select_from(RawResource)
            .where(RawResource.site.in_(sites), RawResource.deleted.is_(False),
                   RawResource.trimmed.is_(None))).scalar_one())


def count_trimmed(conn: Connection, site: str) -> int:
    """The site's current Observations stored as their code only (connector.codes.labfilter),
    or only counted by their code (the DuckDB load path, ``raw_code_count``)."""
    rows = conn.execute(
        select(func.count()).select_from(RawResource)
        .where(RawResource.site == site, RawResource.resource_type == "Observation",
               RawResource.trimmed.is_not(None), RawResource.deleted.is_(False))).scalar_one()
    counted = conn.execute(select(func.coalesce(func.sum(RawCodeCount.n), 0))
                           .where(RawCodeCount.site == site)).scalar_one()
    return int(rows) + int(counted)


def stale_trimmed(engine: Engine, site: str, codesets: CodeSets) -> int:
    """Trimmed rows, decided under other lab code sets, that the current ones would keep.

    Only rows trimmed under another digest are read, so after an unchanged mappings/
    this is one indexed count."""
    digest = lab_filter_digest(codesets)
    trim = ObservationTrim(codesets, digest)
    with engine.connect() as conn:
        return sum(n for body, n in trimmed_codes(conn, site, decided_otherwise_than=digest)
                   if trim.is_study_lab(orjson.loads(body).get("code") or {}))


def note_trimmed_codes(conn: Connection, site: str, codesets: CodeSets,
                       unmapped: UnmappedCodes) -> None:
    """Count the codes of the site's Observations stored as their code only, each
    distinct code looked at once and weighted by how many Observations carry it."""
    trim = ObservationTrim(codesets, lab_filter_digest(codesets))
    for body, n in trimmed_codes(conn, site):
        unmapped.note_trimmed(body, n, trim)


def trimmed_codes(conn: Connection, site: str, *,
                  decided_otherwise_than: str | None = None) -> Iterator[tuple[str, int]]:
    """Each distinct trimmed body (an Observation's code) of the site, with its count."""
    where = [RawResource.site == site, RawResource.resource_type == "Observation",
             RawResource.trimmed.is_not(None), RawResource.deleted.is_(False)]
    if decided_otherwise_than is not None:
        where.append(RawResource.trimmed != decided_otherwise_than)
    stmt = (select(RawResource.body, func.count()).where(*where)
            .group_by(RawResource.body).order_by(RawResource.body))
    for body, n in conn.execute(stmt):
        yield body, int(n)
    counted = [RawCodeCount.site == site]
    if decided_otherwise_than is not None:
        counted.append(RawCodeCount.trimmed != decided_otherwise_than)
    stmt = (select(RawCodeCount.body, func.sum(RawCodeCount.n)).where(*counted)
            .group_by(RawCodeCount.body).order_by(RawCodeCount.body))
    for body, n in conn.execute(stmt):
        yield body, int(n)


def iter_raw(conn: Connection, site: str, types: tuple[str, ...]) -> Iterator[RawRow]:
    """The site's current (not deleted) whole resources of ``types``, streamed (rows stored
    as their code only are read by ``trimmed_codes``)."""
    stmt = (
        select(RawResource.resource_type, RawResource.resource_id, RawResource.version_id,
               RawResource.content_hash, RawResource.source, RawResource.body)
        .where(RawResource.site == site, RawResource.resource_type.in_(types),
               RawResource.trimmed.is_(None), RawResource.deleted.is_(False))
        .execution_options(yield_per=READ_BATCH)
    )
    for r in conn.execute(stmt):
        yield RawRow(resource_type=r[0], resource_id=r[1], version_id=r[2],
                     content_hash=r[3], source=r[4] or "", body=r[5])


#: The natural key of each event table, in the order ``SiteMapper`` builds its keys.
NATURAL_KEYS: dict[str, tuple[type, tuple[str, ...]]] = {
    "medication_exposure": (MedicationExposure, ("patient_source_id", "ingredient",
                                                 "start_date")),
    "procedure_event": (ProcedureEvent, ("patient_source_id", "category", "performed_date",
                                         "product")),
    "lab_result": (LabResult, ("patient_source_id", "analyte", "effective_date")),
    "condition_record": (ConditionRecord, ("patient_source_id", "finding", "onset_date",
                                           "status")),
}


def clear_site_rows(conn: Connection, site: str) -> None:
    """Delete the site's normalized rows and map quarantine (inside the site's transaction)."""
    conn.execute(delete(Quarantine).where(Quarantine.site == site, Quarantine.stage == "map"))
    for model in (ConditionRecord, LabResult, ProcedureEvent, MedicationExposure, Patient):
        conn.execute(delete(model).where(model.site == site))


def touch_site(conn: Connection, site: str, now: dt.datetime, *,
               create_site: bool = True) -> None:
    """Stamp the site row; a site with nothing in the raw store gets no new site row."""
    # Update rather than replace: other stages keep their own columns on the site row.
    updated = conn.execute(update(Site).where(Site.name == site).values(loaded_at=now))
    if not updated.rowcount and create_site:
        conn.execute(insert(Site).values(name=site, loaded_at=now))


def write_drained(conn: Connection, site: str, out: Drained, now: dt.datetime) -> None:
    """Delete rows that lost to a later duplicate, then insert the new rows."""
    for table, keys in out.retract.items():
        model, columns = NATURAL_KEYS[table]
        for key in keys:
            conn.execute(delete(model).where(
                model.site == site,
                *(getattr(model, col) == value for col, value in zip(columns, key, strict=True))))
    for model, rows in ((Patient, out.patients), (MedicationExposure, out.exposures),
                        (ProcedureEvent, out.procedures), (LabResult, out.labs),
                        (ConditionRecord, out.conditions)):
        insert_batches(conn, model, rows)
    insert_batches(conn, Quarantine, [dict(q, created_at=now) for q in out.quarantine])


def insert_batches(conn: Connection, model: type, rows: list[dict]) -> None:
    insert_rows(conn, model, rows, batch_size=BATCH_SIZE)
