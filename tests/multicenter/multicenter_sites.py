"""Hand-built site databases for the merge tests (no mapping or derive stage needed).

Every row carries identifying text that must not survive a merge: source ids
that look like MRNs, names in ``display`` and ``original_value``, and a raw
Patient resource with name, address and identifier.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import String, func, insert, select
from sqlalchemy.engine import Engine

from connector.db import models
from connector.keys import patient_key

SECRET = b"site-secret-0123456789abcdef-xyz"
FAMILY = {"site_a": "Quackenbush", "site_b": "Featherstonehaugh"}


def ids(site: str, n: int) -> list[str]:
    return [f"MRN-{site.upper()}-{i:05d}" for i in range(n)]


def identifiers(site: str, n: int) -> list[str]:
    """Everything identifying that the site database holds for its patients."""
    out: list[str] = []
    for i, sid in enumerate(ids(site, n)):
        out += [sid, f"{FAMILY[site]}{i}", f"Wilhelmina{i}", f"{i} Ellsworth Lane",
                f"SSN-{site}-{i:06d}"]
    return out


def build_site(engine: Engine, site: str, n: int = 4, *, secret: bytes | None = SECRET,
               day0: dt.date = dt.date(2022, 3, 1)) -> None:
    """A site's own database: raw, normalized and derived rows for ``n`` patients."""
    t = models.SQLModel.metadata.tables
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(insert(t["site"]).values(name=site, loaded_at=now))
        conn.execute(insert(t["extract_run"]).values(
            site=site, source="/data/fhir", mode="folder", started_at=now, finished_at=now,
            status="ok", counts_json="{}", retries=0, errors=0, message=""))
        for i, sid in enumerate(ids(site, n)):
            key = patient_key(site, sid, secret)
            start = day0 + dt.timedelta(days=7 * i)
            body = {"resourceType": "Patient", "id": sid,
                    "identifier": [{"value": f"SSN-{site}-{i:06d}"}],
                    "name": [{"family": f"{FAMILY[site]}{i}", "given": [f"Wilhelmina{i}"]}],
                    "address": [{"line": [f"{i} Ellsworth Lane"]}]}
            conn.execute(insert(t["raw_resource"]).values(
                site=site, resource_type="Patient", resource_id=sid, fetched_at=now,
                content_hash=f"h{i}", source="Patient.ndjson", deleted=False,
                body=json.dumps(body)))
            conn.execute(insert(t["quarantine"]).values(
                site=site, stage="map", resource_type="Patient", resource_id=sid,
                reason="test", source="x", content_hash=f"q{i}", raw=json.dumps(body),
                created_at=now))
            conn.execute(insert(t["patient"]).values(
                site=site, source_id=sid, patient_key=key, birth_year=1950 + i, sex="female",
                death_date=start + dt.timedelta(days=400) if i % 2 else None,
                deceased=bool(i % 2), version_id=f"v-{sid}"))
            conn.execute(insert(t["medication_exposure"]).values(
                site=site, patient_source_id=sid, source_type="MedicationAdministration",
                source_id=f"MA-{sid}", version_id="3", ingredient="teclistamab",
                drug_class="bcma_bispecific", start_date=start + dt.timedelta(days=100),
                end_date=start + dt.timedelta(days=160), status="completed",
                code_system="http://www.nlm.nih.gov/research/umls/rxnorm", code="2619203",
                display=f"Tecvayli for {FAMILY[site]}{i}"))
            conn.execute(insert(t["procedure_event"]).values(
                site=site, patient_source_id=sid, source_type="Procedure",
                source_id=f"PR-{sid}", category="car_t_administration",
                product="idecabtagene vicleucel", performed_date=start, status="completed",
                code_system="http://www.cms.gov/Medicare/Coding/ICD10", code="XW033K7",
                display=f"Abecma infusion, {i} Ellsworth Lane"))
            for k in range(3):
                conn.execute(insert(t["lab_result"]).values(
                    site=site, patient_source_id=sid, source_id=f"OB-{sid}-{k}",
                    analyte="serum_m_protein", effective_date=start + dt.timedelta(days=30 * k),
                    value=1.5 - 0.5 * k, unit="g/dL", original_value=f"{1.5 - 0.5 * k} "
                    f"(Wilhelmina{i})", original_unit="g/dL"))
            conn.execute(insert(t["condition_record"]).values(
                site=site, patient_source_id=sid, source_id=f"CO-{sid}", version_id="2",
                finding="del_17p", status="present" if i % 2 else "absent",
                onset_date=start - dt.timedelta(days=200),
                code_system="http://snomed.info/sct", code="726107005",
                display=f"del(17p), Wilhelmina{i} {FAMILY[site]}{i}"))
            conn.execute(insert(t["cohort_patient"]).values(
                site=site, source_id=sid, patient_key=key, in_cohort=True,
                index_product="idecabtagene vicleucel", index_date=start,
                progression_date=start + dt.timedelta(days=90), progression_basis="imwg_labs",
                death_date=start + dt.timedelta(days=400) if i % 2 else None,
                last_contact_date=start + dt.timedelta(days=420), birth_year=1950 + i,
                sex="female"))
            conn.execute(insert(t["therapy_line"]).values(
                site=site, source_id=sid, patient_key=key, line=1,
                start_date=start + dt.timedelta(days=100), end_date=start + dt.timedelta(days=160),
                drugs="teclistamab", therapy_class="tce", subclass="bcma_bispecific",
                best_response="PR", response_note="",
                pfs_event_date=start + dt.timedelta(days=200) if i % 2 else None,
                pfs_censor_date=None if i % 2 else start + dt.timedelta(days=300)))
            conn.execute(insert(t["patient_baseline"]).values(
                site=site, source_id=sid, prior_lines=3 + i % 2,
                del_17p="present" if i % 2 else "absent", riss_stage="II" if i % 2 else None,
                ldh=200.0 + 60 * i, ldh_elevated=200.0 + 60 * i > 250,
                lab_interval_days=30.0))
        conn.execute(insert(t["quarantine"]).values(  # a type name that is no type name
            site=site, stage="extract", resource_type=f"<{FAMILY[site]}0>", resource_id=None,
            reason=f"unknown resourceType <{FAMILY[site]}0>", source="x", content_hash="e0",
            raw="{}", created_at=now))
        _unmapped(conn, site, n, now)


