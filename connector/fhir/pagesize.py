"""The page size of a run: the largest the server accepts, unless the config sets one.

A REST extraction of a whole site spends most of its time in per-page costs:
each request pays a round trip, the rate limit's token and, on many servers, a
sort of the whole result set. Pages as large as the server allows cut all
three. The size is chosen once per run (``choose_page_size``), in this order:

1. ``page_size`` in the site config, lowered to the server's stated maximum if
   the CapabilityStatement states a smaller one; never more than the config says.
2. The maximum the CapabilityStatement states (``Capabilities.max_page_size``: an
   extension named for it, or the ``_count`` parameter's documentation), up to
   ``CEILING``. FHIR R4 has no element for it, so most statements say nothing.
3. A probe: one search for a big page, reading what the server did. Servers clamp
   a larger ``_count`` silently (sekmet and HAPI at 1,000, others lower) or refuse
   it (HTTP 400), so the probe asks ``Patient?_count=1000&_elements=id`` and reads

   - the ``_count`` in the ``next`` (or ``self``) link of the answer, which most
     servers write with the value they applied;
   - otherwise, with a ``next`` link, the number of entries the page holds;
   - without a ``next`` link everything fit: the server took at least what it
     returned, and the asked-for size is used (it clamps again if it must).

   A refusal is asked again without ``_elements`` (a strict server may refuse that
   parameter rather than the size), then with the smaller sizes of ``STEPS``; a
   server that refuses them all gets ``FALLBACK`` and the run's own searches say why.

The answer is capped at ``CEILING``: a page is parsed whole in memory and a few pages
per worker wait to be stored (rest_runner.py), so very large pages cost memory for
little more speed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connector.fhir.capabilities import Capabilities
from connector.fhir.errors import HttpError

log = logging.getLogger(__name__)

#: The largest page an automatic choice takes (see the module doc).
CEILING = 1000
#: The smaller sizes asked in turn while the server refuses the larger ones.
STEPS = (500, 200, 100)
#: Used when the probe says nothing useful (an error, an empty answer, every size refused).
FALLBACK = 200


@dataclass(frozen=True)
class PageSizeProbe:
    """What the choice found: the size to use and where it came from (for the run log)."""

    size: int
    how: str


def choose_page_size(client: Any, caps: Capabilities | None = None,
                     configured: int | None = None, rtype: str = "Patient") -> PageSizeProbe:
    """The page size of a run (see the module doc), logged with how it was found.

    Patient is probed: every run reads it, and a type whose matches all fit on one page
    still shows that the server took the size asked for."""
    stated = caps.max_page_size() if caps is not None else None
    if configured is not None:
        choice = PageSizeProbe(configured, "page_size in the site config")
        if stated is not None and stated[0] < configured:
            choice = PageSizeProbe(stated[0], f"page_size {configured} in the site config, "
                                              f"lowered to the server's maximum ({stated[1]})")
    elif stated is not None:
        choice = PageSizeProbe(min(stated[0], CEILING), f"the CapabilityStatement: {stated[1]}")
    else:
        choice = probe_page_size(client, rtype)
    log.info("page size %d (%s)", choice.size, choice.how)
    return choice


def probe_page_size(client: Any, rtype: str = "Patient", *, ceiling: int = CEILING,
                    fallback: int = FALLBACK) -> PageSizeProbe:
    """Ask ``rtype?_count=ceiling&_elements=id`` and read the size the server applied;
    after a refusal (a 4xx), ask again as the module doc says.

    ``_elements=id`` keeps the answer small; a server that ignores it only sends more.
    Errors other than a refusal propagate, as they would for the run's first search."""
    attempts = [(ceiling, True), (ceiling, False),
                *((size, False) for size in STEPS if size < ceiling)]
    refused: list[str] = []
    for size, elements in attempts:
        params = [("_count", str(size))] + ([("_elements", "id")] if elements else [])
        try:
            body, _ = client.get_json(client.url(rtype), params, client.search_headers())
        except HttpError as exc:
            if exc.status is None or not 400 <= exc.status < 500 or exc.status in (401, 403):
                raise
            refused.append(f"_count={size}{'&_elements=id' if elements else ''} "
                           f"(HTTP {exc.status})")
            continue
        found = read_page_size(body, asked=size, fallback=fallback)
        if refused:
            found = PageSizeProbe(found.size, f"{found.how}; refused before: "
                                              f"{', '.join(refused)}")
        return found
    return PageSizeProbe(fallback, f"the server refused every _count probe: {refused[-1]}")


def read_page_size(bundle: Any, *, asked: int, fallback: int = FALLBACK) -> PageSizeProbe:
    """The page size a searchset Bundle answered to ``_count=asked`` shows."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return PageSizeProbe(fallback, "the probe did not return a Bundle")
    links = {str(link.get("relation")): str(link.get("url") or "")
             for link in bundle.get("link") or [] if isinstance(link, dict)}
    for relation in ("next", "self"):
        applied = _count_in(links.get(relation, ""))
        if applied is not None and applied > 0:
            return PageSizeProbe(min(applied, asked), f"_count in the {relation} link")
    entries = len([e for e in bundle.get("entry") or [] if isinstance(e, dict)])
    if links.get("next"):
        if entries > 0:
            return PageSizeProbe(min(entries, asked), "entries of a page with a next link")
        return PageSizeProbe(fallback, "an empty page with a next link")
    return PageSizeProbe(asked, "every match fit on one page")


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
