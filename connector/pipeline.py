"""The stages in order. Each function runs one stage against one database.

The CLI and the Python API both call these, so a scheduled run and a notebook
do exactly the same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from connector.db import get_engine, init_db
from connector.progress import Progress

if TYPE_CHECKING:
    from connector.extract.source import Source


def open_db(db_url: str) -> Engine:
    engine = get_engine(db_url)
    init_db(engine)
    return engine


def extract(engine: Engine, source: str | Source, *, site: str | None = None,
            progress: Progress | None = None, **options: Any):  # noqa: ANN201
    """Extract a resolved ``Source`` (connector.extract.source), or ``source`` as given
    on the command line with the keyword options of ``run_extract``."""
    if isinstance(source, str):
        from connector.extract import run_extract

        return run_extract(engine, source, site=site, progress=progress, **options)
    return source.extract(engine, progress)


def map_(engine: Engine, *, site: str | None = None, sites: Sequence[str] | None = None,
         progress: Progress | None = None):  # noqa: ANN201
    """Map ``site``, or each of ``sites`` (the ones a run has locked), or every site."""
    from connector.mapping import run_map
    from connector.mapping.run import MapSummary

    return _each_site(run_map, MapSummary, engine, site, sites, progress)


def derive(engine: Engine, *, site: str | None = None, sites: Sequence[str] | None = None,
           progress: Progress | None = None):  # noqa: ANN201
    """Derive ``site``, or each of ``sites`` (the ones a run has locked), or every site."""
    from connector.cohort import DeriveSummary, run_derive

    return _each_site(run_derive, DeriveSummary, engine, site, sites, progress)


def _each_site(run: Any, summary: type, engine: Engine, site: str | None,  # noqa: ANN202
               sites: Sequence[str] | None, progress: Progress | None):
    """``run`` for ``site`` (None: every site), or for each of ``sites`` in turn with one
    ``summary`` of them all: lists joined, counts and count tables added."""
    if sites is None:
        return run(engine, site=site, progress=progress)
    summaries = [run(engine, site=s, progress=progress) for s in sites]
    if not summaries:
        return summary()
    total = summaries[0]
    for other in summaries[1:]:
        for f in dataclasses.fields(total):
            mine, theirs = getattr(total, f.name), getattr(other, f.name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                for key, n in theirs.items():
                    mine[key] = mine.get(key, 0) + n
            elif isinstance(mine, int | float) and not isinstance(mine, bool):
                setattr(total, f.name, mine + theirs)
    return total


def analyze(engine: Engine, out: Path, *, sites: Sequence[str] | None = None,
            progress: Progress | None = None) -> dict[str, Any]:
    """Analyse the derived cohort and write the report folder; returns results.json's content.

    ``sites``: only these sites' patients (and unmapped codes), the ones a run holds the
    locks of; None: every site. The folder is written beside ``out`` first and its files
    moved in one by one (``connector.atomic``), so a failed run leaves the previous
    report whole.
    """
    from connector.analysis import run_analysis
    from connector.atomic import staged_folder
    from connector.mapping import write_unmapped
    from connector.report import write_report
    from connector.report.unmapped import unmapped_section

    progress = progress or Progress.silent()
    # three steps of about equal weight: statistics, unmapped codes, report files
    with progress.task("analyze", total=3) as advance:
        analysis = run_analysis(engine, sites=sites)
        advance(1)
        with staged_folder(out) as stage:
            unmapped = stage / "unmapped_codes.csv"
            n = write_unmapped(engine, unmapped, sites)
            advance(1)
            write_report(analysis, stage, extra_sections=[unmapped_section(unmapped, n)])
        advance(1)
    return analysis.results
