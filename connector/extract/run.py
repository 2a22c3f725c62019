"""A folder extraction: its files into the raw store, a run record per site.

Which kind of source a ``--source`` is, is decided once, in connector/extract/source.py."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from connector.db.clock import utcnow
from connector.db.engine import load_cache
from connector.extract.folder import find_files, load_file, site_of
from connector.extract.records import finish_run, merge_counts, start_run
from connector.extract.store import RawStore, StoreCounts
from connector.progress import Progress


@dataclass
class ExtractSummary:
    """What an extraction did, for the CLI and the run record."""

    sites: list[str] = field(default_factory=list)
    read: int = 0
    counts: StoreCounts = field(default_factory=StoreCounts)

    @property
    def quarantined(self) -> int:
        return self.counts.quarantined


def extract_folder(engine: Engine, root: Path, *, site: str | None = None,
                   progress: Progress | None = None, loader: str = "python",
                   scope: str = "all") -> ExtractSummary:
    """Load every file under ``root``; one transaction per file, so a rerun resumes.

    ``loader="duckdb"`` reads NDJSON files through DuckDB, which drops the
    Observations no lab code maps before Python sees them (connector/extract/duck.py);
    with ``scope="cohort"`` it also leaves out the patients without a CAR-T record
    (connector/extract/duckscreen.py)."""
    if not root.exists():
        raise FileNotFoundError(f"source folder not found: {root}")
    files = find_files(root)
    if not files:
        raise FileNotFoundError(f"no NDJSON or JSON files under {root}")
    summary = ExtractSummary()
    progress = progress or Progress.silent()
    by_site: dict[str, list[Path]] = {}
    for path in files:
        by_site.setdefault(site_of(path, root, site), []).append(path)
    summary.sites = sorted(by_site)
    total_bytes = sum(p.stat().st_size for p in files)
    with progress.task("extract", total=total_bytes, unit="B") as advance:
        for site_name, paths in by_site.items():
            run_id = start_run(engine, site_name, str(root), "folder")
            counts = StoreCounts()
            loaded_at = utcnow()  # one load: every file's rows share it (conflict check)
            try:
                cohort = None
                if scope == "cohort":
                    from connector.extract.duckscreen import site_cohort

                    cohort = site_cohort(paths)
                for path in paths:
                    source = str(path.relative_to(root) if root.is_dir() else path.name)
                    summary.read += _load_one(engine, path, site=site_name, source=source,
                                              counts=counts, loader=loader, cohort=cohort,
                                              loaded_at=loaded_at)
                    advance(path.stat().st_size)
            except BaseException as exc:
                finish_run(engine, run_id, counts, status="failed", message=type(exc).__name__)
                raise
            finish_run(engine, run_id, counts, status="ok")
            merge_counts(summary.counts, counts)
            _warn_conflicts(site_name, counts)
    return summary


def _warn_conflicts(site: str, counts: StoreCounts) -> None:
    """Say in the log how many ids came twice with different content, and which copy won
    (the run record's counts hold them per type as ``conflicts``)."""
    n = sum(counts.conflicts.values())
    if n:
        logging.getLogger(__name__).warning(
            "%s: %d resource ids came more than once with different content; kept the copy "
            "with the higher versionId, else the later lastUpdated, else the later in file "
            "order (that last case also quarantines the other copy)", site, n)


def _load_one(engine: Engine, path: Path, *, site: str, source: str, counts: StoreCounts,
              loader: str, cohort: set[str] | None,
              loaded_at: dt.datetime | None = None) -> int:
    """One file in one transaction. A DuckDB scan that fails part-way (it read the file
    once already, so: memory, or the file changed) rolls back and the file is loaded
    again the Python way, with the counts of the successful attempt only."""
    if loader == "duckdb":
        from connector.extract.duck import DuckScanFailed, load_file_duck

        attempt = StoreCounts()
        try:
            with engine.begin() as conn, load_cache(conn):
                store = RawStore(conn, loaded_at=loaded_at)
                store.counts = attempt
                n = load_file_duck(store, path, site=site, source=source, file_key=source,
                                   cohort=cohort)
                store.flush()
        except DuckScanFailed as exc:
            logging.getLogger(__name__).warning("%s: %s; loading it line by line", path.name,
                                                exc)
        else:
            merge_counts(counts, attempt)
            return n
    with engine.begin() as conn, load_cache(conn):
        store = RawStore(conn, loaded_at=loaded_at)
        store.counts = counts
        n = load_file(store, path, site=site, source=source)
        store.flush()
    return n
