"""Issue 13, item 1: a next link that urllib3 reads as another host is refused, and our
bearer token never reaches that host. Through the fault proxy in front of sekmet (with
bearer auth), with a recording "other host" where the deceptive links lead."""

from __future__ import annotations

import pytest
from fault_proxy import rewrite_links
from fhir_server import load_resources, reset_proxy, start_behind_proxy, tiny_cohort
from hostile_env import FOREIGN_ID, OtherHost, deceptive, diff, tables
from sqlalchemy import func, select
from sqlmodel import Session

from connector import pipeline
from connector.db.models import ExtractRun, RawResource, SyncState
from connector.extract import run_extract
from connector.fhir.client import FhirClient, UnsafeLink
from connector.fhir.config import AuthConfig, RetryConfig
from connector.fhir.errors import ExtractError
from connector.fhir.urls import UnsafeUrl, check_form, origin, same_origin

TOKEN = "bearer-t0ken-for-urls-5ec2e7"
RUN = {"rate_limit": 0, "page_size": 5, "patients_per_request": 3, "overlap_seconds": 0,
       "retry": RetryConfig(max_attempts=2, backoff_initial=0.01, budget=50),
       "auth": AuthConfig(type="bearer", token_env="COHORT_URLS_TOKEN")}


@pytest.mark.parametrize("url", [
    "http://evil.example\\@127.0.0.1:8080/fhir/Patient",
    "http://127.0.0.1:8080\\@127.0.0.1:8080/fhir/Patient",
    "http://127.0.0.1:8080/fhir/Patient\\x",
    "http://user@127.0.0.1:8080/fhir/Patient",
    "http://user:pw@127.0.0.1:8080/fhir/Patient",
    "http://127.0.0.1:8080/fhir/Patient\n?x=1",
    "http://127.0.0.1:8080/fhir/Pat\x00ient",
    "ftp://127.0.0.1:8080/fhir/Patient",
    "http:///fhir/Patient",
])
def test_deceptive_urls_are_refused(url):
    with pytest.raises(UnsafeUrl):
        check_form(url)
    with pytest.raises(UnsafeUrl):
        origin(url)


def test_the_origin_is_where_the_http_library_connects():
    assert origin("HTTP://LocalHost:80/fhir") == "http://localhost:80"
    assert origin("https://h.example/fhir?_count=5") == "https://h.example:443"
    assert same_origin("http://127.0.0.1:8080/fhir/Patient?_offset=5", "http://127.0.0.1:8080/fhir")
    assert not same_origin("http://127.0.0.1:8081/fhir", "http://127.0.0.1:8080/fhir")
    assert not same_origin("https://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/fhir")


def test_the_client_refuses_the_issue_s_next_link():
    client = FhirClient("http://127.0.0.1:8080/fhir")
    with pytest.raises(UnsafeLink, match="backslash"):
        client._check_next("http://evil.example\\@127.0.0.1:8080/fhir/Patient?_offset=5")
    with pytest.raises(UnsafeLink, match="user info"):
        client._check_next("http://x@127.0.0.1:8080/fhir/Patient?_offset=5")


@pytest.fixture(scope="module")
def secured():
    data = tiny_cohort(6, observations=8, seed=13)
    server, proxy = start_behind_proxy(auth={"types": ["bearer"], "tokens": [TOKEN]})
    load_resources(server, data["resources"], headers={"Authorization": f"Bearer {TOKEN}"})
    other = OtherHost()
    yield server, proxy, other
    other.stop()
    proxy.stop()
    server.stop()


def _count(engine, model, *where) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_a_next_link_to_another_host_gets_no_token_and_loses_nothing(secured, tmp_path,
                                                                      monkeypatch):
    server, proxy, other = secured
    reset_proxy(proxy)
    monkeypatch.setenv("COHORT_URLS_TOKEN", TOKEN)
    clean = pipeline.open_db(f"sqlite:///{tmp_path / 'clean.db'}")
    run_extract(clean, server.base_url, site="s", **RUN)

    proxy.rewrite = rewrite_links(lambda url: deceptive(url, proxy.port, other.port),
                                  where="/Observation")
    engine = pipeline.open_db(f"sqlite:///{tmp_path / 'hostile.db'}")
    with pytest.raises(ExtractError, match="backslash"):
        run_extract(engine, server.base_url, site="s", **RUN)
    assert other.requests == [], "a request reached the other host"
    assert other.leaked_auth == []
    assert _count(engine, RawResource, RawResource.resource_id == FOREIGN_ID) == 0
    assert _count(engine, SyncState) == 0  # no watermark moved
    with Session(engine) as s:
        run = s.exec(select(ExtractRun)).scalars().one()
    assert run.status == "failed" and "backslash" in run.message
    assert TOKEN not in run.message

    reset_proxy(proxy)
    run_extract(engine, server.base_url, site="s", **RUN)
    assert diff(tables(engine), tables(clean)) == ""
