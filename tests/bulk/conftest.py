"""Fixtures for the bulk-export tests: sekmet with a tiny cohort (direct and behind the fault
proxy) and a scripted stub server for protocol corners sekmet does not reach."""

from __future__ import annotations

import pytest
from bulk_stub import StubServer
from fault_proxy import ALL_KINDS
from fhir_server import load_resources, start_behind_proxy, start_server, tiny_cohort

from connector.fhir.config import RetryConfig

#: Polling as fast as a test wants (sekmet says Retry-After: 1), no request rate limit.
FAST = {"poll_max_wait": 0.05, "rate_limit": 0,
        "retry": RetryConfig(backoff_initial=0.02, backoff_max=0.1)}


def _bulk_root(server, tmp_path_factory) -> None:
    """sekmet writes export files under ./data/bulk by default; keep them in a temp dir."""
    server.ctx.bulk.root = tmp_path_factory.mktemp("sekmet") / "bulk"


@pytest.fixture(scope="module")
def bulk_data() -> dict:
    return tiny_cohort(12, observations=4)


@pytest.fixture(scope="module")
def bulk_server(bulk_data, tmp_path_factory):
    """A server that tests must not change (module-scoped)."""
    server = start_server()
    _bulk_root(server, tmp_path_factory)
    load_resources(server, bulk_data["resources"])
    yield server
    server.stop()


@pytest.fixture
def fresh_server(bulk_data, tmp_path_factory):
    """A server of its own, for tests that change data on it."""
    server = start_server()
    _bulk_root(server, tmp_path_factory)
    load_resources(server, bulk_data["resources"])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _bulk_proxied_module(bulk_data, tmp_path_factory):
    server, proxy = start_behind_proxy()
    _bulk_root(server, tmp_path_factory)
    load_resources(server, bulk_data["resources"])
    yield server, proxy
    proxy.stop()
    server.stop()


@pytest.fixture
def bulk_proxied(_bulk_proxied_module):
    """(server, proxy), the proxy fault-free and its counters cleared for each test."""
    server, proxy = _bulk_proxied_module
    proxy.rate, proxy.script, proxy.hook, proxy.only = 0.0, [], None, None
    proxy.kinds = ALL_KINDS
    proxy.retry_after, proxy.slow_seconds = "1", 2.0
    proxy.faults.clear()
    proxy.requests = 0
    proxy.paths.clear()
    proxy.__dict__.pop("decide", None)  # a test's patched decide() does not outlive it
    yield server, proxy
    proxy.__dict__.pop("decide", None)


@pytest.fixture
def stub():
    server = StubServer().start()
    yield server
    server.stop()
