"""Condition resources → condition_record (issue 16: Table 1 covariates)."""

from __future__ import annotations

import sqlalchemy as sa
from mapping_fhir import load, observation, patient

from connector.mapping import run_map

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SUBJECT = {"reference": "Patient/p1"}


def condition(cid: str, code: dict, *, onset: str | None = "2021-02-03",
              verification: str | None = "confirmed", **extra) -> dict:  # noqa: ANN003
    res = {"resourceType": "Condition", "id": cid, "code": code, "subject": SUBJECT}
    if onset:
        res["onsetDateTime"] = onset
    if verification:
        res["verificationStatus"] = {"coding": [{"system": VER, "code": verification}]}
    res.update(extra)
    return res


def _records(engine) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT finding, status, onset_date, code_system, code FROM condition_record "
            "ORDER BY finding, onset_date")).all()
    return [(r[0], r[1], str(r[2]), r[3], r[4]) for r in rows]


def test_coded_and_text_conditions_become_findings_with_their_status(engine):
    load(engine, [
        patient("p1"),
        condition("c1", {"coding": [{"system": ICD10CM, "code": "C90.22"}]}),
        condition("c2", {"text": "Multiple myeloma with del(17p) and t(4;14) by FISH"}),
        condition("c3", {"text": "1q21 gain by FISH"}, verification="refuted"),
        condition("c4", {"text": "t(14;16)"}, verification="provisional",
                  onset=None, recordedDate="2021-05-06"),
        condition("c5", {"text": "Essential hypertension"}),  # not a study finding
    ])
    summary = run_map(engine)
    assert _records(engine) == [
        ("del_17p", "present", "2021-02-03", "text", None),
        ("extramedullary", "present", "2021-02-03", "icd10cm", "C90.22"),
        ("gain_1q", "absent", "2021-02-03", "text", None),
        ("t_14_16", "uncertain", "2021-05-06", "text", None),
        ("t_4_14", "present", "2021-02-03", "text", None),
    ]
    assert summary.rows["condition_record"] == 5
    assert summary.unmapped == 1


def test_entered_in_error_is_excluded_and_bad_conditions_are_quarantined(engine):
    load(engine, [
        patient("p1"),
        condition("c1", {"text": "del(17p)"}, verification="entered-in-error"),
        condition("c2", {"text": "del(17p)"}, onset=None),
        condition("c3", {"text": "del(17p)"}, verification="maybe"),
        condition("c4", {"text": "del(17p)"}, subject={"reference": "Patient/nobody"}),
    ])
    summary = run_map(engine)
    assert _records(engine) == []
    assert summary.excluded == 1
    assert summary.reasons == {"missing onset and recorded date": 1,
                               "unknown verificationStatus": 1,
                               "reference to unknown patient": 1}


def test_riss_stage_observation_is_a_coded_lab(engine):
    stage = {"valueCodeableConcept": {"coding": [{
        "system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "code": "C141395"}]}}
    load(engine, [patient("p1"), observation("o1", "p1", "21908-9", **stage)])
    run_map(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT analyte, value_code, effective_date FROM lab_result")).all()
    assert [(r[0], r[1], str(r[2])) for r in rows] == [("riss_stage", "II", "2022-03-01")]
