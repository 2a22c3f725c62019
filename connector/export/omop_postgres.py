"""OMOP tables into a PostgreSQL schema: created from the CDM 5.4 DDL, loaded with COPY.

The schema is the target URL's ``search_path`` (``?options=-csearch_path%3Dcdm``), and
must exist. Each exported table is dropped and created again, and everything happens
in one transaction: readers see the previous export or the new one, never half of it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
from sqlalchemy.engine import Engine

from connector.db.fastinsert import copy_rows
from connector.export.base import ExportWriter
from connector.export.omop_ddl import create_table_sql


class PostgresWriter(ExportWriter):
    format = "omop"

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("--into must be a postgresql:// URL")
        self.conn = engine.connect()
        self.tx = self.conn.begin()
        self.tables: list[str] = []

    def write_table(self, name: str, schema: pa.Schema,
                    batches: Iterable[pa.RecordBatch]) -> int:
        with self.conn.connection.driver_connection.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')
            cur.execute(create_table_sql(name))
        names = [field.name for field in schema]
        rows = copy_rows(self.conn, name, names, ([row[c] for c in names]
                                                  for batch in batches
                                                  for row in batch.to_pylist()))
        if rows is None:
            raise ValueError("--into needs PostgreSQL through psycopg 3 (COPY)")
        self.tables.append(name)
        return rows

    def commit(self) -> list[str]:
        self.tx.commit()
        self.conn.close()
        return sorted(self.tables)

    def abort(self) -> None:
        try:
            self.tx.rollback()
        finally:
            self.conn.close()