def _unmapped(conn: Any, site: str, n: int, now: dt.datetime) -> None:
    """The map stage's unmapped counts: a coded lab, and a name without a code that is
    someone's free text (``text`` and ``display`` must stay at the site)."""
    t = models.SQLModel.metadata.tables
    conn.execute(insert(t["unmapped_code"]), [
        {"site": site, "resource_type": "Observation", "system": "http://loinc.org",
         "code": "718-7", "text": "", "display": f"Hemoglobin for {FAMILY[site]}0", "n": 2 * n},
        {"site": site, "resource_type": "MedicationAdministration", "system": "",
         "code": "", "text": f"wilhelmina0 {FAMILY[site].lower()}0 trial drug",
         "display": f"Wilhelmina0 {FAMILY[site]}0 trial drug", "n": 1},
        {"site": site, "resource_type": "MedicationAdministration", "system": "",
         "code": "", "text": "study drug x", "display": "Study drug X", "n": 2}])
    conn.execute(insert(t["unmapped_count"]).values(site=site, resources=2 * n + 3,
                                                    stored_as_code=2 * n, mapped_at=now))


SKIP_COLUMNS = {"id", "merged_at"}


def content(engine: Engine, tables: tuple[str, ...] = (
        "site", "patient", "medication_exposure", "procedure_event", "lab_result",
        "condition_record", "cohort_patient", "therapy_line", "patient_baseline",
        "quarantine_count", "unmapped_code", "unmapped_count"),
        site: str | None = None) -> dict[str, list]:
    """Every row of the merged tables, without surrogate ids, in a stable order."""
    meta = models.SQLModel.metadata.tables
    out: dict[str, list] = {}
    with engine.connect() as conn:
        for name in tables:
            t = meta[name]
            cols = [c for c in t.columns if c.name not in SKIP_COLUMNS]
            q = select(*cols)
            if site is not None:
                q = q.where((t.c.name if name == "site" else t.c.site) == site)
            rows = [tuple(_norm(v) for v in r) for r in conn.execute(q)]
            out[name] = sorted(rows, key=repr)
    return out


def _norm(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def text_values(engine: Engine, tables: tuple[str, ...] | None = None) -> list[
        tuple[str, str, str]]:
    """(table, column, value) for every non-empty text value in every table (or in ``tables``)."""
    out: list[tuple[str, str, str]] = []
    with engine.connect() as conn:
        for name, t in models.SQLModel.metadata.tables.items():
            if tables is not None and name not in tables:
                continue
            for column in t.columns:
                ctype = getattr(column.type, "impl_instance", column.type)
                if not isinstance(ctype, String):
                    continue
                for (value,) in conn.execute(select(column).where(column.is_not(None))):
                    if value:
                        out.append((name, column.name, str(value)))
    return out


def count(engine: Engine, name: str) -> int:
    t = models.SQLModel.metadata.tables[name]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
