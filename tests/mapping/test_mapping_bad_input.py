"""Bad input: each kind is quarantined with its reason, the run goes on, nothing valid is lost."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from mapping_fhir import (
    CPT,
    HCPCS,
    RXNORM,
    concept,
    load,
    med_admin,
    observation,
    patient,
    procedure,
    write_ndjson,
)

from connector.extract import run_extract
from connector.mapping import run_map


def _without(res: dict, *keys: str) -> dict:
    return {k: v for k, v in res.items() if k not in keys}


def bad_corpus() -> list[tuple[str, dict, str]]:
    """(id, resource, expected reason fragment): one entry per kind of bad input."""
    m_protein = "33358-3"
    return [
        ("bad-structure", observation("bad-structure", "p1", m_protein, value=1.0, foo=1),
         "invalid R4B Observation: foo"),
        ("bad-value-string", observation("bad-value-string", "p1", m_protein,
                                         valueQuantity={"value": "1.5", "unit": "g/dL"}),
         "valueQuantity.value is not a number"),
        ("bad-no-subject", _without(med_admin("bad-no-subject", "p1",
                                              concept(RXNORM, "342369")), "subject"),
         "missing subject"),
        ("bad-subject-group", observation("bad-subject-group", "p1", m_protein, value=1.0,
                                          subject={"reference": "Group/g1"}),
         "subject is not a Patient reference"),
        ("bad-subject-identifier", observation(
            "bad-subject-identifier", "p1", m_protein, value=1.0,
            subject={"identifier": {"system": "urn:mrn", "value": "123"}}),
         "subject has no literal reference"),
        ("bad-date", observation("bad-date", "p1", m_protein, value=1.0,
                                 effectiveDateTime="2022-13-45"),
         "unparseable effective date"),
        ("bad-date-type", med_admin("bad-date-type", "p1", concept(RXNORM, "342369"),
                                    effectiveDateTime=20220301),
         "unparseable effective date"),
        ("bad-no-date", _without(observation("bad-no-date", "p1", m_protein, value=1.0),
                                 "effectiveDateTime"),
         "missing effective date"),
        ("bad-unit", observation("bad-unit", "p1", m_protein, value=1.0, unit="furlongs"),
         "unknown unit 'furlongs' for serum_m_protein"),
        ("bad-no-unit", observation("bad-no-unit", "p1", m_protein, value=1.0, unit=None),
         "missing unit for serum_m_protein"),
        ("bad-negative", observation("bad-negative", "p1", m_protein, value=-1.0),
         "implausible value for serum_m_protein"),
        ("bad-absurd", observation("bad-absurd", "p1", m_protein, value=500),
         "implausible value for serum_m_protein: 500 g/dL"),
        ("bad-no-code", _without(observation("bad-no-code", "p1", m_protein, value=1.0),
                                 "code"),
         "missing code"),
        ("bad-code-type", observation("bad-code-type", "p1", m_protein, value=1.0,
                                      code=m_protein),
         "code is not a CodeableConcept"),
        ("bad-unknown-patient", observation("bad-unknown-patient", "nobody", m_protein,
                                            value=1.0),
         "reference to unknown patient"),
        ("bad-oversized", med_admin("bad-oversized", "p1", concept(RXNORM, "342369"),
                                    note=[{"text": "x" * 20000}]),
         "oversized string at note.text"),
        ("bad-nul", observation("bad-nul", "p1", m_protein, value=1.0,
                                code={"coding": [{"system": "http://loinc.org",
                                                  "code": m_protein, "display": "M\x00"}]}),
         "NUL character in string at code.coding.display"),
        ("bad-status", procedure("bad-status", "p1", concept(CPT, "0540T"), status="done-ish"),
         "unknown status value for Procedure"),
        ("bad-no-status", _without(procedure("bad-no-status", "p1", concept(CPT, "0540T")),
                                   "status"),
         "missing status"),
        ("bad-med-missing", med_admin("bad-med-missing", "p1", None,
                                      medicationReference={"reference": "Medication/zzz"}),
         "medicationReference: Medication not found"),
        ("bad-contained-missing", med_admin(
            "bad-contained-missing", "p1", None, medicationReference={"reference": "#med9"},
            contained=[{"resourceType": "Medication", "id": "med1", "code": {"text": "x"}}]),
         "contained Medication not found"),
        ("bad-no-medication", med_admin("bad-no-medication", "p1", None),
         "missing medication"),
        ("bad-med-invalid", med_admin("bad-med-invalid", "p1", None,
                                      medicationReference={"reference": "Medication/broken"}),
         "medicationReference: Medication is invalid"),
        ("broken", {"resourceType": "Medication", "id": "broken",
                    "code": concept(HCPCS, "J9047"), "form": "tablet"},
         "invalid R4B Medication: form"),
        ("bad-birthdate", patient("bad-birthdate", birth="1950-02-30"), "invalid birthDate"),
        ("bad-birth-1700", patient("bad-birth-1700", birth="1700-01-01"),
         "implausible birthDate"),
        ("bad-gender", patient("bad-gender", gender="robot"), "unknown gender value"),
        ("bad-deceased", patient("bad-deceased", deceasedDateTime="soon"),
         "unparseable deceasedDateTime"),
        ("bad-of-bad-patient", observation("bad-of-bad-patient", "bad-birthdate", m_protein,
                                           value=1.0),
         "subject Patient was quarantined"),
        ("bad-coded", observation("bad-coded", "p1", "25700-6", valueString="maybe"),
         "unknown coded value for serum_ife"),
        ("bad-no-value", observation("bad-no-value", "p1", m_protein), "missing value"),
        ("bad-value-kind", observation("bad-value-kind", "p1", "25700-6", value=1.0),
         "expected a coded value for serum_ife"),
        ("bad-period", procedure("bad-period", "p1", concept(CPT, "38241"),
                                 performedPeriod={"start": "2022-05-02", "end": "2022-05-01"}),
         "performedPeriod ends before it starts"),
        ("bad-two-dates", procedure("bad-two-dates", "p1", concept(CPT, "38241"),
                                    performedPeriod={"start": "2022-05-02"},
                                    performedDateTime="2022-05-02"),
         "invalid R4B Procedure"),
        ("bad-1850", observation("bad-1850", "p1", m_protein, value=1.0, date="1850-01-01"),
         "implausible effective date"),
        ("bad-before-birth", observation("bad-before-birth", "p1", m_protein, value=1.0,
                                         date="1940-01-01"),
         "effective date before the patient's birth"),
        ("bad-comparator", observation("bad-comparator", "p1", m_protein,
                                       valueQuantity={"value": 1.0, "unit": "g/dL",
                                                      "comparator": "~"}),
         "unknown valueQuantity.comparator"),
    ]


def valid_corpus() -> list[dict]:
    return [
        patient("p1", birth="1950-03-01"),
        patient("p2"),
        med_admin("ok-m1", "p1", concept(RXNORM, "342369")),
        med_admin("ok-m2", "p2", {"text": "Tecvayli"}, date="2022-06-01"),
        procedure("ok-pr1", "p1", concept(CPT, "0540T"), date="2021-10-01"),
        observation("ok-o1", "p1", "33358-3", value=1.4),
        observation("ok-o2", "p2", "36916-5", value=55.0, unit="mg/L"),
    ]


def _quarantine(engine, stage: str) -> dict[str, str]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(sa.text(
            "SELECT resource_id, reason FROM quarantine WHERE stage = :s"), {"s": stage})}


def _ids(engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(sa.text(f"SELECT source_id FROM {table}"))}


def test_every_kind_of_bad_resource_is_quarantined_with_its_reason(engine):
    corpus = bad_corpus()
    assert len({reason.split(":")[0] for _, _, reason in corpus}) >= 20
    load(engine, valid_corpus() + [res for _, res, _ in corpus])
    summary = run_map(engine)
    quarantined = _quarantine(engine, "map")
    for rid, _, reason in corpus:
        assert rid in quarantined, rid
        assert reason in quarantined[rid], (rid, quarantined[rid])
    assert summary.quarantined == len(corpus) == len(quarantined)
    # nothing valid is lost
    assert _ids(engine, "patient") == {"p1", "p2"}
    assert _ids(engine, "medication_exposure") == {"ok-m1", "ok-m2"}
    assert _ids(engine, "procedure_event") == {"ok-pr1"}
    assert _ids(engine, "lab_result") == {"ok-o1", "ok-o2"}


def test_quarantine_reasons_name_no_patient(engine):
    load(engine, valid_corpus() + [res for _, res, _ in bad_corpus()])
    run_map(engine)
    for reason in _quarantine(engine, "map").values():
        assert "p1" not in reason and "p2" not in reason and "nobody" not in reason


def test_quarantined_rows_keep_the_resource_whole(engine):
    bad = observation("bad-unit", "p1", "33358-3", value=1.0, unit="furlongs")
    load(engine, [patient("p1"), bad])
    run_map(engine)
    with engine.connect() as conn:
        raw, rtype, stage = conn.execute(sa.text(
            "SELECT raw, resource_type, stage FROM quarantine")).one()
    assert orjson.loads(raw) == bad and rtype == "Observation" and stage == "map"


def test_end_to_end_through_extract_and_map(engine, tmp_path):
    lines: list = [
        b'{"resourceType": "Patient", "id": "p3", ',  # invalid JSON line
        orjson.dumps({"id": "x1", "status": "final"}),  # missing resourceType
        orjson.dumps({"resourceType": "Observation", "status": "final"}),  # missing id
        b"[1, 2, 3]",  # not an object
        *valid_corpus(),
        *[res for _, res, _ in bad_corpus()],
    ]
    write_ndjson(tmp_path, "site_e", lines)
    extract = run_extract(engine, str(tmp_path))
    assert extract.quarantined == 4
    summary = run_map(engine)
    assert summary.sites == ["site_e"]
    assert summary.quarantined == len(bad_corpus())
    with engine.connect() as conn:
        reasons = [r[0] for r in conn.execute(sa.text(
            "SELECT reason FROM quarantine WHERE stage = 'extract'"))]
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert "missing resourceType" in reasons and "missing or invalid id" in reasons
    assert _ids(engine, "lab_result") == {"ok-o1", "ok-o2"}
    assert _ids(engine, "medication_exposure") == {"ok-m1", "ok-m2"}
    # a second map of the same store changes nothing
    again = run_map(engine)
    assert str(again) == str(summary)
