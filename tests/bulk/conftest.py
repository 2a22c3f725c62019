"""Fixtures for the bulk-export tests: sekmet with a tiny cohort (direct and behind the fault
proxy) and a scripted stub server for protocol corners sekmet does not reach."""

from __future__ import annotations

from pathlib import Path

import pytest
from bulk_stub import StubServer
from fhir_server import reset_proxy, serving, serving_behind_proxy, tiny_cohort

from connector.fhir.config import RetryConfig

#: Polling as fast as a test wants (sekmet says Retry-After: 1), no request rate limit.
FAST = {"poll_max_wait": 0.05, "rate_limit": 0,
        "retry": RetryConfig(backoff_initial=0.02, backoff_max=0.1)}


def _bulk_root(tmp_path_factory) -> Path:
    """sekmet writes export files under ./data/bulk by default; keep them in a temp dir."""
    return tmp_path_factory.mktemp("sekmet") / "bulk"


@pytest.fixture(scope="module")
def bulk_data() -> dict:
    return tiny_cohort(12, observations=4)


@pytest.fixture(scope="module")
def bulk_server(bulk_data, tmp_path_factory):
    """A server that tests must not change (module-scoped)."""
    with serving(bulk_data["resources"], bulk_root=_bulk_root(tmp_path_factory)) as server:
        yield server


@pytest.fixture
def fresh_server(bulk_data, tmp_path_factory):
    """A server of its own, for tests that change data on it."""
    with serving(bulk_data["resources"], bulk_root=_bulk_root(tmp_path_factory)) as server:
        yield server


@pytest.fixture(scope="module")
def _bulk_proxied_module(bulk_data, tmp_path_factory):
    with serving_behind_proxy(bulk_data["resources"],
                              bulk_root=_bulk_root(tmp_path_factory)) as pair:
        yield pair


@pytest.fixture
def bulk_proxied(_bulk_proxied_module):
    """(server, proxy), the proxy fault-free and its counters cleared for each test."""
    server, proxy = _bulk_proxied_module
    reset_proxy(proxy)
    yield server, proxy
    proxy.__dict__.pop("decide", None)  # a test's patched decide() does not outlive it


@pytest.fixture
def stub():
    server = StubServer().start()
    yield server
    server.stop()
