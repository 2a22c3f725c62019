"""One small base class for every export format.

A writer receives whole tables as Arrow record batches (``write_table``) and makes
them visible only in ``commit``: files are written into a staging folder and moved
into place at the end, a database load happens in one transaction. An export that
fails half-way (``abort``) leaves the previous export as it was.
"""

from __future__ import annotations

import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa


class ExportWriter(ABC):
    """Writes named tables of one export; nothing is visible before ``commit``."""

    #: the --format name
    format: str = ""

    @abstractmethod
    def write_table(self, name: str, schema: pa.Schema,
                    batches: Iterable[pa.RecordBatch]) -> int:
        """Write table ``name`` (rows of ``schema``); returns the number of rows."""

    @abstractmethod
    def commit(self) -> list[str]:
        """Make everything written visible; returns what was written (files or tables)."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything written so far."""


class FileWriter(ExportWriter):
    """One file per table in ``out``, staged in a hidden folder beside them."""

    suffix: str = ""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.staging = self.out / f".export-{uuid.uuid4().hex[:8]}"
        self.staging.mkdir()
        self.files: list[str] = []

    @abstractmethod
    def write_file(self, path: Path, schema: pa.Schema,
                   batches: Iterable[pa.RecordBatch]) -> int:
        """Write one file; returns the number of rows."""

    def write_table(self, name: str, schema: pa.Schema,
                    batches: Iterable[pa.RecordBatch]) -> int:
        filename = f"{name}{self.suffix}"
        rows = self.write_file(self.staging / filename, schema, batches)
        self.files.append(filename)
        return rows

    def write_extra(self, filename: str, content: str) -> None:
        """A text file beside the tables (manifest, notes), staged like them."""
        (self.staging / filename).write_text(content, encoding="utf-8")
        self.files.append(filename)

    def commit(self) -> list[str]:
        for filename in self.files:
            (self.staging / filename).replace(self.out / filename)
        shutil.rmtree(self.staging, ignore_errors=True)
        return sorted(self.files)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
