"""The concurrent runner of a REST run: searches read side by side, pages checked.

Searches run concurrently (``concurrency`` workers, one shared rate limit in the
client); only the caller's thread writes to the database. Servers without a paging
snapshot (the result set is re-queried for every page) can skip a resource when
another is changed or deleted while a search is paged, so after a search of more
than one page ``Pager`` asks the server whether anything in that search changed
since it began (``_lastUpdated`` and the total); if so the search is read again
(``MAX_PASSES`` times at most).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from connector.extract.rest_jobs import Job
from connector.fhir.client import FhirClient, Page, UnsafeLink, shift_instant
from connector.fhir.errors import ExtractError, HttpError, PagingError

log = logging.getLogger(__name__)

MAX_PASSES = 4  # reads of one search while its result set keeps changing


class Pager:
    """Reads one search's pages, again while its result set changes under it."""

    def __init__(self, client: FhirClient, *, verify: bool, incremental: bool) -> None:
        self.client = client
        self.verify_paging = verify  # off once the server refuses _summary=count
        self.incremental = incremental  # the server filters by _lastUpdated
        self.floor = ""  # a server instant before the run began (its t0)
        self.rereads = 0
        self._lock = threading.Lock()

    def pages(self, job: Job) -> Iterator[Page]:
        """The pages of one search, read again while its result set changes under it.

        ``floor`` is a server instant before the current read began: the run's start
        for the first read, a fresh reading of the server's clock before each re-read.
        """
        floor = self.floor
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
            self.rereads += 1

    def _changed(self, job: Job, first: Page, floor: str) -> bool:
        """Whether the search's result set changed since its first page: a resource updated
        or created since (``_lastUpdated``), or a different total (deletions)."""
        since = floor
        if first.server_time:
            # the first page's own stamp, less a margin for the time between the server's
            # query and its stamp
            since = max(since, shift_instant(first.server_time, -1.0))
        try:
            if self.incremental and self.client.count(
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


_DONE = object()


def run_concurrently(jobs: list[Job], pages: Callable[[Job], Iterator[Page]],
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
