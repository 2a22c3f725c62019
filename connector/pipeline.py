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
    """Analyse the derived cohort and write the report folder; returns results.json's content.

    The folder is written beside ``out`` first and its files moved in one by one
    (``connector.atomic``), so a failed run leaves the previous report whole.
    """
    from connector.analysis import run_analysis
    from connector.atomic import staged_folder
    from connector.report import write_report

    analysis = run_analysis(engine)
    with staged_folder(out) as stage:
        write_report(analysis, stage, extra_sections=[_unmapped_section(engine, stage)])
    return analysis.results


def _unmapped_section(engine: Engine, out: Path):  # noqa: ANN202
    """The codes seen but not mapped, so a data team knows what to add to mappings/."""
    import pandas as pd

    from connector.mapping import write_unmapped
    from connector.report.document import Section

    path = out / "unmapped_codes.csv"
    n = write_unmapped(engine, path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).head(30)
    frame.columns = [str(c).replace("_", " ") for c in frame.columns]  # words, not codes
    text = (f"{n} {'code' if n == 1 else 'codes'} seen in the extracted resources "
            f"{'is' if n == 1 else 'are'} not in the mapping files "
            f"(all of them in unmapped_codes.csv; the 30 most frequent below). "
            "Add the ones that matter to the study to the code sets, with a source."
            if n else "Every code seen in the extracted resources is mapped or known.")
    return Section.from_frame("Unmapped codes", frame, text) if n else Section(
        "Unmapped codes", [text])
