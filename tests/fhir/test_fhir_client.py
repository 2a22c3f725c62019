"""The FHIR client against a real server: paging, capabilities, errors, retries, timeouts."""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from urllib.parse import urlsplit

import pytest

from connector.fhir.client import Capabilities, FhirClient, shift_instant, to_instant, to_page
from connector.fhir.errors import CapabilityError, HttpError, PagingError, RetryExhausted
from connector.fhir.redact import describe_url, scrub, sensitive_values
from connector.fhir.retry import RetryBudget, RetryPolicy, parse_retry_after


def _client(base_url: str, **kw) -> FhirClient:
    kw.setdefault("retry", RetryPolicy(max_attempts=5, backoff_initial=0.01, backoff_max=0.05,
                                       retry_after_cap=5))
    return FhirClient(base_url, **kw)


# ------------------------------------------------------------------ paging


def test_paging_follows_next_links_exactly_and_sends_count(proxied, cohort_data):
    server, proxy = proxied
    with _client(server.base_url, page_size=7) as client:
        pages = list(client.search("Observation"))
    ids = [r["id"] for p in pages for r in p.resources]
    n_obs = sum(1 for r in cohort_data["resources"] if r["resourceType"] == "Observation")
    assert len(ids) == len(set(ids)) == n_obs
    assert len(pages) == -(-n_obs // 7)
    # the first request carries _count; every later request is the previous next link, verbatim
    assert "_count=7" in proxy.paths[0]
    for page, path in zip(pages, proxy.paths[1:], strict=False):
        nxt = urlsplit(page.next_url)
        assert path == f"{nxt.path}?{nxt.query}"
    assert pages[-1].next_url is None
    assert all(p.total == n_obs for p in pages)


def test_next_link_to_another_host_is_refused():
    client = _client("http://127.0.0.1:9/fhir")
    with pytest.raises(PagingError, match="another host"):
        client._check_next("http://evil.example:80/fhir/Patient?page=2")
    assert client._check_next("/fhir/Patient?page=2") == "http://127.0.0.1:9/fhir/Patient?page=2"


def test_page_parsing_separates_matches_includes_and_outcomes():
    page = to_page({"resourceType": "Bundle", "total": 3, "meta": {"lastUpdated":
                    "2024-05-01T10:00:00+02:00"}, "link": [{"relation": "next", "url": "u2"}],
                    "entry": [{"resource": {"resourceType": "Patient", "id": "a"},
                               "search": {"mode": "match"}},
                              {"resource": {"resourceType": "Medication", "id": "m"},
                               "search": {"mode": "include"}},
                              {"resource": {"resourceType": "OperationOutcome", "issue": [
                                  {"severity": "warning", "diagnostics": "ignored x"}]},
                               "search": {"mode": "outcome"}}]})
    assert [r["id"] for r in page.resources] == ["a"]
    assert [r["id"] for r in page.included] == ["m"]
    assert page.outcomes == ["warning: ignored x"]
    assert page.next_url == "u2" and page.total == 3
    assert page.server_time == "2024-05-01T08:00:00.000Z"


# ------------------------------------------------------------ capabilities


def test_capabilities_are_read_and_missing_support_is_named(fhir_server):
    with _client(fhir_server.base_url) as client:
        caps = client.capabilities()
        assert caps.fhir_version.startswith("4.0")
        assert caps.searchable("Observation") and caps.has_param("Observation", "patient")
        assert caps.history_type("Observation")
        with pytest.raises(CapabilityError) as err:
            caps.require(client.base_url, {
                "Observation": [(("patient",), "ok"), (("no-such-param",), "for the test")],
                "Patient": [], "NotAType": []})
    message = str(err.value)
    assert "Observation: no search parameter 'no-such-param' (for the test)" in message
    assert "NotAType: resource type not supported" in message
    assert "patient'" not in message.replace("'no-such-param'", "")


def test_capabilities_version_and_interactions():
    caps = Capabilities({"resourceType": "CapabilityStatement", "fhirVersion": "3.0.2",
                         "rest": [{"mode": "server", "resource": [
                             {"type": "Patient", "interaction": [{"code": "read"}]}]}]})
    assert not caps.searchable("Patient")
    with pytest.raises(CapabilityError, match="FHIR 3.0.2") as err:
        caps.require("http://x/fhir", {"Patient": []})
    assert "Patient: no search" in str(err.value)


def test_metadata_that_is_not_a_capability_statement(proxied):
    server, _ = proxied
    with _client(server.root_url + "/fhir/Patient") as client:  # a wrong base URL
        with pytest.raises(CapabilityError):
            client.capabilities()


# --------------------------------------------------------------- errors


def test_operation_outcome_text_is_shown_without_the_requested_ids(fhir_server):
    with _client(fhir_server.base_url) as client:
        with pytest.raises(HttpError) as err:
            client.get_json(client.url("Patient/pt-missing-0a1b2c3d"))
        assert err.value.status == 404
        assert "not found" in str(err.value)
        assert "pt-missing-0a1b2c3d" not in str(err.value)
        with pytest.raises(HttpError, match="Unknown search parameter 'bogus'") as err:
            list(client.search("Observation", [("patient", "pt-secret-99887766"),
                                               ("bogus", "1")]))
        assert "pt-secret-99887766" not in str(err.value)
        assert "patient=<1 value>" in str(err.value)


def test_other_4xx_are_not_retried(proxied):
    server, proxy = proxied
    with _client(server.base_url) as client:
        with pytest.raises(HttpError):
            list(client.search("Observation", [("bogus", "1")]))
        assert client.stats.retries == 0
    assert proxy.requests == 1


# -------------------------------------------------------------- retries


@pytest.mark.parametrize("kind", ["503", "500", "reset", "truncate", "429"])
def test_transient_faults_are_retried(proxied, kind):
    server, proxy = proxied
    proxy.retry_after = "0"
    proxy.script = [kind, kind]
    with _client(server.base_url) as client:
        pages = list(client.search("Patient", count=5))
        assert client.stats.retries == 2
    assert sum(len(p.resources) for p in pages) == 12
    assert proxy.faults[kind] == 2


def test_read_timeout_is_retried(proxied):
    server, proxy = proxied
    proxy.slow_seconds = 0.6
    proxy.script = ["slow"]
    with _client(server.base_url, timeout=0.3) as client:
        body, _ = client.get_json(client.url("Patient"), [("_summary", "count")])
        assert client.stats.retry_reasons["read timeout"] == 1
    assert body["total"] == 12


@pytest.mark.parametrize("kind", ["429", "429-date"])
def test_retry_after_is_honoured(proxied, kind):
    server, proxy = proxied
    # an HTTP date has whole seconds: "in 2 s" means between 1 and 2 s from now
    proxy.retry_after = "2" if kind == "429-date" else "1"
    proxy.script = [kind]
    with _client(server.base_url) as client:
        start = time.monotonic()
        client.count("Patient")
        elapsed = time.monotonic() - start
    assert 0.95 <= elapsed < 3


def test_retry_after_is_capped(proxied):
    server, proxy = proxied
    proxy.retry_after = "3600"
    proxy.script = ["503"]
    policy = RetryPolicy(max_attempts=3, retry_after_cap=0.2)
    with _client(server.base_url, retry=policy) as client:
        start = time.monotonic()
        assert client.count("Patient") == 12
    assert time.monotonic() - start < 2


def test_attempts_and_the_run_budget_bound_retries(proxied):
    server, proxy = proxied
    proxy.retry_after, proxy.kinds, proxy.rate = "0", ("503",), 1.0
    with _client(server.base_url, retry=RetryPolicy(max_attempts=3, backoff_initial=0.01)) as c:
        with pytest.raises(RetryExhausted, match="3 attempts") as err:
            c.count("Patient")
        assert "HTTP 503" in str(err.value) and "injected 503" in str(err.value)
    assert proxy.requests == 3
    proxy.requests = 0
    budget = RetryBudget(4)
    with _client(server.base_url, retry=RetryPolicy(max_attempts=10, backoff_initial=0.01),
                 budget=budget) as client:
        with pytest.raises(RetryExhausted, match="budget"):
            client.count("Patient")
        with pytest.raises(RetryExhausted, match="budget"):
            client.count("Patient")  # nothing left: one attempt, no retry
    assert proxy.requests == 5 + 1


def test_parse_retry_after():
    now = dt.datetime(2024, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    date = email.utils.format_datetime(now + dt.timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0
    past = email.utils.format_datetime(now - dt.timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_is_exponential_with_jitter_and_capped():
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=4.0, retry_after_cap=10)
    top = [policy.wait_seconds(None, n, lambda lo, hi: hi) for n in range(1, 7)]
    assert top == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.wait_seconds(None, 3, lambda lo, hi: lo) == 0.0

    class Exc(Exception):
        retry_after = 60.0
    assert policy.wait_seconds(Exc(), 1, lambda lo, hi: hi) == 10


# ------------------------------------------------------------ clock, urls


def test_server_time_is_the_servers_clock_in_milliseconds(fhir_server):
    with _client(fhir_server.base_url) as client:
        stamp = client.server_time()
    assert stamp and stamp.endswith("Z") and len(stamp) == 24
    when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 5


def test_instants():
    assert to_instant("Thu, 26 Nov 2026 06:10:48 GMT") == "2026-11-26T06:10:48.000Z"
    assert to_instant("2024-01-01T01:00:00.1234+01:00") == "2024-01-01T00:00:00.123Z"
    assert shift_instant("2024-01-01T00:00:00.000Z", -1.5) == "2023-12-31T23:59:58.500Z"
    assert to_instant("yesterday") is None


def test_urls_are_described_without_ids():
    url = "http://h:8/fhir/Observation?patient=p1,p2&_count=200&category=laboratory"
    assert describe_url(url, "http://h:8/fhir") == (
        "Observation?patient=<2 values>&_count=200&category=laboratory")
    assert describe_url("http://h:8/fhir/Patient/abc123/_history/3") == (
        "fhir/Patient/<id>/_history/<id>")
    hidden = sensitive_values("http://h/fhir/Observation?subject=Patient/x1y2z3&_count=5")
    assert scrub("subject Patient/x1y2z3 unknown; x1y2z3!", hidden) == (
        "subject <redacted> unknown; <redacted>!")
