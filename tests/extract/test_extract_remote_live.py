"""Against a live public FHIR server (the HAPI sandbox): only when COHORT_LIVE_FHIR_URL is set.

    COHORT_LIVE_FHIR_URL=https://hapi.fhir.org/baseR4 .venv/bin/pytest -m live

A public sandbox holds whatever people posted, so the test checks that a
cohort-scoped run completes against a real server's paging, capabilities and
error behaviour, not what it finds. It is gentle: two requests a second.
"""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import select
from sqlmodel import Session

from connector.db.models import ExtractRun
from connector.extract.remote import extract_remote
from connector.fhir.client import FhirClient

URL = os.environ.get("COHORT_LIVE_FHIR_URL", "")

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(not URL, reason="COHORT_LIVE_FHIR_URL is not set")]


def test_live_capabilities_and_paging():
    with FhirClient(URL, page_size=10, timeout=60) as client:
        caps = client.capabilities()
        assert caps.fhir_version.startswith("4.")
        assert caps.searchable("Patient")
        pages = client.search("Patient", [("_elements", "id")])
        first, second = next(pages), next(pages, None)
        assert first.resources
        if second is not None:  # the next link was followed as given
            assert {r["id"] for r in first.resources} != {r["id"] for r in second.resources}
        assert client.server_time()


def test_live_cohort_run(engine):
    summary = extract_remote(engine, URL, site="live", rate_limit=2, page_size=100,
                             concurrency=2, timeout=120)
    with Session(engine) as s:
        run = s.exec(select(ExtractRun)).scalars().one()
    assert run.status == "ok" and run.mode == "rest"
    assert "patients screened" in run.message
    counts = json.loads(run.counts_json)
    assert summary.read == sum(c.get("fetched", 0) for c in counts.values())
