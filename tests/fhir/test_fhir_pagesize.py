"""The page size of a run (connector/fhir/pagesize.py): the config's, never exceeded; the
CapabilityStatement's maximum; or what a probe of the server shows."""

from __future__ import annotations

import pytest
from fhir_server import serving, tiny_cohort

from connector.fhir.capabilities import Capabilities
from connector.fhir.client import FhirClient
from connector.fhir.pagesize import (
    CEILING,
    FALLBACK,
    choose_page_size,
    probe_page_size,
    read_page_size,
)


@pytest.fixture(scope="module")
def big_server():
    """sekmet with 1,200 Observations: more than the 1,000 a page it allows."""
    with serving(tiny_cohort(12, observations=100)["resources"]) as server:
        yield server


def test_the_servers_clamp_is_read_from_its_next_link(big_server):
    with FhirClient(big_server.base_url) as client:
        probe = probe_page_size(client, "Observation", ceiling=5000)
        assert probe.size == 1000 and "next link" in probe.how
        assert client.stats.requests == 1
        # the size found is one the server honours: a full page of it, then the rest
        pages = list(client.search("Observation", count=probe.size))
    assert [len(p.resources) for p in pages] == [1000, 200]


def test_a_type_that_fits_on_one_page_takes_the_ceiling(big_server):
    with FhirClient(big_server.base_url) as client:
        probe = probe_page_size(client, "Patient", ceiling=800)
    assert probe.size == 800


def test_a_refused_probe_falls_back(big_server):
    with FhirClient(big_server.base_url) as client:
        probe = probe_page_size(client, "NoSuchType", ceiling=5000)
    assert probe.size == FALLBACK and "refused" in probe.how


@pytest.mark.parametrize(("bundle", "size"), [
    ({"resourceType": "Bundle", "link": [{"relation": "self", "url": "x?_count=250"}]}, 250),
    ({"resourceType": "Bundle", "link": [{"relation": "next", "url": "x?page=2"}],
      "entry": [{"resource": {}}] * 40}, 40),  # no _count in the link: the page's entries
    ({"resourceType": "Bundle", "link": [{"relation": "next", "url": "x?page=2"}]}, FALLBACK),
    ({"resourceType": "Bundle", "link": [{"relation": "next", "url": "x?_count=9000"}]}, 2000),
    ({"resourceType": "Bundle", "link": [{"relation": "next", "url": "x?_count=abc"}],
      "entry": [{}] * 3}, 3),
    ({"resourceType": "OperationOutcome"}, FALLBACK),
    ({"resourceType": "Bundle", "entry": [{}] * 5}, 2000),  # everything fit
])
def test_read_page_size(bundle, size):
    assert read_page_size(bundle, asked=2000).size == size


# -- what a server says or does about _count, through the fault proxy in front of sekmet


def test_a_server_that_clamps_count_lower_shows_it_in_its_links(proxied):
    """The proxy makes sekmet serve at most 50 a page (as HAPI does at its maximum): the
    probe reads 50 from the next link, and pages of 50 read every Observation."""
    server, proxy = proxied
    proxy.count_cap = 50
    with FhirClient(server.base_url) as client:
        probe = probe_page_size(client, "Observation")
        assert (probe.size, client.stats.requests) == (50, 1)
        pages = list(client.search("Observation", count=probe.size))
    assert [len(p.resources) for p in pages] == [50, 50, 20]


def test_a_server_that_refuses_a_large_count_is_asked_smaller_sizes(proxied):
    """A 400 for _count above 150: asked again without _elements, then 500, 200, 100;
    the first size it takes is the run's."""
    server, proxy = proxied
    proxy.count_cap, proxy.count_over_cap = 150, "reject"
    with FhirClient(server.base_url) as client:
        probe = probe_page_size(client, "Observation")
    assert probe.size == 100 and "refused before" in probe.how
    asked = [p.split("?", 1)[1] for p in proxy.paths]
    assert asked == ["_count=1000&_elements=id", "_count=1000", "_count=500", "_count=200",
                     "_count=100"]


def test_a_server_that_refuses_elements_is_probed_without(proxied):
    server, proxy = proxied
    proxy.refuse = ("_elements",)
    with FhirClient(server.base_url) as client:
        probe = probe_page_size(client, "Patient")
    assert probe.size == CEILING and "refused before: _count=1000&_elements=id" in probe.how
    assert [p.split("?", 1)[1] for p in proxy.paths] == ["_count=1000"]  # the one it took


def _statement(**rest: object) -> Capabilities:
    return Capabilities({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                         "rest": [{"mode": "server", **rest}]})


@pytest.mark.parametrize(("rest", "stated"), [
    ({}, None),
    ({"extension": [{"url": "https://vendor.example/fhir/StructureDefinition/maxPageSize",
                     "valueInteger": 300}]}, 300),
    ({"extension": [{"url": "https://vendor.example/other", "valueInteger": 7}]}, None),
    ({"searchParam": [{"name": "_count", "type": "number",
                       "documentation": "Results per page; maximum 250."}]}, 250),
    ({"resource": [{"type": "Observation", "searchParam": [
        {"name": "_count", "documentation": "at most 400 a page"}]}],
      "extension": [{"url": "x/max-page-size", "valuePositiveInt": 500}]}, 400),  # smallest
    ({"searchParam": [{"name": "_count", "documentation": "Number of results per page"}]},
     None),
])
def test_the_capability_statement_states_a_maximum_page_size_or_not(rest, stated):
    found = _statement(**rest).max_page_size()
    assert (found[0] if found else None) == stated


def test_the_choice_never_exceeds_the_config_and_probes_only_without_a_statement(proxied):
    server, proxy = proxied
    with FhirClient(server.base_url) as client:
        stated = _statement(searchParam=[{"name": "_count", "documentation": "maximum 300"}])
        assert choose_page_size(client, stated, configured=500).size == 300
        assert choose_page_size(client, stated, configured=100).size == 100
        assert choose_page_size(client, _statement(), configured=5000).size == 5000
        assert choose_page_size(client, _statement(extension=[
            {"url": "x/maxPageSize", "valueInteger": 5000}])).size == CEILING
        assert client.stats.requests == 0  # none of these asked the server
        assert choose_page_size(client, _statement()).size == CEILING  # sekmet: all fit
        assert client.stats.requests == 1
