"""patient.last_record_date: the last day of any resource of the patient, mapped or not."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from mapping_fhir import CPT, RXNORM, concept, load, med_admin, observation, patient, procedure

from connector.mapping import run_map

D = dt.date


def _last_records(engine) -> dict[str, dt.date | None]:
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT source_id, last_record_date FROM patient")).all()
    return {pid: (day if day is None or isinstance(day, dt.date)
                  else dt.date.fromisoformat(str(day))) for pid, day in got}


def test_last_record_counts_resources_no_code_set_maps(engine):
    load(engine, [
        patient("p1"), patient("p2"), patient("p3"),
        observation("o1", "p1", "33358-3", date="2022-03-01", value=1.2),
        # an antibiotic no drug code set maps, after the last lab
        med_admin("m1", "p1", concept(RXNORM, "723", "amoxicillin"), date="2022-06-10"),
        # a procedure the study ignores (CAR-T transport), later still, as a period
        procedure("x1", "p1", concept(CPT, "0538T"), performedPeriod={
            "start": "2022-07-01", "end": "2022-07-02"}),
        # entered in error: not a contact
        med_admin("m2", "p1", concept(RXNORM, "723", "amoxicillin"), date="2022-09-01",
                  status="entered-in-error"),
        # a heart rate: the raw store keeps only its code (codes/labfilter.py) and, for the
        # last contact, its patient's latest day (extract/contact.py)
        observation("o2", "p2", "8867-4", date="2021-12-24", value=70, unit="/min"),
        observation("o3", "p2", "8867-4", date="2021-11-02", value=72, unit="/min"),
        # not contact: entered in error, or a day after the load
        observation("o4", "p2", "8867-4", date="2022-01-05", value=70, unit="/min",
                    status="entered-in-error"),
        observation("o5", "p3", "8867-4", date="2999-01-01", value=70, unit="/min"),
    ])
    run_map(engine)
    assert _last_records(engine) == {"p1": D(2022, 7, 2), "p2": D(2021, 12, 24), "p3": None}
    with engine.connect() as conn:  # the vital signs themselves are still code only
        bodies = conn.execute(sa.text(
            "SELECT count(*) FROM raw_resource WHERE trimmed IS NOT NULL")).scalar_one()
    assert bodies == 4


def test_a_later_load_only_moves_the_trimmed_contact_forward(engine):
    load(engine, [patient("p2"),
                  observation("o2", "p2", "8867-4", date="2021-12-24", value=70, unit="/min")])
    load(engine, [observation("o9", "p2", "8867-4", date="2021-10-01", value=70, unit="/min")])
    run_map(engine)
    assert _last_records(engine)["p2"] == D(2021, 12, 24)
    load(engine, [observation("o10", "p2", "8867-4", date="2022-02-01", value=70,
                              unit="/min")])
    run_map(engine)
    assert _last_records(engine)["p2"] == D(2022, 2, 1)
