"""The plumbing in connector/db/ every stage shares: fast inserts, streaming reads.

Each path is run against SQLite and, when it is reachable, PostgreSQL (where inserts go
through COPY and reads through a server-side cursor), and read back through SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import pytest
from sqlalchemy import select

from connector.db.clock import utcnow
from connector.db.fastinsert import can_copy, insert_rows, insert_values
from connector.db.models import SyncState, TherapyLine
from connector.db.stream import driver_rows, mapping_chunks, typed
from connector.pipeline import open_db


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request, db_url):  # noqa: ANN001, ANN201
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else db_url
    engine = open_db(url)
    yield engine
    engine.dispose()


def _lines(n: int) -> list[dict]:
    return [{"site": "s", "source_id": f"p{i}", "patient_key": f"k{i}", "line": i % 7 + 1,
             "start_date": dt.date(2024, 1, 1) + dt.timedelta(days=i), "drugs": "a;b",
             "therapy_class": "tce", "subclass": "car_t", "best_response": "PR",
             "end_date": None if i % 2 else dt.date(2025, 1, 1)} for i in range(n)]


class _Line(NamedTuple):
    patient_key: str
    start_date: object
    end_date: object


def test_inserted_rows_read_back_the_same_through_every_path(any_engine):
    rows = _lines(2_345)  # more than one batch
    with any_engine.begin() as conn:
        insert_rows(conn, TherapyLine, rows)
        copied = [dict(r) for part in mapping_chunks(
            conn, select(TherapyLine).order_by(TherapyLine.id), 1_000) for r in part]
        assert len(copied) == len(rows)
        assert [r["patient_key"] for r in copied] == [r["patient_key"] for r in rows]
        assert copied[3]["start_date"] == dt.date(2024, 1, 4)
        assert copied[3]["end_date"] is None and copied[4]["end_date"] == dt.date(2025, 1, 1)
        assert copied[3]["response_note"] == ""  # the column's default
        # merge's path: the rows as given, ids included, into a second site
        insert_values(conn, TherapyLine.__table__,
                      [dict(r, site="t", id=r["id"] + 10_000) for r in copied])
        stmt = (select(TherapyLine.patient_key, TherapyLine.start_date, TherapyLine.end_date)
                .where(TherapyLine.site == "t").order_by(TherapyLine.id))
        streamed = list(typed(driver_rows(conn, stmt, fetch=100), _Line))
    assert [r.patient_key for r in streamed] == [r["patient_key"] for r in rows]
    assert all(isinstance(r, _Line) for r in streamed)
    assert can_copy(conn) == (any_engine.dialect.name == "postgresql")


def test_a_python_computed_default_is_filled_in(any_engine):
    before = utcnow()
    with any_engine.begin() as conn:
        insert_rows(conn, SyncState, [{"site": "s", "resource_type": "Patient", "watermark": "w"}])
        row = conn.execute(select(SyncState)).mappings().one()
    stamped = row["updated_at"]
    if stamped.tzinfo is None:
        stamped = stamped.replace(tzinfo=dt.UTC)
    assert stamped >= before - dt.timedelta(seconds=1)
