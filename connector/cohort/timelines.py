"""Each patient's normalized records as one timeline, read streamed.

Each normalized table is read once in (site, patient) order and the tables are
walked together, so one patient's records are in memory at a time (holding every
timeline grows with the site; docs/benchmarks.md). Rows are read with the driver's
own cursor and turned into the plain records of ``model.py`` the rules work on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import Date, Select, func, select, tuple_
from sqlalchemy.engine import Connection, Dialect

from connector.cohort.imwg import RATIO, RESPONSE_ANALYTES
from connector.cohort.model import Exposure, Lab, PatientInfo, PatientTimeline, Procedure
from connector.cohort.rules import Rules
from connector.db.models import LabResult, MedicationExposure, Patient, ProcedureEvent
from connector.db.stream import driver_rows

log = logging.getLogger(__name__)

FETCH_ROWS = 5_000  # rows a cursor fetches at a time

Key = tuple[str, str]  # (site, patient source id)
Bounds = tuple[Key | None, Key | None]  # keys >= first and < second; None = open
EXPOSURES, PROCEDURES, LABS, LATEST = "exposures", "procedures", "labs", "latest_labs"


def where_site(column, site: str | None):  # noqa: ANN001, ANN201
    """The condition for rows of ``site``, or of every site when it is None."""
    return column == site if site is not None else column.isnot(None)


def rule_analytes(rules: Rules) -> frozenset[str]:
    """The analytes a rule reads or a unit guard checks; any other lab only dates contact."""
    return frozenset({*RESPONSE_ANALYTES, RATIO, rules.progression.disease_status_analyte,
                      rules.imwg.ife_analyte, rules.imwg.marrow_analyte,
                      rules.imwg.urine_ife_analyte, rules.imwg.clonality_analyte, *rules.units})


@dataclass
class Stream:
    """One table's rows grouped by patient, in the database's (site, patient) order.

    Groups whose patient has no patient row are counted and skipped; ``take``
    hands over the group of one patient, identified by their rank in the patient
    query. Ranks (not string comparisons in Python) decide the order, so the walk
    follows whatever collation the database sorted with.
    """

    name: str
    table: str  # for the orphan count
    groups: Iterator[tuple[Key, list]]
    ranks: dict[Key, int]
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


def _grouped(conn: Connection, stmt: Select) -> Generator[tuple[Key, list], None, None]:
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


def _in_bounds(site_col, patient_col, bounds: Bounds | None):  # noqa: ANN001, ANN202
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
              bounds: Bounds | None = None) -> list[PatientInfo]:
    """The patients in (site, source id) order."""
    p = Patient
    return [PatientInfo(*row) for row in conn.execute(
        select(p.site, p.source_id, p.patient_key, p.birth_year, p.sex, p.death_date,
               p.deceased, p.last_record_date)
        .where(where_site(p.site, site), *_in_bounds(p.site, p.source_id, bounds))
        .order_by(p.site, p.source_id))]


def _table_queries(site: str | None, rules: Rules | None,
                   bounds: Bounds | None = None) -> dict[str, tuple[str, Select]]:
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
        out[name] = (tables[name], stmt.where(where_site(site_col, site),
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
    """A date the driver already gives as a date."""
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


def walk(conn: Connection, site: str | None, rules: Rules | None, bounds: Bounds | None,
         orphans: Counter[str]) -> Iterator[PatientTimeline]:
    """The timelines of the patients in ``bounds`` (all when None), in (site, patient)
    order; rows of no patient are counted in ``orphans`` by table."""
    patients = _patients(conn, site, bounds)
    ranks = {(p.site, p.source_id): n for n, p in enumerate(patients)}
    day = _date_reader(conn.dialect)
    streams = [Stream(name, table, _grouped(conn, stmt), ranks, orphans)
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


def log_orphans(orphans: Counter[str]) -> None:
    """One warning per table that had rows of no patient (they are ignored)."""
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
    yield from walk(conn, site, rules, None, orphans)
    log_orphans(orphans)


def load_timelines(conn: Connection, site: str | None = None,
                   rules: Rules | None = None) -> list[PatientTimeline]:
    """``iter_timelines`` as a list (for tests and small sites: it holds every patient)."""
    return list(iter_timelines(conn, site, rules))
