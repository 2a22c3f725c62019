"""Many patients' normalized tables from few: copies of mapped sites under new names.

Derive, analyse and report read only the normalized tables, so a 10,000-patient
input for them needs no 3-million-resource extract: the mapped rows of a smaller
synthetic cohort are copied in SQL under new site names (``site_a~r03``) and new
patient keys. Every copy is a distinct site with distinct patients; their courses
repeat those of the template, which does not change how much work a stage does.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connector.db.models import LabResult, MedicationExposure, Patient, ProcedureEvent, Site

EVENT_MODELS = (MedicationExposure, ProcedureEvent, LabResult)


def _columns(model: type) -> list[str]:
    return [c.name for c in model.__table__.columns if c.name != "id"]


def _copied(column: str, copy: int) -> str:
    """The SELECT expression that fills ``column`` of a copy."""
    if column == "site":
        return ":site"
    if column == "patient_key":
        return f"patient_key || '~r{copy:02d}'"
    return column


def replicate_sites(engine: Engine, n_patients: int) -> int:
    """Copy the mapped sites until the patient table has ``n_patients`` rows; returns it."""
    with engine.begin() as conn:
        sites = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT site FROM patient"))]
        total = conn.execute(sa.text("SELECT count(*) FROM patient")).scalar_one()
        copy = 0
        while total < n_patients:
            copy += 1
            for site in sites:
                if total >= n_patients:
                    break
                total += _copy_site(conn, site, f"{site}~r{copy:02d}", copy,
                                    limit=n_patients - total)
    return total


def _copy_site(conn: sa.Connection, site: str, new_site: str, copy: int, *, limit: int) -> int:
    """Copy up to ``limit`` of ``site``'s patients, with their events, to ``new_site``.

    Table and column names in the SQL come from the models; values are bound.
    """
    ids = [r[0] for r in conn.execute(sa.text(
        "SELECT source_id FROM patient WHERE site = :s ORDER BY source_id LIMIT :n"),
        {"s": site, "n": limit})]
    if not ids:
        return 0
    conn.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS copy_ids (source_id TEXT PRIMARY KEY)"))
    conn.execute(sa.text("DELETE FROM copy_ids"))
    conn.execute(sa.text("INSERT INTO copy_ids (source_id) VALUES (:i)"), [{"i": i} for i in ids])
    for model in (Patient, *EVENT_MODELS):
        cols = _columns(model)
        table = model.__tablename__
        picked = ", ".join(_copied(c, copy) for c in cols)
        key = "source_id" if model is Patient else "patient_source_id"
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) SELECT {picked} FROM {table} "  # noqa: S608
               f"WHERE site = :old AND {key} IN (SELECT source_id FROM copy_ids)")
        conn.execute(sa.text(sql), {"site": new_site, "old": site})
    cols = [c.name for c in Site.__table__.columns]
    picked = ", ".join(":site" if c == "name" else c for c in cols)
    sql = f"INSERT INTO site ({', '.join(cols)}) SELECT {picked} FROM site WHERE name = :old"  # noqa: S608
    conn.execute(sa.text(sql), {"site": new_site, "old": site})
    return len(ids)
