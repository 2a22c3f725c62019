"""Parquet and CSV writers: the same tables, the same types, one file per table.

Parquet keeps the Arrow types (dates as ``date32``, which pandas, DuckDB and R's
arrow read as dates; strings as UTF-8; booleans; 64-bit integers and doubles).
CSV writes ISO dates (``YYYY-MM-DD``), ``true``/``false``, and an empty cell for a
missing value, with a header row; ``data_dictionary.csv`` gives each column's type.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connector.export.base import FileWriter


class ParquetWriter(FileWriter):
    format = "parquet"
    suffix = ".parquet"

    def write_file(self, path: Path, schema: pa.Schema,
                   batches: Iterable[pa.RecordBatch]) -> int:
        rows = 0
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        return rows


class CsvWriter(FileWriter):
    format = "csv"
    suffix = ".csv"

    def write_file(self, path: Path, schema: pa.Schema,
                   batches: Iterable[pa.RecordBatch]) -> int:
        rows = 0
        options = pacsv.WriteOptions(include_header=True, quoting_style="needed")
        with pacsv.CSVWriter(path, schema, write_options=options) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        return rows
