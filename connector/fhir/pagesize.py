"""The largest page size a server accepts, found by asking once.

A REST extraction of a whole site spends most of its time in per-page costs:
each request pays a round trip, the rate limit's token and, on many servers, a
sort of the whole result set. Pages as large as the server allows cut all
three. FHIR R4 has no CapabilityStatement element for the largest ``_count``,
and servers clamp a larger one silently (sekmet and HAPI at 1,000, others at
other values), so a run that was not given ``page_size`` asks for a big page
once and reads what the server did:

- the ``_count`` in the ``next`` (or ``self``) link of the answer, which most
  servers write with the value they applied;
- otherwise, with a ``next`` link, the number of entries the page holds;
- without a ``next`` link everything fit: the server took at least what it
  returned, and the asked-for size is used (it clamps again if it must).

The answer is capped at ``ceiling``: a page is parsed whole in memory and up to
two pages per worker wait to be stored, so very large pages cost memory for
little more speed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector.fhir.errors import HttpError

log = logging.getLogger(__name__)

#: The largest page an automatic choice takes (see the module doc).
CEILING = 1000
#: Used when the probe says nothing useful (an error, an empty answer).
FALLBACK = 200


@dataclass(frozen=True)
class PageSizeProbe:
    """What the probe found: the size to use and where it came from (for the run log)."""

    size: int
    how: str


def probe_page_size(client: Any, rtype: str = "Observation", *, ceiling: int = CEILING,
                    fallback: int = FALLBACK) -> PageSizeProbe:
    """Ask ``rtype?_count=ceiling&_elements=id`` once and read the size the server applied.

    ``_elements=id`` keeps the answer small; a server that ignores it only sends more.
    A server that refuses the probe (a 4xx) gets ``fallback``; other errors propagate,
    as they would for the run's first search."""
    params = [("_count", str(ceiling)), ("_elements", "id")]
    try:
        body, _ = client.get_json(client.url(rtype), params, client.search_headers())
    except HttpError as exc:
        if exc.status is None or not 400 <= exc.status < 500 or exc.status in (401, 403):
            raise
        return PageSizeProbe(fallback, f"the server refused a _count probe (HTTP {exc.status})")
    return read_page_size(body, ceiling=ceiling, fallback=fallback)


def read_page_size(bundle: Any, *, ceiling: int, fallback: int = FALLBACK) -> PageSizeProbe:
    """The page size a searchset Bundle answered to ``_count=ceiling`` shows."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return PageSizeProbe(fallback, "the probe did not return a Bundle")
    links = {str(link.get("relation")): str(link.get("url") or "")
             for link in bundle.get("link") or [] if isinstance(link, dict)}
    for relation in ("next", "self"):
        applied = _count_in(links.get(relation, ""))
        if applied is not None and applied > 0:
            return PageSizeProbe(min(applied, ceiling), f"_count in the {relation} link")
    entries = len([e for e in bundle.get("entry") or [] if isinstance(e, dict)])
    if links.get("next"):
        if entries > 0:
            return PageSizeProbe(min(entries, ceiling), "entries of a page with a next link")
        return PageSizeProbe(fallback, "an empty page with a next link")
    return PageSizeProbe(ceiling, "every match fit on one page")


def _count_in(url: str) -> int | None:
    if not url:
        return None
    for key, value in parse_qsl(urlsplit(url).query):
        if key == "_count":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def choose_page_size(client: Any, rtype: str = "Patient") -> PageSizeProbe:
    """The page size for a run whose config sets none, logged with how it was found.

    Patient is asked: every run reads it, and a type whose matches all fit on one page
    still shows that the server took the ceiling."""
    probe = probe_page_size(client, rtype)
    log.info("page size %d (%s)", probe.size, probe.how)
    return probe
