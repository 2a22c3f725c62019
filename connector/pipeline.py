"""The stages in order. Each function runs one stage against one database.

The CLI and the Python API both call these, so a scheduled run and a notebook
do exactly the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from connector.db import get_engine, init_db
from connector.progress import Progress


def open_db(db_url: str) -> Engine:
    engine = get_engine(db_url)
    init_db(engine)
    return engine


def extract(engine: Engine, source: str, *, site: str | None = None,
            progress: Progress | None = None, **options: Any):  # noqa: ANN201
    from connector.extract import run_extract

    return run_extract(engine, source, site=site, progress=progress, **options)


def map_(engine: Engine, *, site: str | None = None, progress: Progress | None = None):  # noqa: ANN201
    from connector.mapping import run_map

    return run_map(engine, site=site, progress=progress)


def derive(engine: Engine, *, site: str | None = None, progress: Progress | None = None):  # noqa: ANN201
    from connector.cohort import run_derive

    return run_derive(engine, site=site, progress=progress)


def analyze(engine: Engine, out: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Analyse the derived cohort and write the report folder; returns results.json's content."""
    from connector.analysis import run_analysis
    from connector.report import write_report

    analysis = run_analysis(engine)
    write_report(analysis, out)
    return analysis.results
