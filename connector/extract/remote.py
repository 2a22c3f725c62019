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

Searches run concurrently (``concurrency`` workers, one shared rate limit); only
the main thread writes to the database, one transaction per page, so an
interrupted run keeps what it stored and a rerun is idempotent.

Servers without a paging snapshot (the result set is re-queried for every page)
can skip a resource when another is changed or deleted while a search is paged.
After a search of more than one page we therefore ask the server whether anything
in that search changed since it began (``_lastUpdated`` and the total); if so the
search is read again (``MAX_PASSES`` times at most).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import Engine

from connector.codes.labfilter import default_trim
from connector.codes.screen import ScreenTerms, car_t_screen_terms
from connector.extract.records import (
    finish_run,
    load_watermarks,
    save_watermarks,
    start_run,
    stored_ids,
)
from connector.extract.refs import medication_id, subject_patient
from connector.extract.run import ExtractSummary
from connector.extract.store import RawStore, StoreCounts
from connector.fhir.client import (
    Capabilities,
    FhirClient,
    Page,
    UnsafeLink,
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
    PagingError,
    SiteConfigError,
)
from connector.fhir.limits import RunDeadlineExceeded
from connector.fhir.pagesize import choose_page_size
from connector.fhir.redact import describe_params, scrub, sensitive_values
from connector.progress import Progress

log = logging.getLogger(__name__)

MAX_PASSES = 4  # reads of one search while its result set keeps changing
CHUNK_TOKENS = 30  # codes per screening request (keeps URLs short)


def _escape(value: str) -> str:
    """A search value with FHIR's special characters escaped (``,`` ``|`` ``$`` ``\\``)."""
    return re.sub(r"([,|$\\])", r"\\\1", value)


# ---------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One logical search (possibly many pages)."""

    rtype: str
    params: list[tuple[str, str]]
    store: bool = True  # False: a screening search, read for its references only
    chained: bool = False  # uses a chained parameter a server may refuse
    optional: bool = False  # a refusal (HTTP 400) is a warning, not a failure (code:text)

    @property
    def label(self) -> str:
        return f"{self.rtype}?{describe_params(self.params)}"

    def hidden_values(self) -> list[str]:
        """The values of this search that may identify a patient (for scrubbing messages)."""
        return sensitive_values(f"{self.rtype}?{urlencode(self.params)}")


