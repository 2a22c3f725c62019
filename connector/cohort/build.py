"""The database side of derive: load the normalized tables, write the derived ones.

Only this module touches the database; the rules work on plain records. The
derived rows of the site(s) are deleted and rewritten in one transaction, so a
rerun gives the same tables and an interrupted run leaves the old ones.

Patients are streamed: each normalized table is read once in (site, patient)
order and the tables are walked together, so one patient's records are in memory
at a time, and each patient is derived and written as soon as their rows are in.
Large runs split the patients into ranges derived by worker processes (one per
core, two at most), each reading its own ranges; the parent writes their rows.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from itertools import groupby
from multiprocessing import get_context
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import Date, Select, delete, func, select, tuple_
from sqlalchemy.engine import Connection, Dialect, Engine

from connector.cohort.baseline import derive_baseline
from connector.cohort.derive import derive_normalized
from connector.cohort.imwg import RATIO, RESPONSE_ANALYTES, normalize_labs
from connector.cohort.model import (
    CohortPatientRecord,
    Exposure,
    Lab,
    LineRecord,
    PatientInfo,
    PatientTimeline,
    Procedure,
)
from connector.cohort.rules import Rules, load_rules
from connector.db.fastinsert import insert_rows
from connector.db.models import (
    CohortPatient,
    LabResult,
    MedicationExposure,
    Patient,
    PatientBaseline,
    ProcedureEvent,
    TherapyLine,
)
from connector.db.stream import driver_rows
from connector.progress import Progress

log = logging.getLogger(__name__)

FETCH_ROWS = 5_000  # rows a cursor fetches at a time
WRITE_ROWS = 2_000  # derived rows sent to the database at a time
MAX_WORKERS = 2  # derive worker processes at most
PARALLEL_MIN_PATIENTS = 2_000  # fewer patients are derived in-process (starting workers costs)
CHUNK_PATIENTS = 500  # patients per worker task

_Key = tuple[str, str]  # (site, patient source id)
_Bounds = tuple[_Key | None, _Key | None]  # keys >= first and < second; None = open
EXPOSURES, PROCEDURES, LABS, LATEST = "exposures", "procedures", "labs", "latest_labs"


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


def _where_site(column, site: str | None):  # noqa: ANN001, ANN202
    return column == site if site is not None else column.isnot(None)


def rule_analytes(rules: Rules) -> frozenset[str]:
    """The analytes a rule reads or a unit guard checks; any other lab only dates contact."""
    return frozenset({*RESPONSE_ANALYTES, RATIO, rules.progression.disease_status_analyte,
                      rules.imwg.ife_analyte, rules.imwg.marrow_analyte,
                      rules.imwg.urine_ife_analyte, rules.imwg.clonality_analyte, *rules.units})


# ------------------------------------------------------------------ reading, streamed


@dataclass
class _Stream:
    """One table's rows grouped by patient, in the database's (site, patient) order.

    Groups whose patient has no patient row are counted and skipped; ``take``
    hands over the group of one patient, identified by their rank in the patient
    query. Ranks (not string comparisons in Python) decide the order, so the walk
    follows whatever collation the database sorted with.
    """

    name: str
    table: str  # for the orphan count
    groups: Iterator[tuple[_Key, list]]
    ranks: dict[_Key, int]
    orphans: Counter[str]
    head: tuple[int, list] | None = None
    done: bool = False

    def _advance(self) -> None:
        while self.head is None and not self.done:
            group = next(self.groups, None)
            if group is None:
                self.done = True
                return
            key, rows = group
            rank = self.ranks.get(key)
            if rank is None:  # an aggregate row stands for its count (last column)
                self.orphans[self.table] += (sum(row[-1] for row in rows)
                                             if self.name == LATEST else len(rows))
            else:
                self.head = (rank, rows)

    def take(self, rank: int) -> list:
        """The rows of the patient of ``rank`` (empty when they have none)."""
        self._advance()
        if self.head is None or self.head[0] > rank:
            return []
        head_rank, rows = self.head
        if head_rank < rank:
            raise RuntimeError(f"{self.table} rows are not in the patient order")
        self.head = None
        return rows

    def drain(self) -> None:
        """Count what is left (only rows of patients with no patient row can be)."""
        self._advance()
        if self.head is not None:
            raise RuntimeError(f"{self.table} rows are not in the patient order")


def _grouped(conn: Connection, stmt: Select) -> Generator[tuple[_Key, list], None, None]:
    """Rows of ``stmt`` (whose first two columns are site and patient id, and which is
    ordered by them) as one list of plain tuples per patient.

    Read with the driver's own cursor, ``FETCH_ROWS`` at a time, rather than as
    SQLAlchemy rows, whose handling costs more than the read at millions of rows
    (``connector.db.stream.driver_rows``).
    Dates come as the driver gives them (``_date_reader`` converts them). PostgreSQL
    gets a server-side cursor, so no table is ever held whole; SQLite reads lazily.
    """
    rows = driver_rows(conn, stmt, fetch=FETCH_ROWS, name="derive")
    try:
        for key, group in groupby(rows, key=itemgetter(0, 1)):
            yield key, list(group)
    finally:
        rows.close()


def _in_bounds(site_col, patient_col, bounds: _Bounds | None):  # noqa: ANN001, ANN202
    """The condition for keys in ``bounds`` (compared by the database, in its collation)."""
    conds = []
    if bounds is not None:
        key = tuple_(site_col, patient_col)
        if bounds[0] is not None:
            conds.append(key >= tuple_(*bounds[0]))
        if bounds[1] is not None:
            conds.append(key < tuple_(*bounds[1]))
    return conds


def _patients(conn: Connection, site: str | None,
              bounds: _Bounds | None = None) -> list[PatientInfo]:
    """The patients in (site, source id) order."""
    p = Patient
    return [PatientInfo(*row) for row in conn.execute(
        select(p.site, p.source_id, p.patient_key, p.birth_year, p.sex, p.death_date,
               p.deceased, p.last_record_date)
        .where(_where_site(p.site, site), *_in_bounds(p.site, p.source_id, bounds))
        .order_by(p.site, p.source_id))]


def _table_queries(site: str | None, rules: Rules | None,
                   bounds: _Bounds | None = None) -> dict[str, tuple[str, Select]]:
    """Per stream, its table and its rows ordered by (site, patient) like the patients."""
    me, pe, lr = MedicationExposure, ProcedureEvent, LabResult
    queries: dict[str, Select] = {
        EXPOSURES: select(me.site, me.patient_source_id, me.ingredient, me.drug_class,
                          me.start_date, me.end_date),
        PROCEDURES: select(pe.site, pe.patient_source_id, pe.category, pe.product,
                           pe.performed_date, pe.end_date),
    }
    labs = select(lr.site, lr.patient_source_id, lr.analyte, lr.effective_date, lr.value,
                  lr.unit, lr.value_code)
    if rules is None:
        queries[LABS] = labs
    else:
        read = sorted(rule_analytes(rules))
        queries[LABS] = labs.where(lr.analyte.in_(read))
        queries[LATEST] = (  # the other analytes: their latest day only
            select(lr.site, lr.patient_source_id, lr.analyte, func.max(lr.effective_date),
                   func.count())
            .where(lr.analyte.not_in(read))
            .group_by(lr.site, lr.patient_source_id, lr.analyte))
    tables = {EXPOSURES: "medication_exposure", PROCEDURES: "procedure_event",
              LABS: "lab_result", LATEST: "lab_result"}
    out = {}
    for name, stmt in queries.items():
        site_col, patient_col = stmt.selected_columns[:2]
        out[name] = (tables[name], stmt.where(_where_site(site_col, site),
                                              *_in_bounds(site_col, patient_col, bounds))
                     .order_by(site_col, patient_col))
    return out


_EXPOSURE_ORDER = attrgetter("start", "ingredient")
_PROCEDURE_ORDER = attrgetter("date", "category", "product")
_LAB_ORDER = attrgetter("date", "analyte")


def _date_reader(dialect: Dialect) -> Callable[[Any], Any]:
    """How the driver's value of a date column becomes a date (SQLite stores text)."""
    process = Date().dialect_impl(dialect).result_processor(dialect, None)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def _timeline(info: PatientInfo, groups: dict[str, list],
              day: Callable[[Any], Any]) -> PatientTimeline:
    """One patient's records from their rows, each list in date order."""
    exposures = [Exposure(i, c, day(start), day(end))
                 for _, _, i, c, start, end in groups[EXPOSURES]]
    procedures = [Procedure(c, day(performed), product or "", day(end))
                  for _, _, c, product, performed, end in groups[PROCEDURES]]
    labs = [Lab(a, day(d), v, u, code) for _, _, a, d, v, u, code in groups[LABS]]
    labs += [Lab(a, day(d)) for _, _, a, d, _n in groups.get(LATEST, ())]
    exposures.sort(key=_EXPOSURE_ORDER)
    procedures.sort(key=_PROCEDURE_ORDER)
    labs.sort(key=_LAB_ORDER)
    return PatientTimeline(info, exposures, procedures, labs)


