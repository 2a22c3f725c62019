"""A folder of Bulk export files loaded without a server: the entry whose memory
section e of ``make bench`` measures (and tests/bulk checks stays flat).

It composes the bulk path's own loader (``connector.extract.bulk_load``: one file at a
time through ``RawStore``, error files into quarantine) with a run record, as a Bulk run
does after downloading, so the figure is the loader's and not a second copy of it. It
lives here, not in connector/, because nothing but the bench and its tests loads a
folder of export files this way (``cohort extract --source DIR`` reads folders).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from sqlalchemy.engine import Engine

from connector.db.engine import load_cache
from connector.extract.bulk_load import MODE, Corrupt, load_export_duck, load_export_file
from connector.extract.folder import NDJSON_SUFFIXES
from connector.extract.records import finish_run, merge_counts, start_run
from connector.extract.run import ExtractSummary
from connector.extract.store import RawStore, StoreCounts
from connector.progress import Progress


def load_ndjson_export(engine: Engine, folder: Path | str, *, site: str,
                       progress: Progress | None = None, loader: str = "python"
                       ) -> ExtractSummary:
    """Load a folder of export files (``<Type>.ndjson`` / ``.ndjson.gz``, as a server's
    manifest lists them) through the bulk loader, one transaction per file; no server.

    Files named ``*OperationOutcome*`` or ``error*`` are read as error files. Memory
    stays flat however large the files, because lines are streamed and written in
    batches.
    """
    root = Path(folder)
    files = sorted(p for p in (root.rglob("*") if root.is_dir() else [root])
                   if p.is_file() and p.name.endswith(NDJSON_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no NDJSON files under {root}")
    progress = progress or Progress.silent()
    summary = ExtractSummary(sites=[site])
    run_id = start_run(engine, site, str(root), MODE)
    outcomes: Counter = Counter()
    try:
        with progress.task("load", total=sum(p.stat().st_size for p in files), unit="B") \
                as advance:
            for path in files:
                kind = "error" if ("OperationOutcome" in path.name
                                   or path.name.lower().startswith("error")) else "output"
                counts = StoreCounts()
                with engine.begin() as conn, load_cache(conn):
                    store = RawStore(conn)
                    store.counts = counts
                    try:
                        if loader == "duckdb" and kind == "output":
                            n = load_export_duck(store, path, site=site,
                                                 source=f"$export {_type_of(path)}",
                                                 file_key=f"$export {path.relative_to(root)}"
                                                 if root.is_dir() else f"$export {path.name}")
                        else:
                            n = load_export_file(store, path, kind=kind, site=site,
                                                 source=f"$export {_type_of(path)}",
                                                 outcomes=outcomes)
                    except Corrupt:
                        raise ValueError(f"{path.name}: the gzip stream is cut short") from None
                    store.flush()
                merge_counts(summary.counts, counts)
                if kind == "output":
                    summary.read += n
                advance(path.stat().st_size)
    except BaseException as exc:
        finish_run(engine, run_id, summary.counts, status="failed",
                   message=str(exc) if isinstance(exc, ValueError) else type(exc).__name__)
        raise
    finish_run(engine, run_id, summary.counts, status="ok",
               message=f"{len(files)} export files from a folder; {summary.read} resources")
    return summary


def _type_of(path: Path) -> str:
    """The resource type an export file is named after (``Observation.ndjson.gz``,
    ``1_Observation.ndjson``)."""
    name = path.name
    for suffix in NDJSON_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    m = re.match(r"[A-Z][A-Za-z]+", name.split("_")[-1]) or re.match(r"[A-Z][A-Za-z]+", name)
    return m.group(0) if m else name
