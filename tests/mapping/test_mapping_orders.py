"""Oral drugs as MedicationRequest, MedicationDispense and MedicationStatement (issue 15)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from mapping_fhir import RXNORM, concept, load, patient

from connector.mapping import run_map

D = dt.date
LENALIDOMIDE = concept(RXNORM, "342369", "lenalidomide")
SUBJECT = {"reference": "Patient/p1"}


def _exposures(engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT source_type, ingredient, drug_class, start_date, end_date "
            "FROM medication_exposure ORDER BY start_date, source_type")).all()
    return [(r[0], r[1], r[2], _d(r[3]), _d(r[4])) for r in rows]


def _d(value) -> dt.date | None:  # noqa: ANN001
    return value if value is None or isinstance(value, dt.date) else dt.date.fromisoformat(value)


def request(rid: str, authored: str, days: int | None = 21, **extra) -> dict:  # noqa: ANN003
    res = {"resourceType": "MedicationRequest", "id": rid, "status": "active",
           "intent": "order", "medicationCodeableConcept": LENALIDOMIDE, "subject": SUBJECT,
           "authoredOn": authored}
    if days is not None:
        res["dispenseRequest"] = {"expectedSupplyDuration": {
            "value": days, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}}
    res.update(extra)
    return res


def dispense(did: str, handed: str, days: int = 21, status: str = "completed") -> dict:
    return {"resourceType": "MedicationDispense", "id": did, "status": status,
            "medicationCodeableConcept": {"text": "Xpovio (selinexor) 20 mg tablet"},
            "subject": SUBJECT, "whenHandedOver": handed,
            "daysSupply": {"value": days, "unit": "day", "system": "http://unitsofmeasure.org",
                           "code": "d"}}


def statement(sid: str, start: str, end: str, status: str = "completed") -> dict:
    return {"resourceType": "MedicationStatement", "id": sid, "status": status,
            "medicationCodeableConcept": {"text": "pomalidomide 4 mg capsule"},
            "subject": SUBJECT, "effectivePeriod": {"start": start, "end": end}}


def test_requests_dispenses_and_statements_become_exposures_with_their_periods(engine):
    load(engine, [
        patient("p1"),
        request("r1", "2022-03-01"),
        dispense("d1", "2022-04-05T10:00:00-05:00", days=28),
        statement("s1", "2022-05-01", "2022-05-21"),
        request("r2", "2022-06-01", days=None),  # no supply: a one-day exposure
    ])
    run_map(engine)
    assert _exposures(engine) == [
        ("MedicationRequest", "lenalidomide", "imid", D(2022, 3, 1), D(2022, 3, 21)),
        ("MedicationDispense", "selinexor", "xpo1_inhibitor", D(2022, 4, 5), D(2022, 5, 2)),
        ("MedicationStatement", "pomalidomide", "imid", D(2022, 5, 1), D(2022, 5, 21)),
        ("MedicationRequest", "lenalidomide", "imid", D(2022, 6, 1), None),
    ]


def test_what_did_not_happen_is_excluded(engine):
    load(engine, [
        patient("p1"),
        request("r1", "2022-03-01", status="cancelled"),
        request("r2", "2022-03-02", intent="proposal"),
        dispense("d1", "2022-04-05", status="declined"),
        statement("s1", "2022-05-01", "2022-05-21", status="not-taken"),
    ])
    summary = run_map(engine)
    assert _exposures(engine) == []
    assert summary.excluded == 4


def test_a_request_without_a_date_is_quarantined_with_its_reason(engine):
    bad = request("r1", "2022-03-01")
    del bad["authoredOn"]
    load(engine, [patient("p1"), bad])
    summary = run_map(engine)
    assert _exposures(engine) == []
    assert summary.reasons == {"missing authoredOn": 1}
