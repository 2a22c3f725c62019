"""Streaming reads: large tables read in chunks, never held whole.

Two shapes, one place:

* ``driver_rows``: plain tuples from the driver's own cursor, ``fetch`` rows at a time
  (a server-side cursor on PostgreSQL; SQLite reads lazily anyway). For the hot loops
  (derive reads every normalized row), where wrapping each row in a SQLAlchemy ``Row``
  costs more than the read. Values come as the driver gives them (dates as text on
  SQLite). ``typed`` turns each tuple into a named row type.
* ``mapping_chunks``: SQLAlchemy row mappings in lists of ``size`` (merge, export),
  where rows are copied column by column by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import chain, count
from typing import TypeVar

from sqlalchemy import Select
from sqlalchemy.engine import Connection, RowMapping

FETCH_ROWS = 5_000  # rows a cursor fetches at a time

_CURSOR_IDS = count()  # names of server-side cursors, unique in the transaction

T = TypeVar("T")


def driver_rows(conn: Connection, stmt: Select, *, fetch: int = FETCH_ROWS,
                name: str = "stream") -> Iterator[tuple]:
    """The rows of ``stmt`` as plain tuples, read ``fetch`` at a time by the driver."""
    dialect = conn.dialect
    state = stmt.compile(dialect=dialect).construct_expanded_state()
    params = (state.positional_parameters if state.positiontup is not None
              else state.parameters)
    driver = conn.connection.dbapi_connection
    if driver is None:
        raise RuntimeError("the connection is closed")
    cursor = (driver.cursor(name=f"{name}_{os.getpid()}_{next(_CURSOR_IDS)}")  # type: ignore[call-arg]
              if dialect.name == "postgresql" else driver.cursor())
    try:
        cursor.execute(state.statement, params)
        yield from chain.from_iterable(iter(partial(cursor.fetchmany, fetch), []))
    finally:
        cursor.close()


def typed(rows: Iterable[tuple], row_type: Callable[..., T]) -> Iterator[T]:
    """Each tuple as ``row_type`` (a NamedTuple or dataclass taking the columns in order)."""
    return (row_type(*row) for row in rows)


def mapping_chunks(conn: Connection, stmt: Select, size: int
                   ) -> Iterator[list[RowMapping]]:
    """The rows of ``stmt`` as lists of up to ``size`` row mappings, streamed."""
    result = conn.execution_options(stream_results=True, yield_per=size).execute(stmt)
    for part in result.mappings().partitions(size):
        yield list(part)


__all__ = ["FETCH_ROWS", "driver_rows", "mapping_chunks", "typed"]
