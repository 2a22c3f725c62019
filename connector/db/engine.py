"""Database connections: SQLite by default, PostgreSQL for multi-center cohorts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, create_engine

from connector.db import models  # noqa: F401  (registers the tables)


def get_engine(db_url: str) -> Engine:
    """An engine for a URL such as ``sqlite:///cohort.db`` or ``postgresql://…``.

    ``postgresql://`` URLs are routed to psycopg 3, the driver we install.
    SQLite gets WAL and foreign keys so that readers never see a half-written load.
    """
    if db_url.startswith("postgresql://") or db_url.startswith("postgres://"):
        db_url = "postgresql+psycopg://" + db_url.split("://", 1)[1]
    engine = create_engine(db_url)
    if engine.dialect.name == "sqlite":
        busy_ms = int(sqlite_busy_seconds() * 1000)

        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.close()

        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


#: How long a SQLite write waits for another process's write transaction to end.
#: Sites share one SQLite file's single write lock; a long map of one site makes the
#: other site's run wait this long before it gives up with exit 4 (``database_busy``).
SQLITE_BUSY_SECONDS = 60.0


def sqlite_busy_seconds() -> float:
    """``COHORT_SQLITE_BUSY_SECONDS`` (seconds, > 0), else ``SQLITE_BUSY_SECONDS``."""
    raw = os.environ.get("COHORT_SQLITE_BUSY_SECONDS", "").strip()
    if not raw:
        return SQLITE_BUSY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 10**7:
        raise ValueError(f"COHORT_SQLITE_BUSY_SECONDS must be a number of seconds above 0, "
                         f"not {raw!r}")
    return value


def database_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite giving up on a write lock another process held too long.

    Not a failure of the run's data: what was committed stays and the next run resumes,
    so the CLI exits 4 (like a held site lock) instead of printing a traceback.
    """
    from sqlalchemy.exc import OperationalError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(getattr(exc, "orig", None) or exc).lower()
        if isinstance(exc, OperationalError) and ("database is locked" in text
                                                  or "database is busy" in text):
            return True
        if type(exc).__name__ == "OperationalError" and "database is locked" in text:
            return True  # sqlite3's own, outside SQLAlchemy
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


#: SQLite page cache while a file is loaded into the raw store (the default is 2 MB).
LOAD_CACHE_MB = 32


@contextmanager
def load_cache(conn: Connection) -> Iterator[None]:
    """A large SQLite page cache on ``conn`` while a file is loaded, then back to the default.

    A load inserts into the raw store's unique index at random places; with the
    index's upper levels cached that is CPU work rather than page reads (measured in
    docs/benchmarks.md). Afterwards the cache is shrunk again, so the map stage's
    worker processes do not sit beside a process holding its pages.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql(f"PRAGMA cache_size=-{LOAD_CACHE_MB * 1024}")
    try:
        yield
    finally:
        conn.exec_driver_sql("PRAGMA cache_size=-2000")
        conn.exec_driver_sql("PRAGMA shrink_memory")


def init_db(engine: Engine) -> None:
    """Bring the database to the newest schema revision (idempotent, safe to run concurrently).

    Alembic migrations rather than ``create_all``, so a site database made by an
    older version gains new columns instead of silently missing them, and a
    central PostgreSQL database can be upgraded in place.
    """
    from connector.db.migrations import migrate

    migrate(engine)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed if the block succeeds, rolled back otherwise."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A read connection that sees one consistent state of the database until it closes.

    Merge and export copy many tables; without one snapshot a run landing meanwhile
    could leave a patient in one table and not in the next.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            with conn.begin():
                yield conn
        return
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()
