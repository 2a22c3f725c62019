"""Bulk Data ``$export`` extraction into the raw store, resumable at every step.

``extract_bulk`` is what ``run_extract(..., bulk=True)`` calls for ``--source URL`` or
``--source site.toml``. A run:

1. picks the level (``--group ID``: Group; else system if the CapabilityStatement
   offers it, else Patient; ``bulk_level`` forces one) and asks for the study's
   resource types (``_type``), the changes since the previous export of the same
   request (``_since`` = that manifest's ``transactionTime``) and, when the site
   config names Observation categories, ``_typeFilter=Observation?category=…``;
2. records the job in ``bulk_job`` before and after the kick-off, so the status URL
   survives an interruption;
3. polls the status URL (``connector.fhir.bulk``) with X-Progress on the display;
4. records every manifest file in ``bulk_file`` and, one file at a time, downloads
   it to ``<work dir>/<site>/job-<id>/`` (a ``.part`` file renamed when complete),
   then loads it through ``RawStore`` in one transaction that also marks the file
   done, after checking its line count against the manifest's ``count``. A rerun
   skips done files and loads a complete file left on disk without downloading it;
5. keeps the OperationOutcomes of error files in ``quarantine`` (stage ``extract``,
   type ``OperationOutcome``, the reason naming the severity) and marks the
   resources of ``deleted`` files deleted;
6. fetches by id (REST) the Medication resources that administrations reference and
   that the export did not contain (Patient and Group exports cover the Patient
   compartment only, and Medication is outside it);
7. deletes the job on the server, moves the ``sync_state`` watermark (mode ``bulk``)
   to the manifest's ``transactionTime`` and removes the job's folder.

The benchmark loads a folder of export files through the same loader
(benchmarks/export_folder.py).
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from connector.db.engine import load_cache
from connector.db.models import BulkFile, BulkJob
from connector.extract.bulk_jobs import (
    BulkSettings,
    complete_file,
    default_work_dir,
    export_request,
    file_name,
    hydrate_medications,
    poll_display,
    request_key,
    safe_name,
    with_since,
)
from connector.extract.bulk_load import (
    MODE,
    Corrupt,
    drop_other_code_counts,
    load_export_duck,
    load_export_file,
)
from connector.extract.bulk_state import (
    files_done,
    insert_job,
    job_files,
    manifest_json,
    mark_loaded,
    open_jobs,
    record_files,
    stored_manifest,
    update_job,
)
from connector.extract.records import (
    finish_run,
    load_watermark,
    merge_counts,
    save_watermarks,
    start_run,
)
from connector.extract.run import ExtractSummary
from connector.extract.store import RawStore, StoreCounts
from connector.fhir.bulk import (
    BulkClient,
    BulkExportError,
    BulkJobGone,
    BulkTimeout,
    ExportRequest,
    Manifest,
)
from connector.fhir.client import FhirClient, to_instant
from connector.fhir.config import SiteConfig
from connector.fhir.errors import FhirSourceError, SiteConfigError
from connector.progress import Progress

log = logging.getLogger(__name__)


class _CountMismatch(Exception):
    """A loaded file's line count is not the manifest's (the load is rolled back)."""

    def __init__(self, lines: int) -> None:
        super().__init__(lines)
        self.lines = lines


# ------------------------------------------------------------------- the run


class BulkExtraction:
    """One bulk export run for one site."""

    def __init__(self, engine: Engine, config: SiteConfig, client: FhirClient,
                 settings: BulkSettings, progress: Progress | None = None) -> None:
        self.engine = engine
        self.config = config
        self.client = client
        self.settings = settings
        self.progress = progress or Progress.silent()
        self.bulk = BulkClient(client, policy=settings.poll)
        self.site = config.name
        self.counts = StoreCounts()
        self.read = 0
        self.outcomes: Counter = Counter()
        self.files_loaded = 0
        self.files_before = 0
        self.downloads = 0
        self.hydrated = 0
        self.resumed = False
        self.level = ""
        self.types: tuple[str, ...] = ()
        self._requests: dict[int, ExportRequest] = {}
        self.token = True
        self.work_root = Path(settings.work_dir) if settings.work_dir else default_work_dir(engine)

    # -- entry -----------------------------------------------------------------

    def run(self) -> ExtractSummary:
        run_id = start_run(self.engine, self.site, self.config.base_url, MODE)
        job: BulkJob | None = None
        try:
            job = self._extract(run_id)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, FhirSourceError | SiteConfigError) \
                else type(exc).__name__
            finish_run(self.engine, run_id, self.counts, status="failed",
                        message=message[:2000], retries=self.client.stats.retries)
            raise
        finish_run(self.engine, run_id, self.counts, status="ok",
                    message=self._summary_text(job), retries=self.client.stats.retries)
        log.info("bulk extract %s: %s", self.site, self._summary_text(job))
        return ExtractSummary(sites=[self.site], read=self.read, counts=self.counts)

    def _extract(self, run_id: int) -> BulkJob:
        request = self._request()
        job = self._resume_or_new(request, run_id)
        for attempt in (1, 2):
            try:
                self._advance(job)
                return job
            except BulkTimeout:
                raise  # the job is kept: the next run polls it again
            except BulkJobGone as exc:
                if attempt == 2 or job.state not in ("polling", "downloading"):
                    raise
                log.warning("export job #%d is gone on the server (%s); starting a new export "
                            "(files already loaded are not loaded twice)", job.id, exc)
                self._update(job, state="abandoned", message=str(exc)[:500])
                self._remove_dir(job)
                job = self._new_job(with_since(request, job.since), run_id)
            except BulkExportError as exc:
                # the server failed the job (or its files are unreadable): the next run
                # starts a new export instead of polling this one again
                self._update(job, state="failed", message=str(exc)[:2000])
                self._remove_dir(job)
                raise
        raise AssertionError("unreachable")

    # -- the request -------------------------------------------------------------

    def _request(self) -> ExportRequest:
        request = export_request(self.bulk, self.config, self.settings)
        self.level, self.types = request.level, request.types
        return with_since(request, self._since(request))

    def _since(self, request: ExportRequest) -> str | None:
        explicit = self.settings.since
        if explicit is not None:
            if explicit.strip().lower() in ("full", "none", ""):
                return None
            instant = to_instant(explicit.strip())
            if instant is None:
                raise SiteConfigError(f"--since {explicit!r}: give a date (2024-01-31) or an "
                                      "instant (2024-01-31T12:00:00Z), or 'full'")
            return instant
        return load_watermark(self.engine, self.site, MODE, request_key(request))

    # -- jobs --------------------------------------------------------------------

    def _resume_or_new(self, request: ExportRequest, run_id: int) -> BulkJob:
        key = request_key(request)
        jobs = open_jobs(self.engine, self.site)
        for stale in jobs[1:]:
            self._abandon(stale, "superseded by a newer unfinished export")
        job = jobs[0] if jobs else None
        if job is not None:
            same_since = self.settings.since is None or job.since == request.since
            if job.request_key == key and same_since:
                self.resumed = True
                self.files_before = files_done(self.engine, job.id)
                log.info("resuming export job #%d (%s; %d files loaded before)", job.id,
                         job.state, self.files_before)
                manifest = stored_manifest(job)
                if manifest is not None:
                    self.token = manifest.requires_access_token
                return job
            self._abandon(job, "a different export was asked for")
        return self._new_job(request, run_id)

    def _new_job(self, request: ExportRequest, run_id: int) -> BulkJob:
        values = {
            "site": self.site, "request_key": request_key(request),
            "kickoff_url": self.client.url(request.path), "kickoff_method": request.method,
            "kickoff_params": orjson.dumps(request.params()).decode(), "since": request.since,
            "state": "kickoff", "message": "", "run_id": run_id,
        }
        job = insert_job(self.engine, values)
        self._requests[job.id] = request
        return job

    def _abandon(self, job: BulkJob, why: str) -> None:
        log.info("abandoning unfinished export job #%d: %s", job.id, why)
        if job.status_url:
            self.bulk.delete(job.status_url)
        self._update(job, state="abandoned", message=why)
        self._remove_dir(job)

    def _update(self, job: BulkJob, **values: Any) -> None:
        update_job(self.engine, job, **values)

    # -- the steps ---------------------------------------------------------------

    def _advance(self, job: BulkJob) -> None:
        if job.state == "kickoff":
            request = self._requests.get(job.id) or with_since(self._request(), job.since)
            status_url = self.bulk.kickoff(request)
            self._update(job, status_url=status_url, state="polling",
                         kickoff_params=orjson.dumps(request.params()).decode())
            log.info("export job #%d started (%s level)", job.id, self.level)
        if job.state == "polling":
            assert job.status_url
            manifest = self._wait(job, job.status_url)
            self._take(job, manifest)
            self._update(job, state="downloading")
        if job.state == "downloading":
            while True:
                self._download_pending(job)
                if not job.next_url:
                    break
                self._take(job, self._wait(job, job.next_url))
            self._update(job, state="loaded")
        if job.state == "loaded":
            if self.settings.loader == "duckdb" and not job.since:
                with self.engine.begin() as conn:  # this full export's counts replace older ones
                    drop_other_code_counts(conn, self.site, f"$export job {job.id} ")
            if self.settings.hydrate and "Medication" not in self.types:
                self.hydrated += hydrate_medications(self.engine, self.client, self.config,
                                                     self.counts)
            if job.status_url:
                self.bulk.delete(job.status_url)
            if job.transaction_time:
                with self.engine.begin() as conn:
                    save_watermarks(conn, self.site, MODE, {job.request_key: job.transaction_time})
            self._update(job, state="done", message=self._summary_text(job))
            self._remove_dir(job)

    def _wait(self, job: BulkJob, url: str) -> Manifest:
        with poll_display(self.progress) as show:
            def early_files(manifest: Manifest) -> None:
                show("downloading the files listed so far")
                self._take(job, manifest, partial=True)

            return self.bulk.wait_for(url, on_progress=show, on_manifest=early_files)

    def _take(self, job: BulkJob, manifest: Manifest, *, partial: bool = False) -> None:
        """Record a manifest's files (new ones only); a partial one is downloaded at once."""
        if manifest.next_url:
            self.bulk.check_origin(manifest.next_url, "manifest link")
        self.token = manifest.requires_access_token
        record_files(self.engine, job.id, manifest)
        self._update(job, transaction_time=job.transaction_time or manifest.transaction_time,
                     manifest_json=manifest_json(manifest),
                     next_url=None if partial else manifest.next_url)
        if partial:
            self._download_pending(job, bar=False)  # the polling spinner is on screen

    # -- files -------------------------------------------------------------------

    def _download_pending(self, job: BulkJob, *, bar: bool = True) -> None:
        pending = [f for f in job_files(self.engine, job.id) if not f.done]
        if not pending:
            return
        progress = self.progress if bar else Progress.silent()
        with progress.task("bulk", total=len(pending)) as advance:
            for f in pending:
                self._fetch_and_load(job, f)
                advance(1)

    def _fetch_and_load(self, job: BulkJob, f: BulkFile) -> None:
        """Download (unless a killed run left the whole file) and load one file.

        A line count that differs from the manifest's, or a gzip stream cut short,
        means a bad download: the file is fetched again (three downloads at most). The
        same differing count twice means the server's count is off: loaded as it is.
        """
        dest = self._job_dir(job) / file_name(f)
        path = complete_file(dest)
        if path is not None:
            size = path.stat().st_size
            log.info("%s file: loading the copy a previous run downloaded", f.resource_type)
        else:
            path, size = self._download(f, dest)
        expect, previous, downloads = f.expected_count, None, 1
        while True:
            try:
                n = self._load(f, path, expect=expect, size=size,
                               duck_key=self._duck_key(job, f))
                break
            except _CountMismatch as exc:
                if exc.lines == previous:
                    log.warning("%s file: %d lines where the manifest says %s, twice; loading "
                                "it as it is", f.resource_type, exc.lines, expect)
                    expect = None
                    continue
                previous = exc.lines
                why = f"{exc.lines} lines where the manifest says {expect}"
            except Corrupt:
                why = "the gzip stream is cut short"
            if downloads >= 3:
                raise BulkExportError(f"the {f.resource_type or f.kind} file of the export "
                                      f"could not be read whole ({why}, {downloads} downloads)")
            log.info("%s file: %s; downloading it again", f.resource_type or f.kind, why)
            path.unlink(missing_ok=True)
            path, size = self._download(f, dest)
            downloads += 1
        if not self.settings.keep_files:
            path.unlink(missing_ok=True)
        self.files_loaded += 1
        if f.kind == "output":
            self.read += n

    def _download(self, f: BulkFile, dest: Path) -> tuple[Path, int]:
        got = self.bulk.download(f.url, dest, with_token=self.token)
        self.downloads += 1
        return got.path, got.bytes

    def _duck_key(self, job: BulkJob, f: BulkFile) -> str | None:
        """The code-count key of a file the DuckDB path loads, or None for the Python path.

        Only resource files of full exports: an incremental export is small, and its
        changed resources must replace stored ones one by one."""
        if self.settings.loader != "duckdb" or job.since or f.kind != "output":
            return None
        return f"$export job {job.id} {file_name(f)}"

    def _load(self, f: BulkFile, path: Path, *, expect: int | None, size: int,
              duck_key: str | None = None) -> int:
        """Load one file and mark it done, in one transaction (all or nothing)."""
        counts = StoreCounts()
        outcomes: Counter = Counter()
        with self.engine.begin() as conn, load_cache(conn):
            store = RawStore(conn)
            store.counts = counts
            store.base = self.config.base_url  # its absolute references are local
            source = f"$export {f.resource_type or f.kind}"
            if duck_key is not None:
                n = load_export_duck(store, path, site=self.site, source=source,
                                     file_key=duck_key)
            else:
                n = load_export_file(store, path, kind=f.kind, site=self.site, source=source,
                                     outcomes=outcomes)
            store.flush()
            if expect is not None and n != expect:
                raise _CountMismatch(n)
            mark_loaded(conn, f.id, lines=n, size=size)
        merge_counts(self.counts, counts)
        self.outcomes.update(outcomes)
        return n

    def _job_dir(self, job: BulkJob) -> Path:
        return self.work_root / safe_name(self.site) / f"job-{job.id}"

    def _remove_dir(self, job: BulkJob) -> None:
        if not self.settings.keep_files:
            shutil.rmtree(self._job_dir(job), ignore_errors=True)

    # -- run record ----------------------------------------------------------------

    def _summary_text(self, job: BulkJob | None) -> str:
        parts = [f"level={self.level}"]
        if job is not None:
            parts.append(f"job #{job.id}{' (resumed)' if self.resumed else ''}")
            parts.append(f"since={job.since or 'full export'}")
            if job.transaction_time:
                parts.append(f"transactionTime={job.transaction_time}")
        parts.append(f"{self.files_loaded} files loaded ({self.downloads} downloads)")
        if self.files_before:
            parts.append(f"{self.files_before} loaded by an earlier run")
        parts.append(f"{self.read} resources read")
        if self.hydrated:
            parts.append(f"{self.hydrated} Medication fetched by id")
        if self.outcomes:
            shown = ", ".join(f"{n} {sev}" for sev, n in sorted(self.outcomes.items()))
            parts.append(f"export outcomes: {shown} (kept in quarantine)")
        stats = self.client.stats
        parts.append(f"{stats.requests} requests, {stats.retries} retries")
        return "; ".join(parts)


# --------------------------------------------------------------------- entry


def extract_bulk(engine: Engine, source: str, *, site: str | None = None,
                 progress: Progress | None = None, **options: Any) -> ExtractSummary:
    """Extract from a FHIR server's Bulk Data ``$export`` (``source`` a base URL or a site
    TOML file) into the raw store; resumes an unfinished export of the same request.

    ``options`` as ``connector.extract.source.RunOptions.from_keywords`` reads them:
    ``group``, ``bulk_level``, ``since`` ("full" for a full export), ``work_dir``,
    ``bulk_timeout``, ``poll_max_wait``, ``type_filter``, ``kickoff_method``, and the site
    config settings of REST (``timeout``, ``rate_limit``, ``retry``, ``auth``...).
    """
    from connector.extract.source import RunOptions, resolve_source

    return resolve_source(source, site, RunOptions.from_keywords({**options, "bulk": True})
                          ).extract(engine, progress)


__all__ = ["BulkExtraction", "BulkSettings", "extract_bulk", "load_export_file",
           "request_key"]
