"""A Bundle in the input, wherever it comes: a ``.json`` file, or one line of NDJSON.

Its entries are loaded one by one through the raw store, as if each had been a line of
its own: ``request.method = DELETE`` entries mark the stored resource deleted, an entry
that is not an object or has no resource is quarantined with its reason, and a Bundle
inside a Bundle is opened in turn, down to ``MAX_DEPTH`` levels (deeper is quarantined:
no real export nests that far, and the bound keeps a hostile file from recursing).
An entry whose ``fullUrl`` is absolute has that URL's base as its own: its absolute
references under the same base are local (connector/extract/checks.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from connector.extract.checks import reference_base

if TYPE_CHECKING:
    from connector.extract.store import RawStore

#: Bundles inside Bundles opened at most (the outermost is level 1).
MAX_DEPTH = 4


def load_bundle(store: RawStore, bundle: dict, *, site: str, source: str,
                raw: bytes | None = None) -> int:
    """Feed the entries of ``bundle`` into ``store``; returns the number of entries."""
    if store.bundle_depth >= MAX_DEPTH:
        store.quarantine(raw or orjson.dumps(bundle), site=site, source=source,
                         resource_type="Bundle", reason="Bundle nested too deeply")
        return 0
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        store.quarantine(raw or orjson.dumps(bundle), site=site, source=source,
                         resource_type="Bundle", reason="Bundle.entry is not a list")
        return 0
    store.bundle_depth += 1
    try:
        for entry in entries:
            _load_entry(store, entry, site=site, source=source)
    finally:
        store.bundle_depth -= 1
    return len(entries)


def _load_entry(store: RawStore, entry: object, *, site: str, source: str) -> None:
    if not isinstance(entry, dict):
        store.quarantine(orjson.dumps(entry), site=site, source=source,
                         reason="Bundle entry is not an object")
        return
    request = entry.get("request") or {}
    if isinstance(request, dict) and request.get("method") == "DELETE":
        url = str(request.get("url", ""))
        if "/" in url:
            rtype, rid = url.split("/", 1)
            store.mark_deleted(site=site, resource_type=rtype, resource_id=rid, source=source)
        return
    resource = entry.get("resource")
    if resource is None:
        store.quarantine(orjson.dumps(entry), site=site, source=source,
                         reason="Bundle entry without resource")
        return
    full_url = entry.get("fullUrl")
    base = reference_base(full_url) if isinstance(full_url, str) else None
    store.add(resource, site=site, source=source, base=base)
