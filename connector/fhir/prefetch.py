"""Fetch the next page while the current one is received, parsed and stored.

Following ``next`` links one after the other leaves the server idle while the
client reads, parses and handles a page, and the client idle while the server
builds the next. A search therefore asks for page n+1 as soon as its link is known
and the caller is done with page n-1:

- the link is usually known before page n has even arrived whole: servers write
  ``Bundle.link`` before ``Bundle.entry`` (FHIR's element order), so the reader of
  page n offers page n+1 (``offer``) as soon as the links have come in
  (``results.next_link_in_prefix``), checked as every next link is;
- the caller is done with page n-1 when it asks for page n (``result``): only then
  does an offered fetch start. So at most one page is asked for beyond the one the
  caller waits for or holds, as before; only the moment moves earlier.

When page n is parsed whole, its ``next`` link is checked as always and must be the
one offered (``adopt``); otherwise the early fetch is dropped (waited for, its answer
discarded) and the right page is asked for. The server sees the same requests in the
same order as without look-ahead, only sooner; paging checks, the rate limit and
every bound stay as they were.

Each fetch runs in a thread of its own with a copy of the context it was started
from (``contextvars``), so context-scoped state (logging filters, a benchmark's
request recorder) follows it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: How a fetch offers the page after its own: ``offer(key, fetcher)``.
Offer = Callable[[str, "Fetcher"], None]
#: A fetch: called with its ``Offer`` (to use once the next link is known), returns the page.
Fetcher = Callable[[Offer], T]


class _Fetch(Generic[T]):
    """One fetch in a thread of its own, and the page after it that it offered."""

    def __init__(self, key: str | None, fetcher: Fetcher, owner: PagePrefetcher[T]) -> None:
        self.key = key
        self.offered: tuple[str, Fetcher] | None = None
        self.offer_taken = False  # its offered page was started (a second offer is ignored)
        self.value: T | None = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()

        def offer(next_key: str, next_fetcher: Fetcher) -> None:
            owner._offer(self, next_key, next_fetcher)  # noqa: SLF001 - its own prefetcher

        def run() -> None:
            try:
                self.value = context.run(fetcher, offer)
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
                self.error = exc

        self.thread = threading.Thread(target=run, name=owner.name, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()

    def result(self) -> T:
        self.join()
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class PagePrefetcher(Generic[T]):
    """The next page's fetch (``start``), and the one after it that fetch offers early;
    ``result()`` waits for the next page.

    Used as a context manager: leaving waits for every fetch still running (each request
    has its own deadline), so no thread outlives the search that started it.
    """

    def __init__(self, name: str = "fhir-prefetch") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._current: _Fetch[T] | None = None
        self._early: _Fetch[T] | None = None
        self._caller_waits = False

    def __enter__(self) -> PagePrefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            fetches = [self._current, self._early]
            self._current = self._early = None
        for fetch in fetches:
            if fetch is not None:
                fetch.join()

    def start(self, fetcher: Fetcher) -> None:
        """Begin ``fetcher(offer)`` in the background; the previous one must have been
        collected (``result``) and any early one adopted or dropped."""
        if self._current is not None or self._early is not None:
            raise RuntimeError("a prefetch is already running")
        self._current = _Fetch(None, fetcher, self)

    def result(self) -> T:
        """The next page, or its fetch's exception raised here. While it is awaited, the
        page after it may start, if its fetch has offered it."""
        current = self._current
        if current is None:
            raise RuntimeError("no prefetch was started")
        with self._lock:
            self._caller_waits = True
            self._start_offered()
        try:
            return current.result()
        finally:
            with self._lock:
                self._caller_waits = False
                self._current = None

    def adopt(self, key: str) -> bool:
        """Make the early fetch of ``key`` the next page's fetch (True). An early fetch of
        any other page is dropped (waited for, its answer discarded) and False says the
        caller must ``start`` the page itself."""
        with self._lock:
            early, self._early = self._early, None
            if early is not None and early.key == key:
                self._current = early
                return True
        if early is not None:
            early.join()
        return False

    def drop(self) -> None:
        """Drop any early fetch (the search ends or fails here)."""
        self.adopt("")

    def _offer(self, source: _Fetch[T], key: str, fetcher: Fetcher) -> None:
        """``source`` knows the page after its own: ``key``. Started at once if the caller
        waits for ``source``'s page, else kept until it does (the first offer counts: a
        retried read offers again)."""
        with self._lock:
            if source.offered is None and not source.offer_taken:
                source.offered = (key, fetcher)
                self._start_offered()

    def _start_offered(self) -> None:
        """(Under the lock.) Start what the fetch the caller waits for has offered."""
        current = self._current
        if (self._caller_waits and current is not None and self._early is None
                and current.offered is not None):
            key, fetcher = current.offered
            current.offered, current.offer_taken = None, True
            self._early = _Fetch(key, fetcher, self)