def _walk(conn: Connection, site: str | None, rules: Rules | None, bounds: _Bounds | None,
          orphans: Counter[str]) -> Iterator[PatientTimeline]:
    patients = _patients(conn, site, bounds)
    ranks = {(p.site, p.source_id): n for n, p in enumerate(patients)}
    day = _date_reader(conn.dialect)
    streams = [_Stream(name, table, _grouped(conn, stmt), ranks, orphans)
               for name, (table, stmt) in _table_queries(site, rules, bounds).items()]
    try:
        for rank, info in enumerate(patients):
            yield _timeline(info, {stream.name: stream.take(rank) for stream in streams},
                            day)
        for stream in streams:
            stream.drain()
    finally:
        for stream in streams:
            stream.groups.close()  # type: ignore[attr-defined]


def _log_orphans(orphans: Counter[str]) -> None:
    for table, n in sorted(orphans.items()):
        log.warning("%d %s rows have no patient row; ignored", n, table)


def iter_timelines(conn: Connection, site: str | None = None,
                   rules: Rules | None = None) -> Iterator[PatientTimeline]:
    """Every patient of the site(s) with their exposures, procedures and labs, one at a
    time in (site, source id) order.

    Each normalized table is read once, ordered by (site, patient), and the streams
    are walked together patient by patient, so only the patient being yielded is in
    memory (holding every timeline grows with the site; docs/benchmarks.md). With ``rules``,
    labs of an analyte no rule reads (haemoglobin, creatinine...) are loaded as one
    dateless-value record per patient and analyte on its latest day: they only ever
    set the last contact, and they are many of the rows to load.
    """
    orphans: Counter[str] = Counter()
    yield from _walk(conn, site, rules, None, orphans)
    _log_orphans(orphans)


