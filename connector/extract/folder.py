"""The embedded default source: a folder of NDJSON and Bundle JSON files.

Files are found recursively: ``*.ndjson``, ``*.ndjson.gz``, ``*.jsonl`` (one
resource a line; a line holding a Bundle has its entries loaded) and ``*.json`` (a
Bundle or a single resource). NDJSON is
streamed line by line, so memory stays flat however large the file.

The site of a file is the name of its first folder below the source root
(``fixtures/cohort/site_a/Patient.ndjson`` → ``site_a``), or the root's own
name for files directly inside it, unless ``--site`` names one.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from connector.extract.bundle import load_bundle
from connector.extract.store import RawStore

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
BOM = b"\xef\xbb\xbf"


def find_files(root: Path) -> list[Path]:
    """Every resource file under ``root``, in a stable order."""
    if root.is_file():
        return [root]
    files = [
        p for p in root.rglob("*")
        if p.is_file() and (p.name.endswith(NDJSON_SUFFIXES) or p.suffix == ".json")
        and p.name != "ground_truth.json" and not p.name.startswith(".")
    ]
    return sorted(files)


def site_of(path: Path, root: Path, override: str | None) -> str:
    if override:
        return override
    if root.is_file():
        return root.parent.name or "default"
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else (root.resolve().name or "default")


def iter_lines(path: Path) -> Iterator[bytes]:
    """Non-blank lines of an NDJSON file, gzip or plain, streamed.

    A UTF-8 byte order mark at the start of the file (which some Windows tools write)
    is dropped rather than making the first resource invalid JSON. A gzip file that
    ends early raises (``EOFError``, ``gzip.BadGzipFile``, ``zlib.error``) after the
    lines before the cut.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        first = True
        for line in fh:
            if first:
                line = line.removeprefix(BOM)
                first = False
            line = line.strip()
            if line:
                yield line


def load_file(store: RawStore, path: Path, *, site: str, source: str) -> int:
    """Feed one file into the store; returns the number of entries read.

    A compressed file cut short keeps the resources before the cut and is itself
    quarantined with its reason, so one damaged file does not stop the run.
    """
    if path.name.endswith(NDJSON_SUFFIXES):
        n = 0
        try:
            for line in iter_lines(path):
                store.add_raw(line, site=site, source=source)
                n += 1
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            store.quarantine(f"{path.name}: unreadable after {n} lines", site=site,
                             source=source, reason=f"damaged compressed file: {exc}")
        return n
    raw = path.read_bytes().removeprefix(BOM)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        store.quarantine(raw, site=site, source=source, reason=f"invalid JSON file: {exc}")
        return 1
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        return load_bundle(store, doc, site=site, source=source, raw=raw)
    store.add(doc, site=site, source=source, raw=raw)
    return 1

