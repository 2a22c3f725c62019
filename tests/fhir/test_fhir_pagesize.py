"""The largest page size a server accepts (connector/fhir/pagesize.py), read from a probe."""

from __future__ import annotations

import pytest
from fhir_server import serving, tiny_cohort

from connector.fhir.client import FhirClient
from connector.fhir.pagesize import FALLBACK, probe_page_size, read_page_size


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
    assert read_page_size(bundle, ceiling=2000).size == size
