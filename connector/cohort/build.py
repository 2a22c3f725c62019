"""The database side of derive: load the normalized tables, write the derived ones.

Only this module touches the database; the rules work on plain records. The
derived rows of the site(s) are deleted and rewritten in one transaction, so a
rerun gives the same tables and an interrupted run leaves the old ones.

Patients are streamed: each normalized table is read once in (site, patient)
order and the tables are walked together, so one patient's records are in memory
at a time, and each patient is derived and written as soon as their rows are in.
Large runs split the patients into ranges derived by worker processes (one per
core, two at most), each reading its own ranges; the parent writes their rows.

Reading is ``timelines.py``, the rows and counts on their way out ``derived.py``,
the worker processes ``workers.py``; this module runs the stage.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from connector.cohort.baseline import derive_baseline
from connector.cohort.derived import Derived, DeriveSummary, clear_derived
from connector.cohort.rules import Rules, load_rules
from connector.cohort.timelines import (
    iter_timelines,
    load_timelines,
    log_orphans,
    rule_analytes,
    walk,
    where_site,
)
from connector.cohort.workers import derive_in_workers, worker_count
from connector.db.models import Patient
from connector.progress import Progress

WRITE_ROWS = 2_000  # derived rows sent to the database at a time


def _derive_here(conn: Connection, site: str | None, rules: Rules,
                 advance: Callable[[float], None]) -> Derived:
    """Derive every patient in this process, writing as the rows pile up."""
    done = Derived()
    for timeline in walk(conn, site, rules, None, done.orphans):
        done.add(timeline, rules)
        if done.pending() >= WRITE_ROWS:
            done.write(conn)
        advance(1)
    done.write(conn)
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
                             .where(where_site(Patient.site, site))).scalar_one()
        if workers is None:
            workers = worker_count(engine, conn, total)
        clear_derived(conn, site)
        with progress.task("derive", total=total) as advance:
            if workers > 1:
                done = derive_in_workers(engine, conn, site, rules, workers, advance)
            else:
                done = _derive_here(conn, site, rules, advance)
        derive_baseline(conn, site, rules)  # Table 1 covariates, from the rows just written
    log_orphans(done.orphans)
    return done.summary()


__all__ = ["DeriveSummary", "clear_derived", "iter_timelines", "load_timelines",
           "rule_analytes", "run_derive", "worker_count"]
