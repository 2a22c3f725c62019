"""Deriving a large site in worker processes.

The patients are cut into consecutive key ranges; each worker reads its ranges over
its own connection (``timelines.walk`` with bounds) and sends the derived rows back,
and the parent writes them in order inside its one transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from connector.cohort.derived import Derived
from connector.cohort.rules import Rules
from connector.cohort.timelines import Bounds, Key, walk, where_site
from connector.db.models import Patient

MAX_WORKERS = 2  # derive worker processes at most
PARALLEL_MIN_PATIENTS = 2_000  # fewer patients are derived in-process (starting workers costs)
CHUNK_PATIENTS = 500  # patients per worker task


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


def _chunks(keys: list[Key], size: int) -> list[tuple[Bounds, int]]:
    """Consecutive key ranges of ``size`` patients covering every key: the first range
    is open below and the last open above, so rows of no patient are counted too."""
    starts = keys[::size]
    out: list[tuple[Bounds, int]] = []
    for n, start in enumerate(starts):
        lo = start if n else None
        hi = starts[n + 1] if n + 1 < len(starts) else None
        out.append(((lo, hi), min(size, len(keys) - n * size)))
    return out


_worker: dict[str, Any] = {}  # a worker process's engine and rules (set by _start_worker)


def _start_worker(url: str, rules: Rules) -> None:
    """A worker's own engine and the run's rules, once per process."""
    from connector.db.engine import get_engine

    _worker["engine"] = get_engine(url)
    _worker["rules"] = rules


def _derive_chunk(site: str | None, bounds: Bounds) -> Derived:
    """In a worker: derive the patients whose keys are in ``bounds``; rows are returned."""
    engine: Engine = _worker["engine"]
    rules: Rules = _worker["rules"]
    done = Derived()
    with engine.connect() as conn:
        for timeline in walk(conn, site, rules, bounds, done.orphans):
            done.add(timeline, rules)
    return done


def derive_in_workers(engine: Engine, conn: Connection, site: str | None, rules: Rules,
                      workers: int, advance: Callable[[float], None]) -> Derived:
    """Derive key ranges in worker processes; their rows are written here, in order."""
    keys = [(s, p) for s, p in conn.execute(
        select(Patient.site, Patient.source_id).where(where_site(Patient.site, site))
        .order_by(Patient.site, Patient.source_id))]
    chunks = _chunks(keys, CHUNK_PATIENTS)
    url = engine.url.render_as_string(hide_password=False)
    done = Derived()
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
