"""Batch inserts at the driver's speed (``COPY`` on PostgreSQL): the one fast-insert path.

Every stage that writes many rows comes through here: ``insert_rows`` for dicts of a
model's columns (map, derive), ``insert_values`` for rows whose keys are the columns to
write, ids included (merge), ``copy_rows`` for plain value rows into any table (the OMOP
export), and ``insert_sql`` + ``bind_value`` for a writer that builds its own tuples
(the raw store).

``conn.execute(insert(Model), rows)`` makes SQLAlchemy process every parameter of
every row in Python, which costs as much as the database's own work for the
narrow rows the map stage writes. Here each column's bind processor (dates to
text on SQLite, booleans to integers) is looked up once, applied only where the
type has one, and the rows go to the driver's ``executemany`` as plain tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.schema import Column, Table

BATCH_SIZE = 1000
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}

_MISSING = object()


def insert_rows(conn: Connection, model: type, rows: Sequence[dict[str, Any]],
                *, batch_size: int = BATCH_SIZE) -> None:
    """Insert ``rows`` (dicts keyed by column name) into ``model``'s table.

    A column missing from a row gets its scalar default, or NULL. Tables with a
    Python-computed default (a time stamp) go through SQLAlchemy as usual.
    """
    if not rows:
        return
    table: Table = model.__table__  # type: ignore[attr-defined]
    plan = _plan(conn.dialect, table)
    if plan is None:
        for start in range(0, len(rows), batch_size):
            conn.execute(insert(table), list(rows[start:start + batch_size]))
        return
    sql, columns = plan
    if copy_rows(conn, table, [name for name, _, _ in columns],
                 (_row(row, columns) for row in rows)) is not None:
        return
    for start in range(0, len(rows), batch_size):
        conn.exec_driver_sql(sql, [_row(row, columns) for row in rows[start:start + batch_size]])


def insert_values(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` as given (the first row's keys name the columns, ids included)."""
    if not rows:
        return
    names = list(rows[0])
    if copy_rows(conn, table, names, ([row[c] for c in names] for row in rows)) is None:
        conn.execute(insert(table), list(rows))


def can_copy(conn: Connection) -> bool:
    """True on PostgreSQL through psycopg 3, the one driver ``copy_rows`` streams with."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def copy_rows(conn: Connection, table: Table | str, columns: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> int | None:
    """PostgreSQL through psycopg 3: stream value rows with ``COPY … FROM STDIN``.

    COPY skips the per-statement work of ``executemany`` (parse, plan, one round trip per
    batch) and is how PostgreSQL takes bulk rows. It runs on the same DBAPI connection, so
    inside the caller's transaction: a failure rolls back with everything else. Returns
    the rows written; None when the database is not PostgreSQL on psycopg 3 (the caller
    inserts instead). Values go to the driver as they are (no bind processing).
    """
    if not can_copy(conn):
        return None
    prep = conn.dialect.identifier_preparer
    target = prep.format_table(table) if isinstance(table, Table) else prep.quote(table)
    sql = (f"COPY {target} "  # noqa: S608 (names from the model or the CDM DDL)
           f"({', '.join(prep.quote(name) for name in columns)}) FROM STDIN")
    written = 0
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)
            written += 1
    return written


def insert_sql(dialect: Dialect, table: Table, columns: Sequence[str]) -> str | None:
    """``INSERT`` of ``columns`` in the driver's parameter style (None: a style not known)."""
    mark = PLACEHOLDERS.get(dialect.paramstyle)
    if mark is None:
        return None
    prep = dialect.identifier_preparer
    return (f"INSERT INTO {prep.format_table(table)} "  # noqa: S608 (names from the model)
            f"({', '.join(prep.quote(name) for name in columns)}) "
            f"VALUES ({', '.join([mark] * len(columns))})")


def bind_value(dialect: Dialect, table: Table, column: str, value: Any) -> Any:
    """``value`` as the driver expects it for ``column`` (the column type's bind processor)."""
    process = table.c[column].type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process is not None and value is not None else value


def _row(row: dict[str, Any], columns: list[tuple[str, Any, Callable | None]]) -> tuple:
    out = []
    for name, default, process in columns:
        value = row.get(name, default)
        out.append(process(value) if process is not None and value is not None else value)
    return tuple(out)


_PLANS: dict[tuple[str, str, str, str],
             tuple[str, list[tuple[str, Any, Callable | None]]] | None] = {}


def _plan(dialect: Dialect, table: Table
          ) -> tuple[str, list[tuple[str, Any, Callable | None]]] | None:
    # keyed by what the plan depends on, not by the dialect object: engines come and go
    # (tests, merges), and an id() could be reused by another kind of dialect
    key = (dialect.name, dialect.driver, dialect.paramstyle, table.name)
    if key not in _PLANS:
        _PLANS[key] = _build_plan(dialect, table)
    return _PLANS[key]


def _build_plan(dialect: Dialect, table: Table
                ) -> tuple[str, list[tuple[str, Any, Callable | None]]] | None:
    if dialect.paramstyle not in PLACEHOLDERS:
        return None
    columns: list[tuple[str, Any, Callable | None]] = []
    for column in table.columns:
        if column.primary_key and column.autoincrement in (True, "auto") and \
                column.type.python_type is int:
            continue  # the database numbers the rows
        default = _scalar_default(column)
        if default is _MISSING or column.server_default is not None:
            return None
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        columns.append((column.name, default, process))
    sql = insert_sql(dialect, table, [name for name, _, _ in columns])
    return (sql, columns) if sql is not None else None


def _scalar_default(column: Column) -> Any:
    """The column's default when it is a plain value; _MISSING when computed in Python."""
    default = column.default
    if default is None:
        return None
    if getattr(default, "is_scalar", False):
        return default.arg
    return _MISSING
