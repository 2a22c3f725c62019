"""Fixtures for the FHIR client tests: a sekmet server with a tiny cohort, and a proxy."""

from __future__ import annotations

import pytest
from fhir_server import load_resources, start_behind_proxy, start_server, tiny_cohort


@pytest.fixture(scope="module")
def cohort_data() -> dict:
    return tiny_cohort(12, observations=10)


@pytest.fixture(scope="module")
def fhir_server(cohort_data):
    server = start_server()
    load_resources(server, cohort_data["resources"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _proxied_module(cohort_data):
    server, proxy = start_behind_proxy()
    load_resources(server, cohort_data["resources"])
    yield server, proxy
    proxy.stop()
    server.stop()


@pytest.fixture
def proxied(_proxied_module):
    """A server behind a fault proxy, reset to fault-free for each test: (server, proxy)."""
    server, proxy = _proxied_module
    proxy.rate, proxy.script, proxy.hook, proxy.only = 0.0, [], None, None
    proxy.kinds = ("429", "503", "500", "reset", "truncate", "slow")
    proxy.retry_after, proxy.slow_seconds = "1", 2.0
    proxy.faults.clear()
    proxy.requests = 0
    proxy.paths.clear()
    return server, proxy
