"""The map stage on small resource sets: fields, dates, statuses, duplicates, transactions."""

from __future__ import annotations

import csv
import datetime as dt

import pytest
import sqlalchemy as sa
from mapping_fhir import (
    CPT,
    HCPCS,
    ICD10PCS,
    LOINC,
    RXNORM,
    SNOMED,
    concept,
    load,
    med_admin,
    observation,
    patient,
    procedure,
)

from connector.extract.store import RawStore
from connector.keys import load_secret, patient_key
from connector.mapping import run as map_run
from connector.mapping import run_map, write_unmapped

D = dt.date


def rows(engine, table: str, *columns: str) -> list[tuple]:
    cols = ", ".join(columns) if columns else "*"
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            f"SELECT {cols} FROM {table} ORDER BY {cols if columns else 'id'}"))]


def as_date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def test_patient_fields(engine):
    load(engine, [
        patient("p1", birth="1951-07", gender="male"),
        patient("p2", birth="1960", deceasedDateTime="2023-05-01T01:00:00-05:00"),
        patient("p3", birth="1949-02-28", deceasedBoolean=True),
    ])
    run_map(engine)
    got = rows(engine, "patient", "source_id", "birth_year", "sex", "death_date", "deceased",
               "patient_key")
    secret = load_secret()
    assert [(r[0], r[1], r[2], as_date(r[3]), bool(r[4])) for r in got] == [
        ("p1", 1951, "male", None, False),
        ("p2", 1960, "female", D(2023, 5, 1), True),  # the local date as written
        ("p3", 1949, "female", None, True),
    ]
    assert [r[5] for r in got] == [patient_key("site_a", p, secret) for p in ("p1", "p2", "p3")]


@pytest.mark.parametrize(("written", "expected"), [
    ("2022-03", D(2022, 3, 1)),
    ("2022", D(2022, 1, 1)),
    ("2022-03-14T23:30:00-05:00", D(2022, 3, 14)),
    ("2022-03-14T00:30:00+09:00", D(2022, 3, 14)),
    ("2022-03-14T10:00:00Z", D(2022, 3, 14)),
    ("2022-03-14T10:00:00", D(2022, 3, 14)),  # no zone: invalid FHIR, accepted leniently
])
def test_dates_are_the_local_date_as_written(engine, written, expected):
    load(engine, [patient("p1"), med_admin("m1", "p1", concept(RXNORM, "342369"), date=written),
                  observation("o1", "p1", "33358-3", date=written, value=1.5)])
    summary = run_map(engine)
    assert summary.quarantined == 0
    assert [as_date(r[0]) for r in rows(engine, "medication_exposure", "start_date")] == [
        expected]
    assert [as_date(r[0]) for r in rows(engine, "lab_result", "effective_date")] == [expected]


def test_periods_give_start_and_end(engine):
    oral = med_admin("m1", "p1", concept(RXNORM, "342369"))
    del oral["effectiveDateTime"]
    oral["effectivePeriod"] = {"start": "2021-07-01", "end": "2021-07-21"}
    load(engine, [
        patient("p1"), oral,
        procedure("pr1", "p1", concept(CPT, "38241"), performedPeriod={
            "start": "2021-06-02T08:00:00+02:00", "end": "2021-06-03"}),
    ])
    run_map(engine)
    assert [(as_date(a), as_date(b)) for a, b in rows(
        engine, "medication_exposure", "start_date", "end_date")] == [
        (D(2021, 7, 1), D(2021, 7, 21))]
    assert [(c, as_date(a), as_date(b)) for c, a, b in rows(
        engine, "procedure_event", "category", "performed_date", "end_date")] == [
        ("auto_transplant", D(2021, 6, 2), D(2021, 6, 3))]