def load_timelines(conn: Connection, site: str | None = None,
                   rules: Rules | None = None) -> list[PatientTimeline]:
    """``iter_timelines`` as a list (for tests and small sites: it holds every patient)."""
    return list(iter_timelines(conn, site, rules))


# ------------------------------------------------------------------ deriving, writing


_PATIENT_FIELDS = tuple(f.name for f in fields(CohortPatientRecord))
_LINE_FIELDS = tuple(f.name for f in fields(LineRecord))


def _patient_row(rec: CohortPatientRecord) -> dict:
    return {name: getattr(rec, name) for name in _PATIENT_FIELDS}


def _line_row(rec: CohortPatientRecord, line: LineRecord) -> dict:
    row = {name: getattr(line, name) for name in _LINE_FIELDS}
    row["drugs"] = line.drugs_text
    row.update(site=rec.site, source_id=rec.source_id, patient_key=rec.patient_key)
    return row


@dataclass
class _Derived:
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
        self.patient_rows.append(_patient_row(rec))
        self.line_rows += [_line_row(rec, line) for line in lines]
        self.patients += 1
        self.lines += len(lines)
        self.labs_dropped += dropped
        self.sites.add(rec.site)
        if rec.in_cohort:
            self.in_cohort += 1
        else:
            self.excluded[rec.exclusion_reason or "unknown"] += 1

    def merge(self, other: _Derived) -> None:
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
        return max(len(self.patient_rows), len(self.line_rows))

    def write(self, conn: Connection) -> None:
        """Send the pending rows (one executemany per table) and forget them."""
        insert_rows(conn, CohortPatient, self.patient_rows)
        insert_rows(conn, TherapyLine, self.line_rows)
        self.patient_rows, self.line_rows = [], []

    def summary(self) -> DeriveSummary:
        return DeriveSummary(sites=sorted(self.sites), patients=self.patients,
                             in_cohort=self.in_cohort, excluded=dict(self.excluded),
                             lines=self.lines, labs_dropped=self.labs_dropped)


def clear_derived(conn: Connection, site: str | None) -> None:
    """Delete the derived rows of ``site`` (or of every site) inside ``conn``'s transaction."""
    conn.execute(delete(TherapyLine).where(_where_site(TherapyLine.site, site)))
    conn.execute(delete(PatientBaseline).where(_where_site(PatientBaseline.site, site)))
    conn.execute(delete(CohortPatient).where(_where_site(CohortPatient.site, site)))


