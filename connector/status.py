"""``cohort status``: what each site's scheduled runs did, for the people on call.

Reads the run records (``extract_run``), the watermarks (``sync_state``), the
row counts of every layer and, on a central database, the merge provenance of
each site (``site``). It also probes each site's lock, so a run still marked
``running`` while nobody holds the lock shows as ``interrupted`` (killed, or the
machine went down), which is the failure a scheduler alone never reports.

Nothing here names a patient: counts, times, statuses and the messages the
stages wrote (which name resource types and counts only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, select, union
from sqlalchemy.engine import Connection, Engine

from connector.db import models
from connector.lock import is_locked

#: Tables counted per site, in layer order.
COUNTED = ("raw_resource", "quarantine", "patient", "medication_exposure", "procedure_event",
           "lab_result", "cohort_patient", "therapy_line")


def _table(name: str):  # noqa: ANN202
    return models.SQLModel.metadata.tables[name]


@dataclass
class RunInfo:
    id: int
    mode: str
    source: str
    status: str  # running | ok | failed | interrupted
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    counts: dict[str, int]  # new / updated / unchanged / ... summed over resource types
    by_type: dict[str, dict[str, int]]
    retries: int
    errors: int
    message: str

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class SiteStatus:
    site: str
    active: bool  # a run holds the site's lock now
    runs: list[RunInfo] = field(default_factory=list)  # newest first
    failures: list[RunInfo] = field(default_factory=list)  # newest first
    n_runs: int = 0
    watermarks: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    in_cohort: int = 0
    merge: dict[str, Any] | None = None  # the site row, on a merged database
    bulk_jobs: list[dict[str, Any]] = field(default_factory=list)  # $export jobs, newest first

    @property
    def healthy(self) -> bool:
        """False when the newest run failed or was interrupted."""
        return not self.runs or self.runs[0].status in ("ok", "running")


def _sites(conn: Connection) -> list[str]:
    queries = [select(_table(n).c.site) for n in ("extract_run", "sync_state", *COUNTED)]
    queries.append(select(_table("site").c.name))
    return sorted(r[0] for r in conn.execute(union(*queries)))


def _run_info(row: Any, *, interrupted: bool) -> RunInfo:
    try:
        by_type = orjson.loads(row.counts_json or "{}")
    except orjson.JSONDecodeError:
        by_type = {}
    totals: dict[str, int] = {}
    for counts in by_type.values():
        if isinstance(counts, dict):
            for name, n in counts.items():
                if isinstance(n, int):
                    totals[name] = totals.get(name, 0) + n
    status = "interrupted" if interrupted else row.status
    return RunInfo(id=row.id, mode=row.mode, source=row.source, status=status,
                   started_at=row.started_at, finished_at=row.finished_at, counts=totals,
                   by_type=by_type, retries=row.retries, errors=row.errors,
                   message=row.message)


def _runs(conn: Connection, site: str, *, active: bool, last: int) -> tuple[
        list[RunInfo], list[RunInfo], int]:
    t = _table("extract_run")
    n_runs = conn.execute(select(func.count()).select_from(t).where(t.c.site == site)).scalar()
    rows = conn.execute(select(t).where(t.c.site == site)
                        .order_by(t.c.started_at.desc(), t.c.id.desc()).limit(last)).all()
    runs: list[RunInfo] = []
    live_seen = False
    for row in rows:
        # Only the newest unfinished run can be the live one, and only while locked.
        interrupted = row.status == "running" and (not active or live_seen)
        live_seen = live_seen or row.status == "running"
        runs.append(_run_info(row, interrupted=interrupted))
    failed = conn.execute(select(t).where(t.c.site == site, t.c.status == "failed")
                          .order_by(t.c.started_at.desc(), t.c.id.desc()).limit(last)).all()
    failures = [_run_info(r, interrupted=False) for r in failed]
    failures += [r for r in runs if r.status == "interrupted"]
    failures.sort(key=lambda r: (r.started_at or dt.datetime.min.replace(tzinfo=dt.UTC)),
                  reverse=True)
    return runs, failures[:last], int(n_runs or 0)


def _watermarks(conn: Connection, site: str) -> list[dict[str, Any]]:
    t = _table("sync_state")
    rows = conn.execute(select(t.c.resource_type, t.c.mode, t.c.watermark, t.c.updated_at)
                        .where(t.c.site == site).order_by(t.c.mode, t.c.resource_type)).all()
    return [{"resource_type": r[0], "mode": r[1], "watermark": r[2], "updated_at": r[3]}
            for r in rows]


_BULK_COLUMNS = ("id", "state", "since", "transaction_time", "created_at", "updated_at",
                 "message")


def _bulk_jobs(conn: Connection, site: str, last: int) -> list[dict[str, Any]]:
    """The site's latest Bulk Data jobs (resumable exports), when the schema has them."""
    t = models.SQLModel.metadata.tables.get("bulk_job")
    if t is None:
        return []
    cols = [t.c[c] for c in _BULK_COLUMNS if c in t.c]
    order = t.c.updated_at.desc() if "updated_at" in t.c else t.c.id.desc()
    rows = conn.execute(select(*cols).where(t.c.site == site).order_by(order).limit(last))
    return [dict(r._mapping) for r in rows]


