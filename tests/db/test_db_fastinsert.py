"""Driver-level batch inserts store exactly what SQLAlchemy's own insert stores."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, event, insert, select

from connector.db import get_engine, init_db
from connector.db.fastinsert import _plan, insert_rows
from connector.db.models import MedicationExposure, Patient, ProcedureEvent, Quarantine

PATIENTS = [
    {"site": "s", "source_id": f"p{i}", "patient_key": f"k{i}", "birth_year": 1950 + i,
     "sex": "female" if i % 2 else None, "death_date": dt.date(2024, 1, 1 + i) if i % 3 else None,
     "deceased": bool(i % 3), "version_id": None}
    for i in range(7)
]
PROCEDURES = [  # source_type and product left to their defaults
    {"site": "s", "patient_source_id": "p1", "source_id": f"pr{i}", "category": "apheresis",
     "performed_date": dt.date(2023, 5, 1 + i)}
    for i in range(3)
]


def _table(conn, model) -> list[tuple]:
    columns = [c for c in model.__table__.columns if c.name != "id"]
    return sorted(tuple(r) for r in conn.execute(select(*columns)))


def _both_ways(engine, model, rows) -> tuple[list, list]:
    with engine.begin() as conn:
        insert_rows(conn, model, rows, batch_size=3)
        fast = _table(conn, model)
        conn.execute(delete(model))
        conn.execute(insert(model), rows)
        slow = _table(conn, model)
    return fast, slow


@pytest.mark.parametrize("backend",
                         ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_same_rows_as_sqlalchemy(backend, db_url, request):
    url = db_url if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = get_engine(url)
    init_db(engine)
    try:
        fast, slow = _both_ways(engine, Patient, PATIENTS)
        assert fast == slow and len(fast) == len(PATIENTS)
        assert any(row[5] is not None for row in fast)  # dates survived the conversion
        fast, slow = _both_ways(engine, ProcedureEvent, PROCEDURES)
        assert fast == slow
        assert {(r[2], r[6]) for r in fast} == {("Procedure", "")}  # scalar defaults applied
        assert _plan(engine.dialect, MedicationExposure.__table__) is not None
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_takes_the_rows_with_copy(pg_url):
    """On PostgreSQL the rows go through COPY: no INSERT statement is sent, the rows are
    those SQLAlchemy would write, and they belong to the caller's transaction."""
    engine = get_engine(pg_url)
    init_db(engine)
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: seen.append(statement))
    try:
        with engine.begin() as conn:
            insert_rows(conn, Patient, PATIENTS)
            assert len(_table(conn, Patient)) == len(PATIENTS)
        assert not [s for s in seen if s.lstrip().upper().startswith("INSERT")]
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.execute(delete(Patient))
            insert_rows(conn, Patient, PATIENTS[:2])
            raise RuntimeError("the caller fails after the COPY")
        with engine.connect() as conn:
            assert len(_table(conn, Patient)) == len(PATIENTS)  # rolled back, COPY included
    finally:
        engine.dispose()


def test_tables_with_computed_defaults_go_through_sqlalchemy(engine):
    assert _plan(engine.dialect, Quarantine.__table__) is None  # created_at is computed
    row = {"site": "s", "stage": "map", "reason": "r", "source": "", "content_hash": "h",
           "raw": "{}"}
    with engine.begin() as conn:
        insert_rows(conn, Quarantine, [row])
        stamp = conn.execute(select(Quarantine.created_at)).scalar_one()
    assert stamp is not None
