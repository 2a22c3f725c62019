"""A REST run without ``page_size`` in its config uses the largest page the server takes
(connector/fhir/pagesize.py): the CapabilityStatement's stated maximum, else what one probe
shows; a configured size is used as is, lowered to a stated maximum, never raised."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import select
from sqlmodel import Session

from connector.db.models import ExtractRun, RawResource
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


def _stating(maximum: int):
    """A proxy rewrite: the CapabilityStatement says, in ``_count``'s documentation, that
    pages hold at most ``maximum``."""
    def rewrite(method, path, status, headers, content):
        if "/metadata" not in path:
            return None
        body = orjson.loads(content)
        body["rest"][0]["searchParam"] = [
            {"name": "_count", "type": "number",
             "documentation": f"Results per page, at most {maximum}."}]
        return status, [(k, v) for k, v in headers if k.lower() != "content-length"], \
            orjson.dumps(body)
    return rewrite


def _stored(engine) -> set[tuple[str, str]]:
    with Session(engine) as s:
        rows = s.exec(select(RawResource.resource_type, RawResource.resource_id)).all()
    return {(t, i) for t, i in rows}


def test_a_maximum_the_capability_statement_states_is_used_without_a_probe(
        fresh_server, make_engine, cohort_data):
    server, proxy = fresh_server
    proxy.rewrite = _stating(30)
    engine = make_engine()
    summary = extract_remote(engine, server.base_url, **OPTS)
    assert summary.read == len(cohort_data["resources"])
    assert "page_size=30" in _message(engine)
    assert not [p for p in proxy.paths if "_elements=id" in p]
    assert {_asked(p) for p in proxy.paths if "_count=" in p} == {30}  # next links too


def test_a_configured_page_size_never_exceeds_the_servers_stated_maximum(fresh_server,
                                                                         make_engine):
    server, proxy = fresh_server
    proxy.rewrite = _stating(5)
    engine = make_engine()
    extract_remote(engine, server.base_url, **OPTS, page_size=7)
    assert "page_size=5" in _message(engine)


@pytest.mark.parametrize("over_cap", ["clamp", "reject"])
def test_a_server_that_caps_count_is_read_whole_at_its_size(fresh_server, make_engine,
                                                            cohort_data, over_cap):
    """Behind the proxy sekmet serves at most 150 a page, lowering a larger _count
    (clamp) or refusing it with a 400 (reject): the run finds a size the server takes
    (150 from the links; 100, the first of the smaller sizes asked, after refusals) and
    reads everything, Observations over several pages, as a fault-free run does."""
    server, proxy = fresh_server
    proxy.count_cap, proxy.count_over_cap = 150, over_cap
    engine = make_engine()
    summary = extract_remote(engine, server.base_url, **OPTS)
    size = 150 if over_cap == "clamp" else 100
    assert f"page_size={size}" in _message(engine)
    assert summary.read == len(cohort_data["resources"])
    assert _stored(engine) == {(r["resourceType"], r["id"]) for r in cohort_data["resources"]}
    over = [p for p in proxy.paths if _asked(p) > 150]
    assert len(over) == (1 if over_cap == "clamp" else 4)  # the probe's only


def _asked(path: str) -> int:
    """The _count a request asked for (0 without one)."""
    value = path.split("_count=")[1].split("&")[0] if "_count=" in path else ""
    return int(value) if value.isdigit() else 0
