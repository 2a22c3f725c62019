"""Deletion sync of a REST run: what the server's history says was deleted, marked here.

A later run reads each type's ``_history`` since its watermark (newest first, so the
read stops at the first page older than that) and flags the stored resources whose
newest entry is a deletion; the rows stay, flagged, like those of a Bulk ``deleted``
file. A server without history for a type is said once in the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.engine import Engine

from connector.extract.store import RawStore, StoreCounts
from connector.fhir.client import Capabilities, FhirClient, to_instant

log = logging.getLogger(__name__)


def sync_deletions(engine: Engine, client: FhirClient, caps: Capabilities, *, site: str,
                   since: dict[str, str | None], concurrency: int,
                   counts: StoreCounts) -> None:
    """Mark stored resources the server's history reports deleted since the watermark
    (``since``: per type, None for a type read whole this run).

    The types' histories are read side by side (each is one short read on a run with
    few changes); the marks are written one type at a time."""
    wanted: dict[str, str] = {}
    for rtype, mark in since.items():
        if mark is None:
            continue
        if not caps.history_type(rtype):
            log.info("%s: the server offers no history; deletions are not detected", rtype)
            continue
        wanted[rtype] = mark
    if not wanted:
        return
    workers = max(1, min(concurrency, len(wanted)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fhir") as pool:
        histories = dict(zip(wanted, pool.map(lambda r, m: history(client, r, m), wanted,
                                              wanted.values()), strict=True))
    for rtype, latest in histories.items():
        gone = sorted(rid for rid, (_key, deleted) in latest.items() if deleted)
        if not gone:
            continue
        with engine.begin() as conn:
            store = RawStore(conn)
            store.counts = counts
            for rid in gone:
                store.mark_deleted(site=site, resource_type=rtype, resource_id=rid,
                                   source=f"{rtype}/_history")
        log.info("%s: %d deletions reported by the server, %d of them stored here", rtype,
                 len(gone), counts.deleted[rtype])


def history(client: FhirClient, rtype: str, since: str) -> dict[str, tuple[tuple, bool]]:
    """Newest history entry per id since ``since``: (ordering key, is a deletion)."""
    latest: dict[str, tuple[tuple, bool]] = {}
    floor = _instant_key(since)
    for page in client.history(rtype, since):
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
