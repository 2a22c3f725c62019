"""Fixtures for the FHIR client tests: a sekmet server with a tiny cohort, and a proxy."""

from __future__ import annotations

import pytest
from fhir_server import reset_proxy, serving, serving_behind_proxy, tiny_cohort


@pytest.fixture(scope="module")
def cohort_data() -> dict:
    return tiny_cohort(12, observations=10)


@pytest.fixture(scope="module")
def fhir_server(cohort_data):
    with serving(cohort_data["resources"]) as server:
        yield server


@pytest.fixture(scope="module")
def _proxied_module(cohort_data):
    with serving_behind_proxy(cohort_data["resources"]) as pair:
        yield pair


@pytest.fixture
def proxied(_proxied_module):
    """A server behind a fault proxy, reset to fault-free for each test: (server, proxy)."""
    server, proxy = _proxied_module
    reset_proxy(proxy)
    return server, proxy
