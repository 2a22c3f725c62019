"""Fetch the next page while the current one is parsed and stored.

Following ``next`` links one after the other leaves the server idle while the
client handles a page, and the client idle while the server builds the next. A
search therefore asks for page n+1 as soon as page n's ``next`` link is known,
and hands page n on while that request is in flight. One request ahead at most:
the server sees the same requests in the same order as without it, only sooner,
so paging semantics, the rate limit and every bound stay as they were.

The fetch runs in a thread of its own with a copy of the caller's context
(``contextvars``), so context-scoped state (logging filters, a benchmark's
request recorder) follows it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PagePrefetcher(Generic[T]):
    """At most one fetch running ahead; ``result()`` waits for it and re-raises its error.

    Used as a context manager: leaving waits for a fetch still running (each request has
    its own deadline), so no thread outlives the search that started it.
    """

    def __init__(self, name: str = "fhir-prefetch") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._value: T | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> PagePrefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._join()

    def start(self, fetch: Callable[[], T]) -> None:
        """Begin ``fetch()`` in the background; the previous one must have been collected."""
        if self._thread is not None:
            raise RuntimeError("a prefetch is already running")
        context = contextvars.copy_context()
        self._value, self._error = None, None

        def run() -> None:
            try:
                self._value = context.run(fetch)
            except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
                self._error = exc

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()

    def result(self) -> T:
        """The fetched value, or the fetch's exception raised here."""
        if self._thread is None:
            raise RuntimeError("no prefetch was started")
        self._join()
        error, value = self._error, self._value
        self._value = self._error = None
        if error is not None:
            raise error
        return value  # type: ignore[return-value]

    def _join(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
