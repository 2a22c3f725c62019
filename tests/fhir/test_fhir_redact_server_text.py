"""Issue 13, item 5: server-written text (OperationOutcome diagnostics) is scrubbed of
resource ids and anything identifier-shaped before it is logged, shown or stored in
``extract_run.message``. Through the fault proxy in front of sekmet."""

from __future__ import annotations

import logging

import pytest
from fault_proxy import outcome_answer
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from connector import pipeline
from connector.cli import EXIT_SOURCE, app
from connector.db.models import ExtractRun
from connector.fhir.client import outcome_text
from connector.fhir.redact import scrub_server_text


@pytest.mark.parametrize(("text", "hidden", "kept"), [
    ("NullPointerException at Patient 34a95157", "34a95157", "NullPointerException at Patient"),
    ("HAPI-0389: Patient/pt9e1b2c3d4/_history/2 not found", "pt9e1b2c3d4", "HAPI-0389"),
    ("MRN000123456789 born 1955-03-15, mail john.doe@example.org", "1955-03-15", "born"),
    ("Patient id abc could not be loaded", "abc", "could not be loaded"),
    ("resource 3f2c0b4e-1d2a-4bde-9f1c-0a1b2c3d4e5f failed", "3f2c0b4e", "failed"),
])
def test_identifier_shaped_text_is_scrubbed(text, hidden, kept):
    out = scrub_server_text(text)
    assert hidden not in out and kept in out


def test_ordinary_diagnostics_stay_readable():
    text = "Unknown search parameter 'foo' for resource type Patient (HTTP 400)"
    assert scrub_server_text(text) == text
    assert outcome_text({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "diagnostics": "Patient resource is invalid at line 12"}]}) == \
        "error: Patient resource is invalid at line 12"


def test_a_server_error_naming_a_patient_leaks_it_nowhere(proxied, cohort_data, tmp_path,
                                                           caplog):
    server, proxy = proxied
    patient = cohort_data["patients"][0]
    mrn = cohort_data["identifiers"][0]
    diagnostics = (f"NullPointerException at Patient {patient} (identifier {mrn}) in "
                   f"ObservationDao; see Patient/{patient}")
    # a search that carries no ids: only scrubbing server text can hide them
    proxy.rewrite = outcome_answer("/Observation?", 400, diagnostics)
    caplog.set_level(logging.DEBUG)
    db = f"sqlite:///{tmp_path / 'db.db'}"
    result = CliRunner().invoke(app, ["extract", "--source", server.base_url, "--site", "s",
                                      "--db", db, "--scope", "all", "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == EXIT_SOURCE, result.output
    assert "NullPointerException at Patient <id>" in result.output
    with Session(pipeline.open_db(db)) as s:
        run = s.exec(select(ExtractRun)).scalars().one()
    assert run.status == "failed" and "NullPointerException" in run.message
    for where in (result.output, run.message, caplog.text):
        assert patient not in where and mrn not in where
