"""Bounds on what a server can make a run do: time per request, time per run, bytes per
answer, pages per search, and the check that a search delivered what it announced.

A hostile or broken server can otherwise hold a run (and its site lock) forever or
exhaust memory: a ``next`` link that is new on every page, an answer dripped one byte
a second (each read finishes within the socket timeout), a 300 MB body. And a server
that drops a ``next`` link ends a search early without any error. Each bound fails
with a message naming the setting that governs it (docs/operations.md lists them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
import urllib3.exceptions

from connector.fhir.errors import FhirSourceError, HttpError, PagingError
from connector.fhir.retry import TransientError

READ_CHUNK = 1 << 16
MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """The bounds of one run (site config keys of the same names)."""

    request_deadline: float = 300.0  # seconds for one request, its whole answer included
    run_deadline: float = 86400.0  # seconds for the whole run
    max_body_mb: float = 100.0  # largest answer read into memory (search pages, manifests)
    max_pages: int = 100_000  # pages of one search when the server gives no total

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * MB)


class RunDeadlineExceeded(FhirSourceError):
    """The run went past ``run_deadline``; what it stored is kept, no watermark moves."""


class BodyTooLarge(HttpError):
    """An answer was larger than ``max_body_mb`` (it was not read to its end)."""


@dataclass
class RunClock:
    """The run's deadline, checked before every request."""

    limit: float
    started: float = field(default_factory=time.monotonic)

    def check(self, what: str) -> None:
        if time.monotonic() - self.started > self.limit:
            raise RunDeadlineExceeded(
                f"the run went past its time limit ({self.limit:g} s, run_deadline in the "
                f"site config) before {what}; what it stored is kept, no watermark moved")

    def remaining(self) -> float:
        return self.limit - (time.monotonic() - self.started)


#: Called with the bytes of an answer read so far, after each read, until it returns True
#: (``FhirClient.search`` looks for the next link there while the rest arrives).
Watch = Callable[[bytearray], bool]


def read_body(r: requests.Response, limits: Limits, what: str, started: float,
              watch: Watch | None = None) -> bytes:
    """The whole body of a streamed answer within the request deadline and size limit.

    Reads with ``read1`` (whatever has arrived, up to a chunk), so an answer dripped a
    byte at a time is stopped at the deadline instead of after each read's timeout.
    The bytes counted are the decoded ones: a small gzip that inflates past the limit
    is stopped too. On any failure the connection is closed, never reused. ``watch``
    sees the body as it grows, only for successful (2xx) answers."""
    if not 200 <= r.status_code < 300:
        watch = None
    max_bytes = limits.max_body_bytes
    declared = r.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        r.close()
        raise BodyTooLarge(_too_large(what, limits, int(declared)), status=r.status_code)
    buf = bytearray()
    try:
        while True:
            if time.monotonic() - started > limits.request_deadline:
                raise TransientError(
                    f"the answer took longer than {limits.request_deadline:g} s "
                    "(request_deadline in the site config)", status=r.status_code)
            chunk = r.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            buf += chunk
            if len(buf) > max_bytes:
                raise BodyTooLarge(_too_large(what, limits), status=r.status_code)
            if watch is not None and watch(buf):
                watch = None
    except BaseException:
        r.close()
        raise
    r.raw.release_conn()
    return bytes(buf)


def _too_large(what: str, limits: Limits, size: int | None = None) -> str:
    said = f" ({size / MB:.0f} MB)" if size is not None else ""
    return (f"{what}: the answer is larger than {limits.max_body_mb:g} MB{said}; not read "
            "(max_body_mb in the site config; a smaller page_size keeps pages small)")


def bounded_response(r: requests.Response, limits: Limits, what: str, started: float,
                     watch: Watch | None = None) -> requests.Response:
    """``r`` (streamed) with its body read under ``read_body``'s bounds into ``r.content``.

    Protocol errors while reading (a body cut short) surface as requests' own
    exceptions, which the retry policy knows."""
    try:
        content = read_body(r, limits, what, started, watch)
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    r._content = content  # noqa: SLF001 - what requests itself stores for .content
    r._content_consumed = True  # noqa: SLF001
    return r


@dataclass
class SearchTally:
    """What one search has read so far, against what its first page announced.

    ``allowed_pages`` follows from ``Bundle.total`` and the first page's size (plus two
    for a trailing empty page and a page that shifted while the search was read); without
    a total, ``max_pages`` applies. ``finish`` fails a search that ended short of its
    total: a page that lost its ``next`` link would otherwise end it silently."""

    label: str
    max_pages: int
    total: int | None = None
    pages: int = 0
    matches: int = 0
    per_page: int = 0

    def add(self, matches: int, total: int | None) -> None:
        self.pages += 1
        self.matches += matches
        if self.pages == 1:
            self.total = total
            self.per_page = matches

    def allowed_pages(self) -> int:
        if self.total is None:
            return self.max_pages
        if self.total == 0:
            return 2
        per_page = self.per_page or 1
        return min(self.max_pages, math.ceil(self.total / per_page) + 2)

    def check_next(self) -> None:
        """Raise before reading a page past the bound."""
        allowed = self.allowed_pages()
        if self.pages >= allowed:
            why = (f"its total of {self.total} at {self.per_page} a page allows {allowed}"
                   if self.total is not None else f"max_pages in the site config is {allowed}")
            raise PagingError(f"{self.label}: the server's next links go on past {self.pages} "
                              f"pages ({why}); stopping")

    def finish(self) -> None:
        if self.total is not None and self.matches < self.total:
            raise PagingError(
                f"{self.label}: the server announced {self.total} matches but its pages "
                f"held {self.matches} (a page without its next link?); the search is "
                "incomplete")
