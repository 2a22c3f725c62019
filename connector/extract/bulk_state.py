"""The rows that let a Bulk export survive an interruption: ``bulk_job`` and ``bulk_file``.

A job is recorded before and after its kick-off (so its status URL outlives a killed
run), every manifest file is recorded before it is downloaded, and a file is marked
done in the transaction that loads it; a rerun reads these rows to resume
(``bulk.py``). Every read and write of the two tables is here.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from connector.db.clock import utcnow
from connector.db.models import BulkFile, BulkJob
from connector.fhir.export import Manifest

#: The states of a job a rerun takes up again (``done``, ``failed``, ``abandoned`` end it).
OPEN_STATES = ("kickoff", "polling", "downloading", "loaded")


def open_jobs(engine: Engine, site: str) -> list[BulkJob]:
    """The site's unfinished jobs, newest first."""
    with engine.connect() as conn:
        rows = list(conn.execute(select(BulkJob).where(
            BulkJob.site == site, BulkJob.state.in_(OPEN_STATES))
            .order_by(BulkJob.id.desc())).mappings())
    return [BulkJob(**row) for row in rows]


def files_done(engine: Engine, job_id: int) -> int:
    """How many of the job's files are loaded."""
    with engine.connect() as conn:
        return len(conn.execute(select(BulkFile.id).where(
            BulkFile.job_id == job_id, BulkFile.done.is_(True))).all())


def insert_job(engine: Engine, values: dict[str, Any]) -> BulkJob:
    """A new job row (``created_at`` and ``updated_at`` set now)."""
    values = {**values, "created_at": utcnow(), "updated_at": utcnow()}
    with engine.begin() as conn:
        job_id = int(conn.execute(insert(BulkJob).values(**values)).inserted_primary_key[0])
    return BulkJob(id=job_id, **values)


def update_job(engine: Engine, job: BulkJob, **values: Any) -> None:
    """Change the job's row and ``job`` alike (``updated_at`` set now)."""
    values["updated_at"] = utcnow()
    with engine.begin() as conn:
        conn.execute(update(BulkJob).where(BulkJob.id == job.id).values(**values))
    for name, value in values.items():
        setattr(job, name, value)


def record_files(engine: Engine, job_id: int, manifest: Manifest) -> None:
    """The manifest's files the job does not know yet, as files to download."""
    with engine.begin() as conn:
        known = set(conn.execute(select(BulkFile.url).where(
            BulkFile.job_id == job_id)).scalars())
        rows = [{"job_id": job_id, "kind": f.kind, "resource_type": f.type, "url": f.url,
                 "expected_count": f.count, "lines_loaded": 0, "bytes_downloaded": 0,
                 "done": False} for f in manifest.files if f.url not in known]
        if rows:
            conn.execute(insert(BulkFile), rows)


def job_files(engine: Engine, job_id: int) -> list[BulkFile]:
    """The job's files in the order they were recorded."""
    with engine.connect() as conn:
        rows = list(conn.execute(select(BulkFile).where(BulkFile.job_id == job_id)
                                 .order_by(BulkFile.id)).mappings())
    return [BulkFile(**r) for r in rows]


def mark_loaded(conn: Connection, file_id: int, *, lines: int, size: int) -> None:
    """The file is loaded, inside the transaction that loaded it (all or nothing)."""
    conn.execute(update(BulkFile).where(BulkFile.id == file_id).values(
        done=True, lines_loaded=lines, bytes_downloaded=size, loaded_at=utcnow()))


def manifest_json(manifest: Manifest) -> str:
    """The manifest as stored on the job (read back by ``stored_manifest``)."""
    return orjson.dumps(manifest.raw).decode()


def stored_manifest(job: BulkJob) -> Manifest | None:
    """The last manifest a job recorded, or None before the first."""
    if not job.manifest_json:
        return None
    return Manifest.parse(orjson.loads(job.manifest_json), job.status_url or "")
