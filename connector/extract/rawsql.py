"""The raw store's two hot statements, written for the driver.

Looking up a batch's ids and inserting its new rows run once per batch of a load;
building them through SQLAlchemy costs more than the statements themselves, so they
are made once per dialect, parameter style and size, in the driver's own style, with
values converted by the same column types SQLAlchemy would use (connector/db/fastinsert.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Dialect

from connector.db.fastinsert import PLACEHOLDERS, bind_value, insert_sql
from connector.db.models import RawResource

_INSERT_COLUMNS = ("site", "resource_type", "resource_id", "version_id", "last_updated",
                   "fetched_at", "content_hash", "source", "deleted", "trimmed", "body")
_LOOKUP_COLUMNS = ("resource_id", "version_id", "last_updated", "content_hash", "deleted",
                   "trimmed")
_LOOKUPS: dict[tuple[str, str, int], str] = {}


def lookup_sql(dialect: Dialect, n_ids: int) -> str:
    """SELECT the stored state of ``n_ids`` ids of one site and type, in the driver's style.

    Remembered by dialect name, parameter style and count (not by the dialect object,
    which lives only as long as its engine)."""
    key = (dialect.name, dialect.paramstyle, n_ids)
    if key not in _LOOKUPS:
        _LOOKUPS[key] = _build_lookup_sql(dialect, n_ids)
    return _LOOKUPS[key]


def _build_lookup_sql(dialect: Dialect, n_ids: int) -> str:
    mark = PLACEHOLDERS.get(dialect.paramstyle)
    if mark is None:
        raise NotImplementedError(f"parameter style {dialect.paramstyle!r}")
    prep = dialect.identifier_preparer
    table = prep.format_table(RawResource.__table__)
    return (f"SELECT {', '.join(prep.quote(c) for c in _LOOKUP_COLUMNS)}, "  # noqa: S608
            f"CASE WHEN {prep.quote('fetched_at')} = {mark} THEN 1 ELSE 0 END "
            f"FROM {table} WHERE {prep.quote('site')} = {mark} "
            f"AND {prep.quote('resource_type')} = {mark} "
            f"AND {prep.quote('resource_id')} IN ({', '.join([mark] * n_ids)})")


def insert_plan(dialect: Dialect, fetched_at: dt.datetime
                ) -> tuple[str, Any, dict[bool, Any]]:
    """(INSERT statement in the driver's parameter style, load time, deleted flags) as the
    driver expects them, converted by the same column types SQLAlchemy would use."""
    table = RawResource.__table__
    sql = insert_sql(dialect, table, _INSERT_COLUMNS)
    if sql is None:
        raise NotImplementedError(f"parameter style {dialect.paramstyle!r}")
    return sql, bind_value(dialect, table, "fetched_at", fetched_at), {
        flag: bind_value(dialect, table, "deleted", flag) for flag in (False, True)}
