"""One run per site and database at a time, whatever the scheduler does.

Cron, systemd timers and workflow engines all start a job again when the last
one is still going (a slow server, a long backfill). Two extractions of the same
site into the same database would race on the watermarks and the run records,
so each run holds a lock named by the database and the site:

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) keyed by a
  hash of the current schema and the site. The server drops it when the session
  ends, so a killed run never leaves a stale lock.
* SQLite: an ``flock`` on a file beside the database, ``<db>.<site>.lock``. The
  kernel drops it when the process ends. The file itself stays (deleting a lock
  file races with the next locker) and holds the holder's pid, host and start.
* In-memory SQLite: no other process can see the database; no lock.

A second run does not wait: it raises ``LockHeld`` at once, and the CLI exits
with code 4 (``EXIT_LOCKED``), so a scheduler records "skipped", not "failed".
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from connector.db.advisory import advisory_key
from connector.db.clock import utcnow


class LockHeld(RuntimeError):
    """Another run holds the lock for this site and database."""

    def __init__(self, site: str, holder: str = "") -> None:
        self.site = site
        self.holder = holder
        detail = f" ({holder})" if holder else ""
        super().__init__(f"another cohort run holds the lock for site '{site}' "
                         f"on this database{detail}")


@dataclass(frozen=True)
class LockInfo:
    """Where a site's lock lives, for messages and ``cohort status``."""

    site: str
    kind: str  # advisory | flock | none
    where: str  # lock file path, or "schema <name>" for PostgreSQL


def _safe(site: str) -> str:
    """The site as a file-name fragment; a hash suffix keeps different names apart."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", site)[:60]
    if cleaned == site:
        return site
    return f"{cleaned}-{hashlib.sha256(site.encode()).hexdigest()[:8]}"


def lock_path(engine: Engine, site: str) -> Path | None:
    """The lock file of a site for a SQLite database file, else None."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).resolve().with_name(f"{Path(database).name}.{_safe(site)}.lock")


@contextmanager
def site_lock(engine: Engine, site: str) -> Iterator[LockInfo]:
    """Hold the lock of ``site`` on ``engine``'s database for the block, or raise LockHeld."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, site) as info:
            yield info
        return
    path = lock_path(engine, site)
    if path is None or not _writable(path):
        # In memory, or a read-only file (a share file on a read-only mount): no
        # other process can write it, so there is nothing to guard.
        yield LockInfo(site, "none", "")
        return
    with _flock(path, site) as info:
        yield info


@contextmanager
def site_locks(engine: Engine, sites: Sequence[str]) -> Iterator[list[LockInfo]]:
    """Hold the locks of several sites (sorted, so two callers never wait on each other)."""
    with ExitStack() as stack:
        yield [stack.enter_context(site_lock(engine, s)) for s in sorted(set(sites))]


def is_locked(engine: Engine, site: str) -> bool:
    """Whether a run currently holds the site's lock (probes without waiting).

    On PostgreSQL the probe reads ``pg_locks`` instead of trying the lock: a probe
    that takes the lock, however briefly, makes a run that starts in that moment
    exit 4 (``cohort status`` beside a scheduled run; a test waiting for its run
    to hold the lock). A file lock can only be probed by trying it, which holds it
    for a few system calls.
    """
    if engine.dialect.name == "postgresql":
        held = _advisory_held(engine, site)
        if held is not None:
            return held
    try:
        with site_lock(engine, site):
            return False
    except LockHeld:
        return True


def _writable(lock: Path) -> bool:
    return os.access(lock.parent, os.W_OK) or (lock.exists() and os.access(lock, os.W_OK))


def _holder_text() -> str:
    started = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}"


@contextmanager
def _flock(path: Path, site: str) -> Iterator[LockInfo]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(site, _read_holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder_text() + "\n").encode(), 0)
        try:
            yield LockInfo(site, "flock", str(path))
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


@contextmanager
def _advisory(engine: Engine, site: str) -> Iterator[LockInfo]:
    # A connection of its own, outside any pool reuse while held: the lock belongs
    # to the session, and the session must outlive every transaction of the run.
    conn = engine.connect()
    try:
        schema = _schema(conn)
        key = _site_key(schema, site)
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if not got:
            raise LockHeld(site, _pg_holder(conn, key))
        try:
            yield LockInfo(site, "advisory", f"schema {schema}")
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
    finally:
        conn.close()


def _schema(conn) -> str:  # noqa: ANN001
    return conn.execute(text("SELECT current_schema()")).scalar() or "public"


def _site_key(schema: str, site: str) -> int:
    """The advisory key of a site's lock: per schema, so databases (schemas) sharing one
    server do not share their sites' locks."""
    return advisory_key(f"site|{schema}|{site}")


def _advisory_held(engine: Engine, site: str) -> bool | None:
    """Whether any session holds the site's advisory lock in this database, read from
    ``pg_locks`` without taking it; None when the view cannot be read."""
    with engine.connect() as conn:
        try:
            key = _site_key(_schema(conn), site)
            held = conn.execute(text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND granted AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) "
                "AND ((classid::bigint << 32) | objid::bigint) = :k)"), {"k": key}).scalar()
        except SQLAlchemyError:
            return None
    return bool(held)


def _pg_holder(conn, key: int) -> str:  # noqa: ANN001
    """The holder's pid and start, from pg_locks and pg_stat_activity, when visible."""
    try:
        row = conn.execute(text(
            "SELECT a.pid, a.backend_start, a.client_addr FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = :k"
        ), {"k": key}).first()
        conn.commit()
    except Exception:  # noqa: BLE001  (monitoring views may be restricted)
        conn.rollback()
        return ""
    if row is None:
        return ""
    return f"server backend pid {row[0]} since {row[1]:%Y-%m-%dT%H:%M:%S%z}"
