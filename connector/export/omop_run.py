"""``cohort export --format omop``: OMOP CDM 5.4 tables as CSV files or in a PostgreSQL schema.

Reads the pseudonymized tables (``connector.export.source``, the rules of ``cohort
merge``), builds the CDM rows (``omop_build``) with the concepts of
``mappings/omop_concepts.csv``, writes them, and reports every concept column written
as 0 with its source value (``omop_concept_zero.csv``, and in the summary).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from connector.export.base import ExportWriter
from connector.export.files import CsvWriter
from connector.export.omop_build import OmopBuild
from connector.export.omop_concepts import load_concepts
from connector.export.omop_ddl import TABLES, arrow_schema
from connector.export.omop_postgres import PostgresWriter
from connector.export.run import ExportSummary
from connector.export.source import ExportSource, open_source
from connector.progress import Progress

ZERO_FILE = "omop_concept_zero.csv"


def zero_table(build: OmopBuild) -> pa.Table:
    """One row per (table, concept column, source value) written with concept id 0."""
    items = sorted(build.zero.items())
    return pa.table({
        "table": pa.array([k[0] for k, _ in items], pa.string()),
        "concept_column": pa.array([k[1] for k, _ in items], pa.string()),
        "source_value": pa.array([k[2] for k, _ in items], pa.string()),
        "rows": pa.array([n for _, n in items], pa.int64())})


def export_omop(engine: Any, *, out: Path | None = None, into: Any = None,
                sites: Sequence[str] | None = None, secret: bytes | None = None,
                date_shift_days: int = 0, allow_unkeyed: bool = False,
                progress: Progress | None = None) -> ExportSummary:
    """Write the CDM tables to ``out`` (CSV) or into the engine ``into`` (PostgreSQL).

    With ``into``, ``out`` (optional) receives only the concept-0 report and manifest.
    Raises ``connector.merge.MergeRefused`` (before writing) when a site may not leave.
    """
    if out is None and into is None:
        raise ValueError("an OMOP export needs --out DIR (CSV) or --into postgresql://…")
    progress = progress or Progress.silent()
    concepts = load_concepts()
    with open_source(engine, sites=sites, secret=secret, date_shift_days=date_shift_days,
                     allow_unkeyed=allow_unkeyed) as source:
        plans = source.plans
        summary = ExportSummary(
            format="omop", out=str(out or ""), sites=[p.site for p in plans],
            keyed=all(p.key_fingerprint is not None for p in plans),
            date_shift_days=max((p.date_shift_days for p in plans), default=0))
        writer: ExportWriter = PostgresWriter(into) if into is not None else CsvWriter(out)
        report = CsvWriter(out) if (into is not None and out is not None) else None
        try:
            build = _write_all(source, OmopBuild(concepts), writer, summary, progress)
            files = report or writer
            if isinstance(files, CsvWriter):
                zero = zero_table(build)
                files.write_table(ZERO_FILE.removesuffix(".csv"), zero.schema,
                                  zero.to_batches())
                files.write_extra("manifest.json", _manifest(summary, build))
            summary.files = writer.commit() + (report.commit() if report else [])
        except BaseException:
            writer.abort()
            if report:
                report.abort()
            raise
    summary.zero_rows = dict(sorted(build.zero_rows.items()))
    summary.left_out = dict(sorted(build.left_out.items()))
    return summary


def _write_all(source: ExportSource, build: OmopBuild, writer: ExportWriter,
               summary: ExportSummary, progress: Progress) -> OmopBuild:
    """Every CDM table in dependency order; the large ones streamed chunk by chunk."""
    small = {name: [row for chunk in source.rows(name) for row in chunk]
             for name in ("patient", "cohort_patient", "therapy_line")}

    def write(name: str, batches: Iterable[pa.RecordBatch]) -> None:
        summary.rows[name] = writer.write_table(name, arrow_schema(name), batches)
        advance(1)

    with progress.task("omop", total=len(TABLES)) as advance:
        build.persons(small["patient"])
        write("person", [build.drain("person")])
        write("drug_exposure", build.drugs(source.rows("medication_exposure")))
        write("procedure_occurrence", build.procedures(source.rows("procedure_event")))
        write("measurement", build.measurements(source.rows("lab_result")))
        build.deaths(small["patient"], small["cohort_patient"])
        write("death", [build.drain("death")])
        build.episodes(small["cohort_patient"], small["therapy_line"])
        write("episode", [build.drain("episode")])
        write("episode_event", [build.drain("episode_event")])
        build.periods()
        write("observation_period", [build.drain("observation_period")])
    summary.rows = {name: summary.rows[name] for name in TABLES}
    return build


def _manifest(summary: ExportSummary, build: OmopBuild) -> str:
    body = {"format": "omop", "cdm_version": "5.4", "sites": summary.sites,
            "patient_keys": "keyed" if summary.keyed else "UNKEYED (test data only)",
            "date_shift_days": summary.date_shift_days, "rows": summary.rows,
            "rows_with_concept_id_0": dict(sorted(build.zero_rows.items())),
            "concept_zero_report": ZERO_FILE,
            "left_out": dict(sorted(build.left_out.items())),
            "concepts": "mappings/omop_concepts.csv"}
    return json.dumps(body, indent=2) + "\n"
