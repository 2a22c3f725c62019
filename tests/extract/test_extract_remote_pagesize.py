"""A REST run without ``page_size`` in its config uses the largest page the server takes
(connector/fhir/pagesize.py), found with one request; a configured size is used as is."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from connector.db.models import ExtractRun
from connector.extract.remote import extract_remote
from connector.fhir.config import DEFAULT_RESOURCE_TYPES

OPTS = {"rate_limit": 0, "overlap_seconds": 0, "site": "s1", "scope": "all"}


def _message(engine) -> str:
    with Session(engine) as s:
        return s.exec(select(ExtractRun.message).order_by(ExtractRun.id.desc())).scalars().first()


def test_without_a_page_size_the_run_asks_the_server_once(fresh_server, make_engine,
                                                          cohort_data):
    server, proxy = fresh_server
    engine = make_engine()
    summary = extract_remote(engine, server.base_url, **OPTS)
    assert summary.read == len(cohort_data["resources"])
    assert "page_size=1000" in _message(engine)
    probes = [p for p in proxy.paths if "_elements=id" in p]
    assert len(probes) == 1 and "_count=1000" in probes[0]
    searches = [p for p in proxy.paths if "_count=1000" in p and "_elements" not in p]
    # one page a type: the tiny cohort fits on one page each
    assert len(searches) == len(DEFAULT_RESOURCE_TYPES)


def test_a_configured_page_size_is_used_without_a_probe(fresh_server, make_engine):
    server, proxy = fresh_server
    engine = make_engine()
    extract_remote(engine, server.base_url, **OPTS, page_size=7)
    assert "page_size=7" in _message(engine)
    assert not [p for p in proxy.paths if "_elements=id" in p]
    assert any("_count=7" in p for p in proxy.paths)