@dataclass
class _Totals:
    fetched: Counter = field(default_factory=Counter)
    searches: Counter = field(default_factory=Counter)
    pages: int = 0
    repaged: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunks_within(items: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    """Batches whose comma-joined length stays within ``max_chars`` (at least one item).

    Used for the change checks of known patients: those searches return almost nothing,
    and a multi-patient search costs a server about the same whatever it returns, so the
    fewer the better, up to what a URL can safely carry."""
    batch: list[str] = []
    used = 0
    for item in items:
        cost = len(item) + (1 if batch else 0)
        if batch and used + cost > max_chars:
            yield batch
            batch, cost, used = [], len(item), 0
        batch.append(item)
        used += cost
    if batch:
        yield batch


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
        self.verify_paging = config.quirks.verify_paging
        self.medication_refs: set[str] = set()
        self.screened = 0
        self._lock = threading.Lock()

    # -- entry ----------------------------------------------------------------

    def run(self) -> ExtractSummary:
        run_id = start_run(self.engine, self.site, self.config.base_url, "rest")
        try:
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
        if self.config.page_size is None:  # the largest page the server accepts
            self.client.page_size = choose_page_size(self.client).size
        self.t0 = self._server_time()
        self.watermarks = load_watermarks(self.engine, self.site, self.mode)
        types = [t for t in self.config.resource_types]
        if self.config.scope == "all":
            # one phase for all types, as for a cohort: while one search waits for the
            # server or the rate limit, the others' pages are read and stored
            self._phase("records", [job for rtype in types for job in self._all_jobs(rtype)])
        else:
            full, incremental = self._patients()
            # one phase for all types: the workers stay busy across types, and a rerun's
            # change checks (one search a type) run side by side instead of in a row
            jobs = [job for rtype in PATIENT_TYPES if rtype in types
                    for job in self._patient_jobs(rtype, full, incremental)]
            self._phase("records", jobs)
            if "Medication" in types:
                self._phase("Medication", self._medication_jobs())
        if self.config.detect_deletes and self.config.quirks.incremental:
            self._deletions(caps, types)
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

    # -- job lists ------------------------------------------------------------

    def _all_jobs(self, rtype: str) -> list[Job]:
        since = self._since(rtype)
        base = [("_lastUpdated", f"gt{since}")] if since else []
        return [Job(rtype, [*base, *extra]) for extra in self._category_params(rtype)]

    def _category_params(self, rtype: str) -> list[list[tuple[str, str]]]:
        cats = self.config.quirks.observation_categories
        if rtype == "Observation" and cats:
            return [[("category", c)] for c in cats]
        return [[]]

    def _patients(self) -> tuple[set[str], set[str]]:
        """(patients to fetch whole, patients to fetch changes of)."""
        known = stored_ids(self.engine, self.site, "Patient")
        if self.config.scope == "patients":
            listed = _read_ids(Path(self.config.patient_ids_file or ""))
            self.screened = len(listed)
            return listed - known, listed & known
        since = self._since(self._screen_key())
        found = self._screen(since)
        self.screened = len(found)
        if since is None:  # a full screen: the new ones whole, the known ones' changes
            return found - known, known
        # an incremental screen finds patients whose CAR-T records changed since the last
        # run: read them whole (they may be new, or left half-read by a failed run)
        return found, known - found

    def _screen(self, since: str | None) -> set[str]:
        """Patients with a CAR-T record (changed since ``since``, when given).

        Here and in every search of a run, ``_lastUpdated`` goes first: some servers
        evaluate parameters in the order given, and on a rerun it is by far the most
        selective (sekmet answers a 85-patient Observation change check in 25 ms instead
        of 120 ms)."""
        terms, quirks = self._terms(), self.config.quirks
        extra = [("_elements", "subject")] if quirks.elements else []
        recent = [("_lastUpdated", f"gt{since}")] if since else []
        jobs: list[Job] = []
        for rtype, codes in (("MedicationAdministration", terms.medication_codes),
                             ("Procedure", terms.procedure_codes)):
            for chunk in _chunks(codes, CHUNK_TOKENS):
                jobs.append(Job(rtype, [*recent, ("code", ",".join(map(_escape, chunk))), *extra],
                                store=False))
                if rtype == "MedicationAdministration" and self.chained_ok:
                    jobs.append(Job(rtype, [*recent,
                                            ("medication.code", ",".join(map(_escape, chunk))),
                                            *extra], store=False, chained=True))
            if quirks.text_search and terms.texts:
                text = ",".join(map(_escape, terms.texts))
                jobs.append(Job(rtype, [*recent, ("code:text", text), *extra], store=False,
                                optional=True))
                if rtype == "MedicationAdministration" and self.chained_ok:
                    jobs.append(Job(rtype, [*recent, ("medication.code:text", text), *extra],
                                    store=False, chained=True, optional=True))
        found: set[str] = set()
        refused = self._phase("screen", jobs, found=found)
        if refused or not self.chained_ok:
            self._screen_medications(found, recent, extra)
        log.info("screen: %d patients with a CAR-T record (%s)", len(found),
                 "changes only" if since else "full")
        return found

    def _screen_medications(self, found: set[str], recent: list[tuple[str, str]],
                            extra: list[tuple[str, str]]) -> None:
        """Without chained search: CAR-T Medication ids first, then who was given them."""
        terms = self._terms()
        med_jobs = [Job("Medication", [("code", ",".join(map(_escape, c)))], store=False)
                    for c in _chunks(terms.medication_codes, CHUNK_TOKENS)]
        if self.config.quirks.text_search and terms.texts:
            med_jobs.append(Job("Medication", [("code:text", ",".join(map(_escape, terms.texts)))],
                                store=False, optional=True))
        med_ids: set[str] = set()
        self._phase("screen", med_jobs, found=med_ids, collect=lambda r: r.get("id"))
        jobs = [Job("MedicationAdministration",
                    [*recent, ("medication", ",".join(f"Medication/{i}" for i in chunk)), *extra],
                    store=False)
                for chunk in _chunks(sorted(med_ids), self.config.patients_per_request)]
        self._phase("screen", jobs, found=found)

    def _patient_jobs(self, rtype: str, full: set[str], incremental: set[str]) -> list[Job]:
        since = self._since(rtype)
        if since is None:
            groups = [(sorted(full | incremental), [])]
        else:
            groups = [(sorted(full), []),
                      (sorted(incremental), [("_lastUpdated", f"gt{since}")])]
        jobs: list[Job] = []
        for ids, recent in groups:
            refs = ids if rtype == "Patient" or self.patient_param == "patient" \
                else [f"Patient/{i}" for i in ids]
            for batch in self._batches(refs, changes_only=bool(recent)):
                if rtype == "Patient":
                    jobs.append(Job(rtype, [*recent, ("_id", ",".join(batch))]))
                    continue
                for cat in self._category_params(rtype):
                    jobs.append(Job(rtype, [*recent, (self.patient_param, ",".join(batch)), *cat]))
        return jobs

    def _batches(self, ids: list[str], *, changes_only: bool) -> Iterator[list[str]]:
        """Full reads go ``patients_per_request`` at a time (their pages carry the data);
        change checks go as many at a time as ``max_query_chars`` allows, unless the server
        takes one patient a search (``patients_per_request = 1``)."""
        if changes_only and self.config.patients_per_request > 1:
            return _chunks_within(ids, self.config.max_query_chars)
        return _chunks(ids, self.config.patients_per_request)

    def _medication_jobs(self) -> list[Job]:
        stored = stored_ids(self.engine, self.site, "Medication")
        since = self._since("Medication")
        wanted = self.medication_refs | (stored if since is None else set())
        new = sorted(wanted - stored) if since is not None else sorted(wanted)
        jobs = [Job("Medication", [("_id", ",".join(b))])
                for b in self._batches(new, changes_only=False)]
        if since is not None:
            jobs += [Job("Medication", [("_lastUpdated", f"gt{since}"), ("_id", ",".join(b))])
                     for b in self._batches(sorted(stored), changes_only=True)]
        return jobs

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
                closing(_run_concurrently(jobs, self._pages, self.config.concurrency)) as items:
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

    def _pages(self, job: Job) -> Iterator[Page]:
        """The pages of one search, read again while its result set changes under it.

        ``floor`` is a server instant before the current read began: the run's start
        for the first read, a fresh reading of the server's clock before each re-read.
        """
        floor = self.t0
        for attempt in range(1, MAX_PASSES + 1):
            first: Page | None = None
            n_pages = 0
            try:
                for page in self.client.search(job.rtype, job.params):
                    if first is None:
                        first = page
                    n_pages += 1
                    yield page
            except PagingError as exc:
                if attempt == MAX_PASSES or isinstance(exc, UnsafeLink):
                    raise
                log.info("%s: %s; reading the search again", job.rtype, exc)
            else:
                if (n_pages <= 1 or first is None or not self.verify_paging
                        or not self._changed(job, first, floor)):
                    return
                log.info("%s: the result set changed while it was paged; reading it again",
                         job.rtype)
            self._count_reread()
            floor = self.client.server_time(job.rtype) or floor
        raise ExtractError(f"{job.rtype}: the result set kept changing while it was paged "
                           f"({MAX_PASSES} reads)")

    def _count_reread(self) -> None:
        with self._lock:
            self.totals.repaged += 1

    def _changed(self, job: Job, first: Page, floor: str) -> bool:
        """Whether the search's result set changed since its first page: a resource updated
        or created since (``_lastUpdated``), or a different total (deletions)."""
        since = floor
        if first.server_time:
            # the first page's own stamp, less a margin for the time between the server's
            # query and its stamp
            since = max(since, shift_instant(first.server_time, -1.0))
        try:
            if self.config.quirks.incremental and self.client.count(
                    job.rtype, [("_lastUpdated", f"gt{since}"), *job.params]):
                return True
            if first.total is None:
                return False
            return self.client.count(job.rtype, job.params) != first.total
        except HttpError as exc:
            if exc.status is None or not 400 <= exc.status < 500 or exc.status in (401, 403):
                raise
            if self.verify_paging:
                log.warning("%s: the server refuses _summary=count (%s); multi-page searches "
                            "are not checked for changes during paging", job.rtype, exc)
            self.verify_paging = False
            return False

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

    # -- deletions ------------------------------------------------------------

    def _deletions(self, caps: Capabilities, types: list[str]) -> None:
        """Mark stored resources the server's history reports deleted since the watermark.

        The types' histories are read side by side (each is one short read on a run with
        few changes); the marks are written one type at a time."""
        wanted: dict[str, str] = {}
        for rtype in types:
            since = self._since(rtype)
            if since is None:
                continue
            if not caps.history_type(rtype):
                log.info("%s: the server offers no history; deletions are not detected", rtype)
                continue
            wanted[rtype] = since
        if not wanted:
            return
        workers = max(1, min(self.config.concurrency, len(wanted)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fhir") as pool:
            histories = dict(zip(wanted, pool.map(self._history, wanted, wanted.values()),
                                 strict=True))
        for rtype, latest in histories.items():
            gone = sorted(rid for rid, (_key, deleted) in latest.items() if deleted)
            if not gone:
                continue
            with self.engine.begin() as conn:
                store = RawStore(conn)
                store.counts = self.counts
                for rid in gone:
                    store.mark_deleted(site=self.site, resource_type=rtype, resource_id=rid,
                                       source=f"{rtype}/_history")
            log.info("%s: %d deletions reported by the server, %d of them stored here", rtype,
                     len(gone), self.counts.deleted[rtype])

    def _history(self, rtype: str, since: str) -> dict[str, tuple[tuple, bool]]:
        """Newest history entry per id since ``since``: (ordering key, is a deletion)."""
        latest: dict[str, tuple[tuple, bool]] = {}
        floor = _instant_key(since)
        for page in self.client.history(rtype, since):
            recent = 0
            for entry in page.bundle.get("entry") or []:
                parsed = _history_entry(entry, rtype)
                if parsed is None:
                    continue
                rid, when, version, deleted = parsed
                if when is not None and when < floor:
                    continue
                recent += 1
                key = (when or floor, version)
                if rid not in latest or key >= latest[rid][0]:
                    latest[rid] = (key, deleted)
            if not recent and page.bundle.get("entry"):
                break  # newest first, and this whole page is older than the watermark
        return latest

    # -- run record -----------------------------------------------------------

    def _summary_text(self) -> str:
        stats = self.client.stats
        parts = [f"scope={self.config.scope}"]
        if self.config.scope != "all":
            parts.append(f"{self.screened} patients screened")
        parts += [f"{stats.requests} requests", f"{self.totals.pages} pages",
                  f"{self.totals.repaged} re-reads", f"page_size={self.client.page_size}",
                  f"rate_limit={self.config.rate_limit:g}"]
        if stats.reauths:
            parts.append(f"{stats.reauths} re-authentications")
        return "; ".join(parts)

    def _finish(self, run_id: int, *, status: str, message: str) -> None:
        finish_run(self.engine, run_id, self.counts, status=status, message=message,
                   retries=self.client.stats.retries, errors=self.totals.failed,
                   fetched=self.totals.fetched, types=self.config.resource_types)


# --------------------------------------------------------------- concurrency

_DONE = object()


def _run_concurrently(jobs: list[Job], pages: Callable[[Job], Iterator[Page]],
                      workers: int) -> Iterator[tuple[Job, Page | BaseException]]:
    """Pages of all ``jobs`` as they arrive (workers fetch, the caller stores).

    A bounded queue gives back-pressure; a failed job yields its exception. When the
    caller stops early (an exception), workers are told to stop and drained.
    """
    results: queue.Queue = queue.Queue(maxsize=max(2, workers * 2))
    stop = threading.Event()

    def work(job: Job) -> None:
        try:
            for page in pages(job):
                if stop.is_set():
                    return
                results.put((job, page))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            results.put((job, exc))
        finally:
            results.put((job, _DONE))

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))),
                              thread_name_prefix="fhir")
    futures = [pool.submit(work, job) for job in jobs]
    remaining = len(jobs)
    try:
        while remaining:
            job, item = results.get()
            if item is _DONE:
                remaining -= 1
                continue
            yield job, item
    finally:
        if remaining:  # the caller stopped early: stop the workers, unblock their puts
            stop.set()
            for f in futures:
                f.cancel()
            while not all(f.done() for f in futures):
                try:
                    results.get(timeout=0.05)
                except queue.Empty:
                    pass
        pool.shutdown(wait=True)