def test_statuses_that_mean_not_done_are_excluded_and_counted(engine):
    load(engine, [
        patient("p1"),
        med_admin("m1", "p1", concept(RXNORM, "342369"), status="not-done"),
        med_admin("m2", "p1", concept(RXNORM, "342369"), status="entered-in-error",
                  date="2022-04-01"),
        med_admin("m3", "p1", concept(RXNORM, "342369"), status="on-hold", date="2022-05-01"),
        med_admin("m4", "p1", concept(RXNORM, "342369"), status="completed",
                  date="2022-06-01"),
        procedure("pr1", "p1", concept(CPT, "0540T"), status="preparation"),
        observation("o1", "p1", "33358-3", value=1.0, status="cancelled"),
        observation("o2", "p1", "33358-3", value=1.0, status="registered", date="2022-04-01"),
        observation("o3", "p1", "33358-3", date="2022-05-01",
                    dataAbsentReason={"text": "specimen lost"}),
    ])
    summary = run_map(engine)
    assert summary.excluded == 7
    assert summary.quarantined == 0
    assert [as_date(r[0]) for r in rows(engine, "medication_exposure", "start_date")] == [
        D(2022, 6, 1)]
    assert rows(engine, "procedure_event") == [] and rows(engine, "lab_result") == []


def test_duplicate_events_collapse_to_the_first_by_id(engine):
    load(engine, [
        patient("p1"),
        med_admin("ma-2", "p1", concept(RXNORM, "2619432"), date="2022-03-01T09:00:00Z"),
        med_admin("ma-1", "p1", {"text": "Tecvayli"}, date="2022-03-01T15:00:00Z"),
        med_admin("ma-3", "p1", concept(RXNORM, "2619432"), date="2022-03-08"),
        observation("o-b", "p1", "33358-3", value=2.0),
        observation("o-a", "p1", "33358-3", value=2.1),
        procedure("pr-b", "p1", concept(ICD10PCS, "XW033A7")),
        procedure("pr-a", "p1", concept(HCPCS, "Q2056")),
        procedure("pr-c", "p1", concept(CPT, "0540T")),  # no product: a different key
    ])
    summary = run_map(engine)
    assert summary.duplicates == 3
    assert rows(engine, "medication_exposure", "source_id") == [("ma-1",), ("ma-3",)]
    assert rows(engine, "lab_result", "source_id", "value") == [("o-a", 2.1)]
    assert rows(engine, "procedure_event", "source_id", "product") == [
        ("pr-a", "ciltacabtagene autoleucel"), ("pr-c", "")]


def test_medication_references(engine):
    load(engine, [
        patient("p1"),
        med_admin("m1", "p1", None, medicationReference={"reference": "#med1"},
                  contained=[{"resourceType": "Medication", "id": "med1",
                              "code": {"text": "Revlimid 10 mg capsule"}}]),
        med_admin("m2", "p1", None, date="2022-03-02",
                  medicationReference={"reference": "Medication/x1"}),
        med_admin("m3", "p1", None, date="2022-03-03",
                  medicationReference={"reference": "https://ehr.example/fhir/Medication/x2"}),
        {"resourceType": "Medication", "id": "x1", "code": concept(HCPCS, "J9047")},
        {"resourceType": "Medication", "id": "x2", "code": {"text": "local kit"},
         "ingredient": [{"itemCodeableConcept": concept(RXNORM, "3264", "dexamethasone")}]},
    ], base="https://ehr.example/fhir")  # m3's absolute reference is under the own base
    summary = run_map(engine)
    assert summary.quarantined == 0
    assert rows(engine, "medication_exposure", "source_id", "ingredient", "drug_class") == [
        ("m1", "lenalidomide", "imid"), ("m2", "carfilzomib", "pi"),
        ("m3", "dexamethasone", "steroid")]


def test_coded_results(engine):
    load(engine, [
        patient("p1"),
        observation("o1", "p1", "25700-6", valueCodeableConcept=concept(SNOMED, "10828004")),
        observation("o2", "p1", "25700-6", date="2022-04-01", valueString="negative"),
        observation("o3", "p1", "97509-4", date="2022-05-01",
                    valueCodeableConcept=concept(SNOMED, "271299001", "Worsened")),
    ])
    run_map(engine)
    assert rows(engine, "lab_result", "source_id", "analyte", "value_code", "value") == [
        ("o1", "serum_ife", "positive", None), ("o2", "serum_ife", "negative", None),
        ("o3", "disease_status", "271299001", None)]