def _derive_here(conn: Connection, site: str | None, rules: Rules,
                 advance: Callable[[float], None]) -> _Derived:
    """Derive every patient in this process, writing as the rows pile up."""
    done = _Derived()
    for timeline in _walk(conn, site, rules, None, done.orphans):
        done.add(timeline, rules)
        if done.pending() >= WRITE_ROWS:
            done.write(conn)
        advance(1)
    done.write(conn)
    return done


# ------------------------------------------------------------------ worker processes


def worker_count(engine: Engine, conn: Connection, patients: int) -> int:
    """How many processes to derive ``patients`` with (1 = in this process).

    Workers read the database over their own connections while this one holds the
    write transaction: fine for PostgreSQL and for SQLite in WAL mode (readers never
    wait for the writer), not for an in-memory SQLite database or another journal.
    """
    if patients < PARALLEL_MIN_PATIENTS:
        return 1
    if engine.dialect.name == "sqlite":
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        if str(mode).lower() != "wal":
            return 1
    elif engine.dialect.name != "postgresql":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cores or 1))


def _chunks(keys: list[_Key], size: int) -> list[tuple[_Bounds, int]]:
    """Consecutive key ranges of ``size`` patients covering every key: the first range
    is open below and the last open above, so rows of no patient are counted too."""
    starts = keys[::size]
    out: list[tuple[_Bounds, int]] = []
    for n, start in enumerate(starts):
        lo = start if n else None
        hi = starts[n + 1] if n + 1 < len(starts) else None
        out.append(((lo, hi), min(size, len(keys) - n * size)))
    return out


_worker: dict[str, Any] = {}  # a worker process's engine and rules (set by _start_worker)


def _start_worker(url: str, rules: Rules) -> None:
    from connector.db.engine import get_engine

    _worker["engine"] = get_engine(url)
    _worker["rules"] = rules


def _derive_chunk(site: str | None, bounds: _Bounds) -> _Derived:
    """In a worker: derive the patients whose keys are in ``bounds``; rows are returned."""
    engine: Engine = _worker["engine"]
    rules: Rules = _worker["rules"]
    done = _Derived()
    with engine.connect() as conn:
        for timeline in _walk(conn, site, rules, bounds, done.orphans):
            done.add(timeline, rules)
    return done


def _derive_in_workers(engine: Engine, conn: Connection, site: str | None, rules: Rules,
                       workers: int, advance: Callable[[float], None]) -> _Derived:
    """Derive key ranges in worker processes; their rows are written here, in order."""
    keys = [(s, p) for s, p in conn.execute(
        select(Patient.site, Patient.source_id).where(_where_site(Patient.site, site))
        .order_by(Patient.site, Patient.source_id))]
    chunks = _chunks(keys, CHUNK_PATIENTS)
    url = engine.url.render_as_string(hide_password=False)
    done = _Derived()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_start_worker, initargs=(url, rules)) as pool:
        try:
            results = pool.map(_derive_chunk, [site] * len(chunks),
                               [bounds for bounds, _ in chunks])
            for part, (_, n) in zip(results, chunks, strict=True):
                done.merge(part)
                done.write(conn)
                advance(n)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return done


def run_derive(engine: Engine, site: str | None = None, progress: Progress | None = None,
               rules: Rules | None = None, workers: int | None = None) -> DeriveSummary:
    """Rebuild ``cohort_patient`` and ``therapy_line`` from the normalized tables.

    One transaction: the old rows are deleted first and the new ones written in
    batches as patients are derived, so a failed run leaves the old tables.
    ``workers`` processes derive (None: ``worker_count`` decides; 1: in-process).
    """
    rules = rules or load_rules()
    progress = progress or Progress.silent()
    with engine.begin() as conn:
        total = conn.execute(select(func.count()).select_from(Patient)
                             .where(_where_site(Patient.site, site))).scalar_one()
        if workers is None:
            workers = worker_count(engine, conn, total)
        clear_derived(conn, site)
        with progress.task("derive", total=total) as advance:
            if workers > 1:
                done = _derive_in_workers(engine, conn, site, rules, workers, advance)
            else:
                done = _derive_here(conn, site, rules, advance)
        derive_baseline(conn, site, rules)  # Table 1 covariates, from the rows just written
    _log_orphans(done.orphans)
    return done.summary()

