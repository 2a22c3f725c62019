"""REST extraction from a live FHIR R4 server into the raw store.

``extract_remote`` is what ``run_extract`` calls for ``--source http(s)://…`` and
``--source site.toml``. A run:

1. reads the CapabilityStatement and checks that the server can do what the run
   needs (one clear error otherwise), then takes the server's clock (``t0``);
2. with ``scope = "cohort"`` (the default) screens for the patients with a CAR-T
   MedicationAdministration or Procedure, by the codes and names in ``mappings/``
   (connector/codes/screen.py), asking only for ``subject``; ``scope = "patients"``
   takes a list of ids instead, ``scope = "all"`` skips this;
3. fetches Patient, MedicationAdministration, Procedure and Observation with
   patient-scoped searches (several patients a request), then the Medication
   resources the administrations reference and do not contain; with
   ``scope = "all"`` every resource of each type;
4. on later runs asks only for ``_lastUpdated`` after the previous run's ``t0``
   (less a small overlap), and reads the server's history for deletions;
5. records the run (counts per type, requests, retries, errors) in ``extract_run``
   and, only when everything succeeded, moves the watermarks in ``sync_state``.

Only the main thread writes to the database, one transaction per page, so an
interrupted run keeps what it stored and a rerun is idempotent. The parts of a run
live beside this module: screening (``rest_screen.py``), job planning
(``rest_jobs.py``), the concurrent runner with its paging checks (``rest_runner.py``)
and deletion sync (``rest_deletions.py``); this class composes them and keeps the
run's record and watermarks (``records.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from connector.codes.labfilter import default_trim
from connector.codes.screen import ScreenTerms, car_t_screen_terms
from connector.extract.heap import parsing_heap
from connector.extract.records import (
    finish_run,
    load_watermarks,
    save_watermarks,
    start_run,
    stored_ids,
)
from connector.extract.refs import medication_id, subject_patient
from connector.extract.rest_deletions import sync_deletions
from connector.extract.rest_jobs import (
    Job,
    all_jobs,
    largest_first,
    medication_jobs,
    patient_jobs,
)
from connector.extract.rest_runner import Pager, run_concurrently
from connector.extract.rest_screen import listed_patients, screen
from connector.extract.run import ExtractSummary
from connector.extract.store import RawStore, StoreCounts
from connector.fhir.client import (
    Capabilities,
    FhirClient,
    Page,
    shift_instant,
    to_instant,
)
from connector.fhir.config import (
    MEDICATION_USERS,
    PATIENT_TYPES,
    SiteConfig,
)
from connector.fhir.errors import (
    AuthError,
    CapabilityError,
    ExtractError,
    FhirSourceError,
    HttpError,
    SiteConfigError,
)
from connector.fhir.limits import RunDeadlineExceeded
from connector.fhir.pagesize import choose_page_size
from connector.fhir.redact import scrub
from connector.progress import Progress

log = logging.getLogger(__name__)

@dataclass
class _Totals:
    fetched: Counter = field(default_factory=Counter)
    searches: Counter = field(default_factory=Counter)
    pages: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the run


class RemoteExtraction:
    """One REST extraction run for one site."""

    def __init__(self, engine: Engine, config: SiteConfig, client: FhirClient,
                 progress: Progress | None = None,
                 screen_terms: ScreenTerms | None = None) -> None:
        self.engine = engine
        self.config = config
        self.client = client
        self.progress = progress or Progress.silent()
        self.site = config.name
        self.mode = f"rest:{config.scope}"
        self.terms = screen_terms
        self.counts = StoreCounts()
        self.totals = _Totals()
        self.t0: str = ""
        self.watermarks: dict[str, str] = {}
        self.patient_param = "patient"
        self.chained_ok = config.quirks.chained_search
        self.pager = Pager(client, verify=config.quirks.verify_paging,
                           incremental=config.quirks.incremental)
        self.medication_refs: set[str] = set()
        self.screened = 0

    # -- entry ----------------------------------------------------------------

    def run(self) -> ExtractSummary:
        run_id = start_run(self.engine, self.site, self.config.base_url, "rest")
        try:
            with parsing_heap():  # fewer collector walks while pages are parsed (heap.py)
                new_marks = self._extract()
        except BaseException as exc:
            message = str(exc) if isinstance(exc, FhirSourceError | SiteConfigError) \
                else type(exc).__name__
            self._finish(run_id, status="failed", message=message[:2000])
            raise
        with self.engine.begin() as conn:
            save_watermarks(conn, self.site, self.mode, new_marks)
        self._finish(run_id, status="ok", message=self._summary_text())
        summary = ExtractSummary(sites=[self.site], read=sum(self.totals.fetched.values()),
                                 counts=self.counts)
        log.info("extract %s: %d resources fetched, %d stored, %d requests, %d retries",
                 self.site, summary.read, self.counts.stored, self.client.stats.requests,
                 self.client.stats.retries)
        return summary

    def _extract(self) -> dict[str, str]:
        caps = self.client.capabilities()
        self._check(caps)
        # the largest page the server accepts, never more than the config says
        self.client.page_size = choose_page_size(self.client, caps, self.config.page_size).size
        self.t0 = self.pager.floor = self._server_time()
        self.watermarks = load_watermarks(self.engine, self.site, self.mode)
        types = [t for t in self.config.resource_types]
        if self.config.scope == "all":
            # one phase for all types, as for a cohort: while one search waits for the
            # server or the rate limit, the others' pages are read and stored
            self._phase("records", [job for rtype in largest_first(types)
                                    for job in all_jobs(self.config, rtype, self._since(rtype))])
        else:
            full, incremental = self._patients()
            # one phase for all types: the workers stay busy across types, and a rerun's
            # change checks (one search a type) run side by side instead of in a row
            jobs = [job for rtype in PATIENT_TYPES if rtype in types
                    for job in patient_jobs(self.config, rtype, full, incremental,
                                            self._since(rtype), self.patient_param)]
            self._phase("records", jobs)
            if "Medication" in types:
                self._phase("Medication", medication_jobs(
                    self.config, self.medication_refs,
                    stored_ids(self.engine, self.site, "Medication"), self._since("Medication")))
        if self.config.detect_deletes and self.config.quirks.incremental:
            sync_deletions(self.engine, self.client, caps, site=self.site,
                           since={rtype: self._since(rtype) for rtype in types},
                           concurrency=self.config.concurrency, counts=self.counts)
        marks = {rtype: self.t0 for rtype in types}
        if "Observation" in types:
            marks[_bodies_key()] = self.t0
        if self.config.scope == "cohort":
            marks[self._screen_key()] = self.t0
        return marks

    # -- checks and clock -----------------------------------------------------

    def _check(self, caps: Capabilities) -> None:
        quirks = self.config.quirks
        needs: dict[str, list[tuple[tuple[str, ...], str]]] = {
            t: [] for t in self.config.resource_types}
        if self.config.scope != "all":
            wanted = (quirks.patient_param,) if quirks.patient_param else ("patient", "subject")
            for rtype in PATIENT_TYPES[1:]:
                if rtype in needs:
                    needs[rtype].append((wanted, "for patient-scoped searches"))
            if "Observation" in needs and quirks.observation_categories:
                needs["Observation"].append((("category",), "quirks.observation_categories"))
        if self.config.scope == "cohort":
            for rtype in ("MedicationAdministration", "Procedure"):
                needs.setdefault(rtype, []).append((("code",), "to find CAR-T patients"))
        caps.require(self.config.base_url, needs)
        if quirks.patient_param:
            self.patient_param = quirks.patient_param
        elif not all(caps.has_param(t, "patient") for t in PATIENT_TYPES[1:]
                     if t in caps.types and t in self.config.resource_types):
            self.patient_param = "subject"
        if self.chained_ok and not caps.has_param("MedicationAdministration", "medication"):
            self.chained_ok = False

    def _server_time(self) -> str:
        stamp = self.client.server_time("Patient")
        if stamp:
            return stamp
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        log.warning("the server sent no clock (no Bundle.meta.lastUpdated, no Date header); "
                    "using this machine's clock less 5 minutes as the watermark")
        return to_instant(now.isoformat()) or ""

    def _since(self, key: str) -> str | None:
        if not self.config.quirks.incremental:
            return None
        if key == "Observation" and _bodies_key() not in self.watermarks:
            return None  # stored under other lab code sets: read Observations whole again
        mark = self.watermarks.get(key)
        return shift_instant(mark, -self.config.overlap_seconds) if mark else None

    def _screen_key(self) -> str:
        return f"screen:{self._terms().digest()}"

    def _terms(self) -> ScreenTerms:
        if self.terms is None:
            self.terms = car_t_screen_terms()
        return self.terms

    def _patients(self) -> tuple[set[str], set[str]]:
        """(patients to fetch whole, patients to fetch changes of)."""
        known = stored_ids(self.engine, self.site, "Patient")
        if self.config.scope == "patients":
            listed = listed_patients(Path(self.config.patient_ids_file or ""))
            self.screened = len(listed)
            return listed - known, listed & known
        since = self._since(self._screen_key())
        found = screen(self._phase, self.config, self._terms(), since, self.chained_ok)
        self.screened = len(found)
        if since is None:  # a full screen: the new ones whole, the known ones' changes
            return found - known, known
        # an incremental screen finds patients whose CAR-T records changed since the last
        # run: read them whole (they may be new, or left half-read by a failed run)
        return found, known - found

    # -- running searches -----------------------------------------------------

    def _phase(self, name: str, jobs: list[Job], *, found: set[str] | None = None,
               collect: Callable[[dict], str | None] | None = None) -> bool:
        """Run ``jobs`` concurrently, storing pages (or collecting ids); True if a chained
        search was refused. Fails after the phase if any search failed."""
        if not jobs:
            return False
        refused = False
        failed_before = self.totals.failed
        base = self.config.base_url
        pick = collect or (lambda r: subject_patient(r, base))
        with self.progress.task(name) as advance, \
                closing(run_concurrently(jobs, self.pager.pages, self.config.concurrency)) as items:
            for job, item in items:
                if isinstance(item, BaseException):
                    if job.chained and isinstance(item, HttpError) and item.status == 400:
                        refused = True
                        if self.chained_ok:
                            log.info("the server refused a chained search; screening "
                                     "Medication first instead")
                        self.chained_ok = False
                        continue
                    if job.optional and isinstance(item, HttpError) and item.status == 400:
                        log.warning("%s: the server refused a search by text (%s); screening "
                                    "by codes only", job.rtype, item)
                        continue
                    if isinstance(item, AuthError | CapabilityError | RunDeadlineExceeded):
                        raise item
                    self.totals.failed += 1
                    self.totals.errors.append(str(item))
                    log.warning("%s", item)
                    continue
                page = item
                self.totals.pages += 1
                for text in page.outcomes:
                    log.warning("%s: the server warned: %s", job.rtype,
                                scrub(text, job.hidden_values())[:300])
                if job.store:
                    self._store(job, page)
                elif found is not None:
                    for resource in page.resources:
                        value = pick(resource)
                        if value:
                            found.add(value)
                advance(len(page.resources))
        failed = self.totals.failed - failed_before
        if failed:
            raise ExtractError(f"{failed} of {len(jobs)} {name} searches failed; first: "
                               f"{self.totals.errors[failed_before]}")
        if name != "screen":
            c = self.counts
            for rtype in dict.fromkeys(job.rtype for job in jobs):
                log.info("%s: %d fetched in %d searches (%d new, %d updated, %d unchanged)",
                         rtype, self.totals.fetched[rtype],
                         sum(job.rtype == rtype for job in jobs), c.new[rtype],
                         c.updated[rtype], c.unchanged[rtype])
        return refused

    def _store(self, job: Job, page: Page) -> None:
        source = job.label[:500]
        with self.engine.begin() as conn:
            store = RawStore(conn)
            store.counts = self.counts
            store.base = self.config.base_url  # its absolute references are local
            for resource in page.resources:
                rtype = resource.get("resourceType")
                self.totals.fetched[rtype if isinstance(rtype, str) else job.rtype] += 1
                if rtype in MEDICATION_USERS:
                    ref = medication_id(resource, self.config.base_url)
                    if ref:
                        self.medication_refs.add(ref)
                store.add(resource, site=self.site, source=source)
            store.flush()

    # -- run record -----------------------------------------------------------

    def _summary_text(self) -> str:
        stats = self.client.stats
        parts = [f"scope={self.config.scope}"]
        if self.config.scope != "all":
            parts.append(f"{self.screened} patients screened")
        parts += [f"{stats.requests} requests", f"{self.totals.pages} pages",
                  f"{self.pager.rereads} re-reads", f"page_size={self.client.page_size}",
                  f"rate_limit={self.config.rate_limit:g}",
                  f"rate_limit_wait={self.client.limiter.waited:.1f}s"]
        if stats.reauths:
            parts.append(f"{stats.reauths} re-authentications")
        return "; ".join(parts)

    def _finish(self, run_id: int, *, status: str, message: str) -> None:
        finish_run(self.engine, run_id, self.counts, status=status, message=message,
                   retries=self.client.stats.retries, errors=self.totals.failed,
                   fetched=self.totals.fetched, types=self.config.resource_types)


# ------------------------------------------------------------------- storage


def _bodies_key() -> str:
    """Watermark key of the Observation filter in force (connector.codes.labfilter)."""
    trim = default_trim()
    return f"bodies:{trim.digest if trim else 'all'}"


# --------------------------------------------------------------------- entry


def extract_remote(engine: Engine, source: str, *, site: str | None = None,
                   progress: Progress | None = None, **options: Any) -> ExtractSummary:
    """Extract from a FHIR server (``source`` a base URL) or a site (``source`` a TOML file).

    ``options`` override the site config for this run: ``scope`` ("cohort", "all",
    "patients"), ``page_size``, ``concurrency``, ``rate_limit``, ``overlap_seconds``,
    ``patients_per_request``, ``timeout``, ``detect_deletes``, ``auth`` (an AuthConfig),
    ``retry`` (a RetryConfig), any ``[quirks]`` key; ``screen_terms`` (a ScreenTerms)
    replaces the CAR-T codes read from mappings/ (``connector.extract.source.RunOptions``).
    """
    from connector.extract.source import RunOptions, resolve_source

    return resolve_source(source, site, RunOptions.from_keywords(options)).extract(
        engine, progress)
