"""A FHIR R4 REST client for extraction: searches, paging, capabilities, the server's clock.

Requests themselves (session, auth, retries, bounds, errors) are ``transport.py``'s;
this module is what the requests are for.

- Searches send ``_count`` and follow ``Bundle.link[next]`` exactly as the server
  gave it; page URLs are never built here. A next link that leaves the base URL's
  origin, as the HTTP library will connect (``urls.py``), is refused rather than sent
  our credentials.
- A page bound per search (``limits.py``); a search that ends short of its
  ``Bundle.total`` fails instead of passing as complete.
- One page ahead (``prefetch.py``): the next page is asked for while this one is handled.
- ``capabilities()`` reads the CapabilityStatement; ``Capabilities.require`` explains
  what is missing in one clear error.
- Searches ask for fresh results (``Cache-Control: no-cache``: HAPI otherwise reuses a
  cached search for a minute) and, by default, strict handling, so that a parameter the
  server does not know is an error instead of a silently wider result.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence

from connector.fhir.capabilities import Capabilities, TypeCapability
from connector.fhir.errors import CapabilityError, HttpError, PagingError
from connector.fhir.limits import SearchTally, Watch
from connector.fhir.prefetch import Fetcher, Offer, PagePrefetcher
from connector.fhir.redact import describe_url
from connector.fhir.results import (
    ClientStats,
    Page,
    next_link_in_prefix,
    outcome_text,
    shift_instant,
    to_instant,
    to_page,
)
from connector.fhir.transport import (
    DEFAULT_PAGE_SIZE,
    FHIR_JSON,
    USER_AGENT,
    Transport,
    redirect_error,
)
from connector.fhir.urls import UnsafeUrl, follow

log = logging.getLogger(__name__)


class FhirClient(Transport):
    """Talks to one FHIR server for one run. Thread-safe: workers share it."""

    #: the CapabilityStatement, once read
    _capabilities: Capabilities | None = None

    # -- capabilities -------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """The server's CapabilityStatement (read once per client)."""
        if self._capabilities is None:
            try:
                body, _ = self.get_json(self.url("metadata"))
            except HttpError as exc:
                raise CapabilityError(f"cannot read the CapabilityStatement of {self.base_url}: "
                                      f"{exc}") from None
            if body.get("resourceType") != "CapabilityStatement":
                raise CapabilityError(f"{self.base_url}/metadata did not return a "
                                      "CapabilityStatement: is base_url a FHIR server's base?")
            self._capabilities = Capabilities(body)
        return self._capabilities

    # -- search -------------------------------------------------------------

    def search_headers(self) -> dict[str, str]:
        """The headers every search sends (``Prefer: handling=strict`` when strict)."""
        return self._search_headers()

    def _search_headers(self) -> dict[str, str]:
        headers = {"Cache-Control": "no-cache"}
        if self.strict:
            headers["Prefer"] = "handling=strict"
        return headers

    def search(self, rtype: str, params: Sequence[tuple[str, str]] = (), *,
               count: int | None = None) -> Iterator[Page]:
        """Pages of ``rtype?params``, following next links as given until there are none.

        One page ahead (prefetch.py): page n+1 is asked for while the caller handles
        page n, as soon as its link has arrived in page n's answer. Every next link is
        checked (origin, loop, page bound) before it is asked for, early or not; a
        refused one is raised after the page that carries it, as before."""
        query = list(params)
        if not any(k == "_count" for k, _ in query):
            query.append(("_count", str(count or self.page_size)))
        headers = self._search_headers()
        tally = SearchTally(rtype, self.limits.max_pages)
        seen: set[str] = set()

        def early(found: str, offer: Offer) -> None:
            """A next link read before its page arrived whole: offered if it passes the
            checks it will meet when the page is parsed (with the page not yet counted)."""
            try:
                nxt = self._check_next(found)
            except PagingError:
                return
            if nxt not in seen and tally.pages + 1 < tally.allowed_pages():
                offer(nxt, fetcher(nxt))

        def fetcher(url: str, first: bool = False) -> Fetcher:
            def fetch(offer: Offer) -> Page:
                watch = _NextLinkWatch(lambda found: early(found, offer))
                if first:
                    return self._page(self.url(rtype), query, headers, watch)
                return self._next_page(rtype, url, headers, watch)
            return fetch

        with PagePrefetcher[Page]() as ahead:
            ahead.start(fetcher("", first=True))
            while True:
                page = ahead.result()
                tally.add(len(page.resources), page.total)
                try:
                    nxt = self._next_of(rtype, page, seen, tally)
                except PagingError:
                    ahead.drop()
                    yield page
                    raise
                if nxt is None:
                    ahead.drop()
                elif not ahead.adopt(nxt):
                    ahead.start(fetcher(nxt))
                yield page
                if nxt is None:
                    break
        tally.finish()

    def _next_of(self, rtype: str, page: Page, seen: set[str],
                 tally: SearchTally) -> str | None:
        """The next page's URL after the checks (origin, loop, page bound), or None."""
        if not page.next_url:
            return None
        nxt = self._check_next(page.next_url)
        if nxt in seen:
            raise PagingError(f"{rtype}: the server's next link points back to a page "
                              "already read")
        seen.add(nxt)
        tally.check_next()
        return nxt

    def _next_page(self, rtype: str, url: str, headers: dict[str, str],
                   watch: Watch | None = None) -> Page:
        try:
            return self._page(url, None, headers, watch)
        except HttpError as exc:
            if exc.status in (404, 410):
                raise PagingError(f"{rtype}: a next page is gone (HTTP {exc.status}); "
                                  "the server's paging expired", status=exc.status) from None
            raise

    def count(self, rtype: str, params: Sequence[tuple[str, str]] = ()) -> int | None:
        """How many resources match (``_summary=count``), or None if the server won't say."""
        body, _ = self.get_json(self.url(rtype), [*params, ("_summary", "count")],
                                self._search_headers())
        total = body.get("total")
        return total if isinstance(total, int) else None

    def server_time(self, probe_type: str = "Patient") -> str | None:
        """The server's clock now, as an instant: from a cheap search's Bundle.meta.lastUpdated,
        else its HTTP Date header (whole seconds, rounded down). Servers that refuse the
        search (``_summary=count`` is not universal) are asked for their metadata instead."""
        try:
            body, r = self.get_json(self.url(probe_type), [("_summary", "count")],
                                    self._search_headers())
        except HttpError as exc:
            if exc.status is None or not 400 <= exc.status < 500 or exc.status in (401, 403):
                raise
            _, r = self.get_json(self.url("metadata"), headers={"Cache-Control": "no-cache"})
            return to_instant(r.headers.get("Date"))
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        stamp = to_instant(meta.get("lastUpdated"))
        header = to_instant(r.headers.get("Date"))
        if stamp and header:
            # a cached search can carry an old stamp; a far-off one is not the clock
            gap = abs((_parse(stamp) - _parse(header)).total_seconds())
            return stamp if gap < 300 else header
        return stamp or header

    def history(self, rtype: str, since: str) -> Iterator[Page]:
        """Pages of ``rtype/_history?_since=`` (deletions show as entries without a resource)."""
        page = self._page(self.url(f"{rtype}/_history"),
                          [("_since", since), ("_count", str(self.page_size))], {})
        tally = SearchTally(f"{rtype}/_history", self.limits.max_pages)
        tally.add(len(page.bundle.get("entry") or []), page.total)
        yield page
        seen: set[str] = set()
        while page.next_url:
            nxt = self._check_next(page.next_url)
            if nxt in seen:
                return
            seen.add(nxt)
            tally.check_next()
            page = self._page(nxt, None, {})
            tally.add(len(page.bundle.get("entry") or []), page.total)
            yield page

    def _check_next(self, next_url: str) -> str:
        try:
            return follow(next_url, self.base_url, what="next link")
        except UnsafeUrl as exc:
            raise UnsafeLink(str(exc)) from None

    def _page(self, url: str, params: Sequence[tuple[str, str]] | None,
              headers: dict[str, str], watch: Watch | None = None) -> Page:
        body, _ = self.get_json(url, params, headers, watch=watch)
        if body.get("resourceType") != "Bundle":
            raise HttpError(f"GET {describe_url(url, self.base_url)}: expected a Bundle, "
                            f"got {body.get('resourceType')}")
        return to_page(body)


class _NextLinkWatch:
    """Looks for a searchset's next link in its answer as the answer arrives
    (``results.next_link_in_prefix``) and hands it to ``found`` once."""

    def __init__(self, found: Callable[[str], None]) -> None:
        self.found = found

    def __call__(self, prefix: bytearray) -> bool:
        decided, url = next_link_in_prefix(prefix)
        if url:
            try:
                self.found(url)
            except Exception:  # noqa: BLE001 - a hint only; the parsed page decides
                log.debug("early next link not used", exc_info=True)
        return decided


class UnsafeLink(PagingError):
    """A next link we will not follow (another origin, or a deceptive shape): reading the
    search again would meet the same link, so the search fails at once."""


def _parse(instant: str) -> dt.datetime:
    return dt.datetime.fromisoformat(instant.replace("Z", "+00:00"))


#: Names other modules import from here (the client's results and capabilities live in
#: results.py and capabilities.py, its requests in transport.py).
__all__ = ["DEFAULT_PAGE_SIZE", "FHIR_JSON", "USER_AGENT", "Capabilities", "ClientStats",
           "FhirClient", "Page", "Transport", "TypeCapability", "UnsafeLink", "outcome_text",
           "redirect_error", "shift_instant", "to_instant", "to_page"]