# ------------------------------------------------------------------- storage


def _bodies_key() -> str:
    """Watermark key of the Observation filter in force (connector.codes.labfilter)."""
    trim = default_trim()
    return f"bodies:{trim.digest if trim else 'all'}"


def _read_ids(path: Path) -> set[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SiteConfigError(f"cannot read patient_ids_file {path}: {exc.strerror}") from None
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _instant_key(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _history_entry(entry: Any, rtype: str) -> tuple[str, dt.datetime | None, int, bool] | None:
    """(id, when, version, is deletion) of one history entry, or None if unreadable."""
    if not isinstance(entry, dict):
        return None
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
    resource = entry.get("resource") if isinstance(entry.get("resource"), dict) else None
    rid = resource.get("id") if resource else None
    if not rid:
        for url in (request.get("url"), entry.get("fullUrl")):
            m = re.search(rf"(?:^|/){rtype}/([A-Za-z0-9\-.]{{1,64}})", str(url or ""))
            if m:
                rid = m.group(1)
                break
    if not rid:
        return None
    deleted = str(request.get("method", "")).upper() == "DELETE" or (
        resource is None and str(response.get("status", "")).startswith(("204", "410")))
    when_text = response.get("lastModified") or (
        (resource or {}).get("meta", {}).get("lastUpdated") if resource else None)
    when = None
    if when_text:
        try:
            when = _instant_key(to_instant(str(when_text)) or "")
        except ValueError:
            when = None
    version = 0
    etag = str(response.get("etag") or "")
    digits = re.findall(r"\d+", etag) or re.findall(
        r"\d+", str((resource or {}).get("meta", {}).get("versionId", "")))
    if digits:
        version = int(digits[0])
    return str(rid), when, version, deleted


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