def test_values_are_converted_to_canonical_units(engine):
    load(engine, [
        patient("p1"),
        observation("o1", "p1", "33358-3", value=12, unit="g/L"),
        observation("o2", "p1", "33358-3", date="2022-04-01", value=900, unit="mg/dL"),
        observation("o3", "p1", "36916-5", value=4.5, unit="mg/dL"),
        observation("o4", "p1", "42482-0", value=0.35, unit="g/(24.h)"),
        observation("o5", "p1", "48378-4", value=12.5, unit=None),
        observation("o6", "p1", "33358-3", date="2022-05-01", value=0.1,
                    valueQuantity={"value": 0.1, "comparator": "<", "unit": "G/DL"}),
    ])
    assert run_map(engine).quarantined == 0
    assert rows(engine, "lab_result", "source_id", "value", "unit", "original_value",
                "original_unit") == [
        ("o1", 1.2, "g/dL", "12", "g/L"), ("o2", 0.9, "g/dL", "900", "mg/dL"),
        ("o3", 45.0, "mg/L", "4.5", "mg/dL"), ("o4", 350.0, "mg/24h", "0.35", "g/(24.h)"),
        ("o5", 12.5, "ratio", "12.5", None),
        ("o6", 0.0, "g/dL", "<0.1", "G/DL")]  # below the limit: undetectable (issue 15)


def test_deleted_raw_rows_are_skipped(engine):
    load(engine, [patient("p1"), med_admin("m1", "p1", concept(RXNORM, "342369"))])
    run_map(engine)
    assert len(rows(engine, "medication_exposure")) == 1
    with engine.begin() as conn:
        RawStore(conn).mark_deleted(site="site_a", resource_type="MedicationAdministration",
                                    resource_id="m1", source="test")
    run_map(engine)
    assert rows(engine, "medication_exposure") == []


def _snapshot(engine) -> dict[str, list[tuple]]:
    out = {}
    for table in ("site", "patient", "medication_exposure", "procedure_event", "lab_result",
                  "quarantine"):
        with engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT * FROM {table}"))
            keys = [k for k in result.keys() if k not in ("id", "loaded_at", "created_at")]
            out[table] = sorted(tuple(str(m[k]) for k in keys) for m in result.mappings())
    return out


def _resources():
    return [patient("p1"), patient("p2"),
            med_admin("m1", "p1", concept(RXNORM, "342369")),
            med_admin("m2", "p2", concept(RXNORM, "2619432")),
            observation("o1", "p1", "33358-3", value=2.0),
            observation("bad", "p1", "33358-3", value=2.0, unit="furlongs", date="2022-02-01"),
            procedure("pr1", "p2", concept(CPT, "0540T"))]


def test_running_twice_gives_the_same_tables(engine):
    load(engine, _resources())
    first = run_map(engine)
    before = _snapshot(engine)
    second = run_map(engine)
    assert _snapshot(engine) == before
    assert str(first) == str(second)
    assert first.quarantined == 1 and len(before["quarantine"]) == 1


def test_an_interrupted_map_leaves_the_database_as_it_was(engine, monkeypatch):
    load(engine, _resources())
    run_map(engine)
    before = _snapshot(engine)
    load(engine, [observation("o9", "p2", "33358-3", value=3.0),
                  med_admin("m9", "p2", concept(RXNORM, "3264"))])
    real = map_run.insert_batches

    def failing(conn, model, batch):
        if model.__tablename__ == "lab_result":
            raise KeyboardInterrupt
        real(conn, model, batch)

    monkeypatch.setattr(map_run, "insert_batches", failing)
    with pytest.raises(KeyboardInterrupt):
        run_map(engine)
    assert _snapshot(engine) == before
    monkeypatch.setattr(map_run, "insert_batches", real)
    run_map(engine)
    assert ("o9",) in rows(engine, "lab_result", "source_id")


