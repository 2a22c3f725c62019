"""Loading Bulk export files into the raw store: resources, error files, deleted files.

A file is streamed line by line (or read by DuckDB, ``--loader duckdb``) into one
``RawStore``; an error file's OperationOutcomes are kept in quarantine with their
severity, a deleted file's Bundles mark stored resources deleted.
(benchmarks/export_folder.py loads a folder of export files through this loader.)
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from collections import Counter
from pathlib import Path

import orjson
from sqlalchemy import delete
from sqlalchemy.engine import Connection

from connector.db.models import RawCodeCount
from connector.extract.folder import iter_lines
from connector.extract.store import RawStore
from connector.fhir.client import outcome_text

log = logging.getLogger(__name__)

MODE = "bulk"
_SEVERITY_ORDER = ("fatal", "error", "warning", "information")


class Corrupt(Exception):
    """A downloaded file cannot be read to its end (a gzip stream cut short)."""


def load_export_file(store: RawStore, path: Path, *, kind: str, site: str, source: str,
                     outcomes: Counter | None = None) -> int:
    """Feed one downloaded export file into ``store``; returns its number of lines.

    ``output``: resources. ``error``: OperationOutcomes, each kept in quarantine with
    its severity and text. ``deleted``: Bundles whose DELETE entries mark stored
    resources deleted. Raises ``Corrupt`` when a gzip file ends early.
    """
    n = 0
    try:
        for line in iter_lines(path):
            n += 1
            if kind == "output":
                store.add_raw(line, site=site, source=source)
            elif kind == "error":
                _add_outcome(store, line, site=site, source=source, outcomes=outcomes)
            else:
                _add_deleted(store, line, site=site, source=source)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise Corrupt(str(exc)) from None
    return n


def load_export_duck(store: RawStore, path: Path, *, site: str, source: str,
                     file_key: str) -> int:
    """A resource file through the DuckDB path (connector/extract/duck.py); a file DuckDB
    cannot read goes through ``load_export_file`` (a gzip stream cut short raises there)."""
    from connector.extract.duck import DuckUnreadable, load_ndjson_duck

    try:
        return load_ndjson_duck(store, path, site=site, source=source, file_key=file_key).lines
    except DuckUnreadable:
        log.info("%s: not read by DuckDB; loading it line by line", path.name)
    return load_export_file(store, path, kind="output", site=site, source=source)


def drop_other_code_counts(conn: Connection, site: str, keep_prefix: str) -> None:
    """Delete the site's export code counts except those whose file key starts with
    ``keep_prefix``: a completed full export describes the whole server."""
    conn.execute(delete(RawCodeCount).where(
        RawCodeCount.site == site, RawCodeCount.file.like("$export job %"),
        RawCodeCount.file.not_like(keep_prefix.replace("%", "") + "%")))


def _resource_or_quarantine(store: RawStore, line: bytes, resource_type: str, *, site: str,
                            source: str, reason: str) -> dict | None:
    """The line as a ``resource_type`` resource; otherwise it is quarantined with ``reason``
    and None returned, so the error and deleted files treat a bad line the same way."""
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or body.get("resourceType") != resource_type:
        store.quarantine(line, site=site, source=source, reason=reason)
        return None
    return body


def _add_outcome(store: RawStore, line: bytes, *, site: str, source: str,
                 outcomes: Counter | None) -> None:
    body = _resource_or_quarantine(store, line, "OperationOutcome", site=site, source=source,
                                   reason="export error file: a line that is not an "
                                          "OperationOutcome")
    if body is None:
        return
    severities = [str(i.get("severity") or "error") for i in body.get("issue") or []
                  if isinstance(i, dict)] or ["error"]
    severity = min(severities, key=lambda s: _SEVERITY_ORDER.index(s)
                   if s in _SEVERITY_ORDER else 1)
    if outcomes is not None:
        outcomes[severity] += 1
    store.quarantine(line, site=site, source=source, resource_type="OperationOutcome",
                     reason=f"bulk export {severity}: {outcome_text(body)}"[:500])


def _add_deleted(store: RawStore, line: bytes, *, site: str, source: str) -> None:
    bundle = _resource_or_quarantine(store, line, "Bundle", site=site, source=source,
                                     reason="export deleted file: a line that is not a Bundle")
    if bundle is None:
        return
    for entry in bundle.get("entry") or []:
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or str(request.get("method", "")).upper() != "DELETE":
            continue
        m = re.search(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$",
                      str(request.get("url") or ""))
        if m:
            store.mark_deleted(site=site, resource_type=m.group(1), resource_id=m.group(2),
                               source=source)
