"""What a FHIR server's answers become: pages of a search, OperationOutcome text, instants.

Pure functions of a parsed body (no network), shared by the REST client, the Bulk
client and the extraction that reads their pages.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from connector.fhir.redact import scrub_server_text
from connector.fhir.retry import parse_http_date


@dataclass
class Page:
    """One page of a search: its matches, includes, warnings and where to go next."""

    bundle: dict
    resources: list[dict]
    included: list[dict]
    outcomes: list[str]
    total: int | None
    server_time: str | None
    next_url: str | None


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    reauths: int = 0
    retry_reasons: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, n in deltas.items():
                setattr(self, name, getattr(self, name) + n)

    def retried(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.retry_reasons[reason] += 1


def outcome_text(body: Any) -> str:
    """The human text of an OperationOutcome: ``error: <diagnostics>; warning: ...``."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
        text = issue.get("diagnostics") or details.get("text") or issue.get("code") or ""
        parts.append(f"{issue.get('severity', 'error')}: {text}".strip())
    # server text can name patients ("NullPointerException at Patient 34a95157")
    return scrub_server_text("; ".join(parts))[:1000]


def to_instant(value: str | None) -> str | None:
    """A FHIR instant or HTTP date as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), or None."""
    if not value:
        return None
    when: dt.datetime | None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        when = parse_http_date(value)
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def shift_instant(instant: str, seconds: float) -> str:
    when = dt.datetime.fromisoformat(instant.replace("Z", "+00:00")) + dt.timedelta(seconds=seconds)
    return to_instant(when.isoformat()) or instant


def to_page(bundle: dict) -> Page:
    resources: list[dict] = []
    included: list[dict] = []
    outcomes: list[str] = []
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        resource = entry["resource"]
        mode = (entry.get("search") or {}).get("mode") if isinstance(entry.get("search"),
                                                                      dict) else None
        if mode == "outcome" or (resource.get("resourceType") == "OperationOutcome"
                                 and mode != "match"):
            outcomes.append(outcome_text(resource))
        elif mode == "include":
            included.append(resource)
        else:
            resources.append(resource)
    next_url = next((link.get("url") for link in bundle.get("link") or []
                     if isinstance(link, dict) and link.get("relation") == "next"
                     and link.get("url")), None)
    total = bundle.get("total")
    meta = bundle.get("meta") if isinstance(bundle.get("meta"), dict) else {}
    return Page(bundle=bundle, resources=resources, included=included, outcomes=outcomes,
                total=total if isinstance(total, int) else None,
                server_time=to_instant(meta.get("lastUpdated")), next_url=next_url)


#: How far into an answer ``next_link_in_prefix`` looks for the links before it gives up.
PREFIX_LIMIT = 1 << 16
_LINK_KEY = re.compile(rb'"link"\s*:\s*\[')
_CLOSE = re.compile(rb"\]")


def next_link_in_prefix(prefix: bytes | bytearray) -> tuple[bool, str | None]:
    """The ``next`` link of a searchset Bundle from the start of its JSON, before the
    rest has arrived: ``(decided, url)``.

    Servers write ``Bundle.link`` before ``Bundle.entry`` (FHIR's element order), so the
    links are usually in the first kilobyte. Only the part before the first ``"entry"``
    key is read, so a link inside an entry's resource is never taken for the Bundle's.
    ``(False, None)``: not yet, read more. ``(True, None)``: no early answer (no next
    link, links after the entries, or nothing found in ``PREFIX_LIMIT`` bytes); the
    parsed page will say. A URL found here is only a hint: the whole page is parsed as
    always and its own next link is what counts (prefetch.py)."""
    entry = prefix.find(b'"entry"')
    head = prefix if entry < 0 else prefix[:entry]
    ended = entry >= 0 or len(prefix) > PREFIX_LIMIT
    found = _LINK_KEY.search(head)
    if found is None:
        return ended, None
    start = found.end() - 1
    for close in _CLOSE.finditer(head, start):
        try:
            links = orjson.loads(bytes(head[start:close.end()]))
        except orjson.JSONDecodeError:
            continue  # a "]" inside a string, or the array goes on
        if not isinstance(links, list):
            return True, None
        url = next((link.get("url") for link in links if isinstance(link, dict)
                    and link.get("relation") == "next" and isinstance(link.get("url"), str)
                    and link.get("url")), None)
        return True, url
    return ended, None