def test_one_site_is_mapped_without_touching_the_other(engine):
    load(engine, [patient("p1"), med_admin("m1", "p1", concept(RXNORM, "342369"))], "site_a")
    load(engine, [patient("q1"), med_admin("n1", "q1", concept(RXNORM, "3264"))], "site_b")
    summary = run_map(engine, site="site_b")
    assert summary.sites == ["site_b"]
    assert rows(engine, "patient", "site", "source_id") == [("site_b", "q1")]
    run_map(engine)
    assert rows(engine, "patient", "site", "source_id") == [("site_a", "p1"), ("site_b", "q1")]
    assert run_map(engine, site="nowhere").rows["patient"] == 0
    assert rows(engine, "site", "name") == [("site_a",), ("site_b",)]


def test_summary_line(engine):
    load(engine, _resources())
    text = str(run_map(engine))
    assert text.startswith("patient 2, medication_exposure 2, procedure_event 1, lab_result 1, "
                           "condition_record 0;")
    assert "1 quarantined" in text and "(site_a)" in text


def test_unmapped_report(engine, tmp_path):
    load(engine, [
        patient("p1"),
        observation("o1", "p1", "8310-5", value=37.0, unit="Cel"),
        observation("o2", "p1", "8310-5", value=37.5, unit="Cel", date="2022-04-01"),
        med_admin("m1", "p1", concept(RXNORM, "161", "acetaminophen")),
        med_admin("m2", "p1", {"text": "Vitamin D 1000 IU"}),
        procedure("pr1", "p1", concept(CPT, "99213", "office visit")),
        observation("o3", "p1", "33358-3", value=1.0),  # mapped: not in the report
    ])
    summary = run_map(engine)
    assert summary.unmapped == 5
    path = tmp_path / "unmapped.csv"
    assert write_unmapped(engine, path) == 4
    with path.open() as fh:
        got = list(csv.DictReader(fh))
    assert got[0] == {"resource_type": "Observation", "system": LOINC, "code": "8310-5",
                      "display": "", "count": "2"}
    assert {(r["resource_type"], r["code"], r["display"]) for r in got[1:]} == {
        ("MedicationAdministration", "161", "acetaminophen"),
        ("MedicationAdministration", "", "Vitamin D 1000 IU"),
        ("Procedure", "99213", "office visit")}


def test_unmapped_counts_are_stored_by_the_map_stage(engine, tmp_path):
    """The report's unmapped codes and the completeness counts come from what the map
    stage stored, not from the raw store: emptied after the map, they are unchanged."""
    from connector.analysis.completeness import load_quality

    load(engine, [patient("p1"), observation("o1", "p1", "8310-5", value=37.0, unit="Cel"),
                  observation("o2", "p1", "8310-5", value=37.5, unit="Cel", date="2022-04-01"),
                  med_admin("m1", "p1", concept(RXNORM, "161", "acetaminophen"))])
    load(engine, [patient("q1"), procedure("pr1", "q1", concept(CPT, "99213", "office visit")),
                  med_admin("m2", "q1", concept(RXNORM, "161", "Tylenol"))], site="site_b")
    run_map(engine)
    run_map(engine)  # a second map replaces the counts, never adds to them
    before = tmp_path / "before.csv"
    assert write_unmapped(engine, before) == 3
    quality = load_quality(engine)
    assert quality == {"site_a": {"unmapped_observations": 2}}
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM raw_resource"))
        conn.execute(sa.text("DELETE FROM raw_code_count"))
    after = tmp_path / "after.csv"
    assert write_unmapped(engine, after) == 3
    assert after.read_text() == before.read_text()
    assert load_quality(engine) == quality
    with before.open() as fh:
        got = {(r["code"], r["display"], r["count"]) for r in csv.DictReader(fh)}
    # one row per code over both sites, the display spelled first in sort order
    assert got == {("8310-5", "", "2"), ("161", "Tylenol", "2"), ("99213", "office visit", "1")}
    site_b = tmp_path / "site_b.csv"
    assert write_unmapped(engine, site_b, ["site_b"]) == 2
    with site_b.open() as fh:
        assert {(r["code"], r["count"]) for r in csv.DictReader(fh)} == {
            ("161", "1"), ("99213", "1")}
