"""M-protein as text or below a reporting limit counts as zero (issue 15, item 7)."""

from __future__ import annotations

import sqlalchemy as sa
from mapping_fhir import UCUM, load, observation, patient

from connector.mapping import run_map


def _labs(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT source_id, analyte, value, unit, original_value FROM lab_result "
            "ORDER BY source_id"))]


def test_text_and_comparator_results_are_zero_and_keep_what_was_sent(engine):
    load(engine, [
        patient("p1"),
        observation("o1", "p1", "33358-3", date="2022-03-01", valueString="None detected."),
        observation("o2", "p1", "33358-3", date="2022-03-02", valueString="NOT DETECTED"),
        observation("o3", "p1", "33358-3", date="2022-03-03", valueQuantity={
            "comparator": "<", "value": 0.1, "unit": "g/dL", "system": UCUM, "code": "g/dL"}),
        observation("o4", "p1", "33358-3", date="2022-03-04", valueString="<0.1 g/dL"),
        observation("o5", "p1", "42482-0", date="2022-03-05", valueString="not detected"),
        observation("o6", "p1", "33358-3", date="2022-03-06", value=0.4),
    ])
    summary = run_map(engine)
    assert summary.quarantined == 0
    assert _labs(engine) == [
        ("o1", "serum_m_protein", 0.0, "g/dL", "None detected."),
        ("o2", "serum_m_protein", 0.0, "g/dL", "NOT DETECTED"),
        ("o3", "serum_m_protein", 0.0, "g/dL", "<0.1"),
        ("o4", "serum_m_protein", 0.0, "g/dL", "<0.1 g/dL"),
        ("o5", "urine_m_protein", 0.0, "mg/24h", "not detected"),
        ("o6", "serum_m_protein", 0.4, "g/dL", "0.4"),
    ]


def test_other_text_and_a_greater_than_are_still_refused_with_a_reason(engine):
    load(engine, [
        patient("p1"),
        observation("o1", "p1", "33358-3", valueString="see comment"),
        observation("o2", "p1", "33358-3", date="2022-03-02", valueQuantity={
            "comparator": ">", "value": 7, "unit": "g/dL", "system": UCUM, "code": "g/dL"}),
    ])
    summary = run_map(engine)
    assert summary.quarantined == 1 and _labs(engine) == [
        ("o2", "serum_m_protein", 7.0, "g/dL", ">7")]
    assert summary.reasons == {"expected valueQuantity for serum_m_protein": 1}
