"""The database's normalized and derived tables as they may leave the site, as Arrow batches.

An export is data leaving the site, so it goes through exactly the rules of
``cohort merge`` (``connector.merge``): the site is checked (keyed patient keys, the
right secret; ``plan_site``), every row is pseudonymized (``pseudonymize_row``;
already pseudonymized databases are only sanitized), optional per-patient date shift.
On top of that the export drops what merge empties (free text, unclassified text) and
renames the identity columns so no file has a column named ``source_id``:

* patient columns become ``patient_key`` (the duplicate ``source_id`` of tables that
  already carry ``patient_key`` is dropped);
* resource ids become ``resource_key`` (keyed, not linkable to the patient).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import select, types
from sqlalchemy.engine import Connection, Engine

from connector.db.engine import read_snapshot
from connector.db.stream import mapping_chunks
from connector.merge import (
    CHUNK,
    MERGED_TABLES,
    MergeRefused,
    SitePlan,
    column_kinds,
    plan_site,
    pseudonymize_row,
    sanitize_row,
    sites_in,
    table,
)

#: The database tables an export carries, in the order they are written.
SOURCE_TABLES: tuple[str, ...] = MERGED_TABLES


@dataclass(frozen=True)
class ExportColumn:
    """One exported column: its name in the files and the database column it comes from."""

    name: str
    source: str
    arrow_type: pa.DataType


def arrow_type(column: Any) -> pa.DataType:
    """The Arrow type for a database column: dates stay dates (R ``Date``), never strings."""
    ctype = getattr(column.type, "impl_instance", column.type)
    if isinstance(ctype, types.Boolean):
        return pa.bool_()
    if isinstance(ctype, types.Integer):
        return pa.int64()
    if isinstance(ctype, types.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(ctype, types.Date):
        return pa.date32()
    if isinstance(ctype, types.Float | types.Numeric):
        return pa.float64()
    return pa.string()


def export_columns(name: str) -> list[ExportColumn]:
    """The columns of table ``name`` that leave the site, under their exported names."""
    kinds = column_kinds(name)
    columns = table(name).columns
    has_key = "patient_key" in kinds
    out: list[ExportColumn] = []
    for col, kind in kinds.items():
        if kind in ("id", "drop", "unclassified"):
            continue
        if kind == "patient":
            if has_key and col != "patient_key":
                continue  # the same pseudonym twice
            out.append(ExportColumn("patient_key", col, pa.string()))
        elif kind == "resource":
            out.append(ExportColumn("resource_key", col, pa.string()))
        else:
            out.append(ExportColumn(col, col, arrow_type(columns[col])))
    return out


def export_schema(name: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type) for c in export_columns(name)])


@dataclass
class ExportSource:
    """The checked sites of one database, read in one snapshot."""

    engine: Engine
    plans: list[SitePlan]
    conn: Connection

    def rows(self, name: str) -> Iterator[list[dict[str, Any]]]:
        """Pseudonymized rows of ``name`` (every column as merge writes it), in chunks."""
        t = table(name)
        for plan in self.plans:
            stmt = select(t).where(t.c.site == plan.site).order_by(t.c.id)
            for part in mapping_chunks(self.conn, stmt, CHUNK):
                yield [sanitize_row(name, r) if plan.pseudonymized
                       else pseudonymize_row(name, r, plan.keys) for r in part]

    def batches(self, name: str,
                keep: list[dict[str, Any]] | None = None) -> Iterator[pa.RecordBatch]:
        """The exported columns of ``name`` as Arrow batches (whole rows also to ``keep``)."""
        columns = export_columns(name)
        schema = export_schema(name)
        for rows in self.rows(name):
            if keep is not None:
                keep.extend(rows)
            arrays = [pa.array([r[c.source] for r in rows], type=c.arrow_type) for c in columns]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


@contextmanager
def open_source(engine: Engine, *, sites: Sequence[str] | None = None,
                secret: bytes | None = None, date_shift_days: int = 0,
                allow_unkeyed: bool = False) -> Iterator[ExportSource]:
    """Check every site (raising ``MergeRefused``) and read them in one snapshot.

    The snapshot (one read transaction) keeps the tables of one export consistent with
    each other even while a run writes to the database; no lock is needed to read.
    """
    if date_shift_days < 0:
        raise MergeRefused("--date-shift-days must be 0 or more")
    with engine.connect() as conn:
        found = sites_in(conn)
    wanted = list(sites) if sites else found
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise MergeRefused(f"site(s) not in the database: {', '.join(missing)}")
    if not wanted:
        raise MergeRefused("the database holds no site data (run map and derive first)")
    with read_snapshot(engine) as conn:
        plans = [plan_site(conn, engine, site, secret=secret, date_shift_days=date_shift_days,
                           allow_unkeyed=allow_unkeyed) for site in sorted(wanted)]
        yield ExportSource(engine=engine, plans=plans, conn=conn)