def _row_counts(conn: Connection) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for name in COUNTED:
        t = _table(name)
        for site, n in conn.execute(select(t.c.site, func.count()).group_by(t.c.site)):
            counts.setdefault(site, {})[name] = int(n)
    # a merged database keeps a site's quarantine as counts (quarantine_count), not rows
    t = _table("quarantine_count")
    for site, n in conn.execute(select(t.c.site, func.sum(t.c.n)).group_by(t.c.site)):
        row = counts.setdefault(site, {})
        row["quarantine"] = row.get("quarantine", 0) + int(n or 0)
    return counts


def _in_cohort(conn: Connection) -> dict[str, int]:
    t = _table("cohort_patient")
    rows = conn.execute(select(t.c.site, func.count()).where(t.c.in_cohort.is_(True))
                        .group_by(t.c.site))
    return {site: int(n) for site, n in rows}


def _merge_rows(conn: Connection) -> dict[str, dict[str, Any]]:
    t = _table("site")
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(select(t)).mappings():
        if row.get("pseudonymized"):
            out[row["name"]] = {k: row.get(k) for k in ("loaded_at", "merged_at",
                                                        "key_fingerprint", "date_shift_days")}
            out[row["name"]]["keyed"] = row.get("key_fingerprint") is not None
    return out


def collect_status(engine: Engine, *, sites: Sequence[str] | None = None,
                   last: int = 5) -> list[SiteStatus]:
    """The status of every site in the database (or of ``sites``), each with its last runs."""
    with engine.connect() as conn:
        names = [s for s in _sites(conn) if not sites or s in sites]
        counts, in_cohort, merged = _row_counts(conn), _in_cohort(conn), _merge_rows(conn)
        statuses: list[SiteStatus] = []
        for site in names:
            active = is_locked(engine, site)
            runs, failures, n_runs = _runs(conn, site, active=active, last=last)
            statuses.append(SiteStatus(
                site=site, active=active, runs=runs, failures=failures, n_runs=n_runs,
                watermarks=_watermarks(conn, site),
                rows={n: counts.get(site, {}).get(n, 0) for n in COUNTED},
                in_cohort=in_cohort.get(site, 0), merge=merged.get(site),
                bulk_jobs=_bulk_jobs(conn, site, last)))
    return statuses


# --------------------------------------------------------------------- rendering


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return _iso(value)


def status_dict(statuses: Sequence[SiteStatus]) -> dict[str, Any]:
    """The JSON form (``cohort status --json``): stable keys, ISO-8601 UTC times."""
    out = []
    for s in statuses:
        item = asdict(s)
        item["healthy"] = s.healthy
        for key in ("runs", "failures"):
            for run, info in zip(item[key], getattr(s, key), strict=True):
                run["duration_s"] = info.duration_s
        out.append(item)
    return {"sites": _jsonable(out)}


def _counts_text(counts: dict[str, int]) -> str:
    order = ("new", "updated", "unchanged", "older", "deleted", "skipped")
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    parts += [f"{n} {k}" for k, n in counts.items() if k not in order and n]
    return ", ".join(parts) or "nothing"


def format_status(statuses: Sequence[SiteStatus]) -> str:
    """A plain-text summary, one block per site."""
    if not statuses:
        return "no sites in this database yet"
    lines: list[str] = []
    for s in statuses:
        head = f"site {s.site}: " + ("RUNNING now" if s.active else "idle")
        if not s.healthy:
            head += f" - last run {s.runs[0].status.upper()}"
        lines.append(head)
        if s.merge:
            m = s.merge
            lines.append(f"  merged {_iso(m['merged_at'])} (keyed: {'yes' if m['keyed'] else 'NO'}"
                         f", date shift ±{m['date_shift_days']} d)")
        rows = s.rows
        lines.append(f"  rows: raw {rows['raw_resource']}, quarantine {rows['quarantine']}, "
                     f"patients {rows['patient']}, exposures {rows['medication_exposure']}, "
                     f"procedures {rows['procedure_event']}, labs {rows['lab_result']}, "
                     f"cohort {s.in_cohort}/{rows['cohort_patient']}, "
                     f"lines {rows['therapy_line']}")
        if s.runs:
            lines.append(f"  runs ({len(s.runs)} of {s.n_runs}, newest first):")
        for r in s.runs:
            took = f" in {r.duration_s:.0f}s" if r.duration_s is not None else ""
            lines.append(f"    #{r.id} {_iso(r.started_at)} {r.mode} {r.status}{took}: "
                         f"{_counts_text(r.counts)}; retries {r.retries}, errors {r.errors}"
                         + (f"; {r.message}" if r.message else ""))
        for job in s.bulk_jobs:
            lines.append(f"  bulk export #{job.get('id')} {job.get('state')}, updated "
                         f"{_iso(job.get('updated_at'))}"
                         + (f": {job['message']}" if job.get("message") else ""))
        for w in s.watermarks:
            lines.append(f"  watermark {w['mode']} {w['resource_type']}: {w['watermark']}")
        if s.failures:
            lines.append("  failures:")
            for r in s.failures:
                lines.append(f"    #{r.id} {_iso(r.started_at)} {r.status}"
                             + (f": {r.message}" if r.message else ""))
    return "\n".join(lines)
