"""``cohort export``: the tables of a site (or central) database as files for researchers.

A stage after derive: it reads the normalized and derived tables, computes the
analysis-ready tables with the analysis layer, and writes one file per table plus
``data_dictionary.csv`` and ``manifest.json`` (format, sites, row counts; no
timestamps, so the same database gives the same files). Everything goes through the
pseudonymization of ``cohort merge`` (``connector.export.source``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from connector.export.analysis_tables import analysis_tables
from connector.export.base import FileWriter
from connector.export.dictionary import dictionary_table
from connector.export.files import CsvWriter, ParquetWriter
from connector.export.source import SOURCE_TABLES, ExportSource, export_schema, open_source
from connector.progress import Progress

FILE_FORMATS: dict[str, type[FileWriter]] = {"parquet": ParquetWriter, "csv": CsvWriter}
DERIVED = ("cohort_patient", "therapy_line")


@dataclass
class ExportSummary:
    """What one export wrote."""

    format: str
    out: str
    sites: list[str]
    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    keyed: bool = True
    date_shift_days: int = 0
    #: OMOP only: rows written with a concept id 0 (in at least one concept column), by table
    zero_rows: dict[str, int] = field(default_factory=dict)
    #: OMOP only: source rows the CDM cannot take, by reason
    left_out: dict[str, int] = field(default_factory=dict)


def _write_csv(writer: FileWriter, filename: str, tbl: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(tbl, sink)
    writer.write_extra(filename, sink.getvalue().to_pybytes().decode("utf-8"))


def write_tables(source: ExportSource, writer: FileWriter,
                 progress: Progress) -> tuple[dict[str, int], dict[str, pa.Schema]]:
    """Every source table, then the analysis-ready ones; rows and schemas by table."""
    rows: dict[str, int] = {}
    schemas: dict[str, pa.Schema] = {}
    derived: dict[str, list[dict[str, Any]]] = {name: [] for name in DERIVED}
    with progress.task("export", total=len(SOURCE_TABLES) + 2) as advance:
        for name in SOURCE_TABLES:
            schemas[name] = export_schema(name)
            rows[name] = writer.write_table(name, schemas[name],
                                            source.batches(name, derived.get(name)))
            advance(1)
        for name, tbl in analysis_tables(derived["cohort_patient"],
                                         derived["therapy_line"]).items():
            schemas[name] = tbl.schema
            rows[name] = writer.write_table(name, tbl.schema, tbl.to_batches())
            advance(1)
    return rows, schemas


def export_files(engine: Any, out: Path, fmt: str, *, sites: Sequence[str] | None = None,
                 secret: bytes | None = None, date_shift_days: int = 0,
                 allow_unkeyed: bool = False,
                 progress: Progress | None = None) -> ExportSummary:
    """Write the Parquet or CSV export of ``engine``'s database into ``out``.

    Raises ``connector.merge.MergeRefused`` when a site may not leave as asked
    (unkeyed keys without ``allow_unkeyed``, the wrong secret, ...), before any file
    is written. Reads one snapshot, so a run writing meanwhile does not tear it.
    """
    if fmt not in FILE_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FILE_FORMATS)}")
    progress = progress or Progress.silent()
    with open_source(engine, sites=sites, secret=secret, date_shift_days=date_shift_days,
                     allow_unkeyed=allow_unkeyed) as source:
        writer = FILE_FORMATS[fmt](out)
        try:
            rows, schemas = write_tables(source, writer, progress)
            _write_csv(writer, "data_dictionary.csv", dictionary_table(schemas))
            summary = ExportSummary(
                format=fmt, out=str(out), sites=[p.site for p in source.plans], rows=rows,
                keyed=all(p.key_fingerprint is not None for p in source.plans),
                date_shift_days=max((p.date_shift_days for p in source.plans), default=0))
            writer.write_extra("manifest.json", manifest(summary))
            summary.files = writer.commit()
        except BaseException:
            writer.abort()
            raise
    return summary


def manifest(summary: ExportSummary) -> str:
    """manifest.json: what is in the folder, without timestamps (reruns are identical)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = f"mm-cart-connector {version('mm-cart-connector')}"
    except PackageNotFoundError:
        tool = "mm-cart-connector"
    body = {"format": summary.format, "tool": tool, "sites": summary.sites,
            "patient_keys": "keyed" if summary.keyed else "UNKEYED (test data only)",
            "date_shift_days": summary.date_shift_days, "rows": summary.rows,
            "dictionary": "data_dictionary.csv"}
    return json.dumps(body, indent=2) + "\n"
