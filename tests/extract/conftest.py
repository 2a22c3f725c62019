"""Fixtures for REST extraction tests: a sekmet server loaded with a tiny cohort."""

from __future__ import annotations

import pytest
from fhir_server import serving, serving_behind_proxy, tiny_cohort

from connector.db import get_engine, init_db


@pytest.fixture(scope="module")
def cohort_data() -> dict:
    return tiny_cohort(12, observations=10)


@pytest.fixture(scope="module")
def loaded_server(cohort_data):
    """A server holding the tiny cohort; tests must not change it (use a fresh one for that)."""
    with serving(cohort_data["resources"]) as server:
        yield server


@pytest.fixture
def fresh_server(cohort_data):
    """A server of the test's own, behind a fault-free proxy: (server, proxy)."""
    with serving_behind_proxy(cohort_data["resources"]) as pair:
        yield pair


@pytest.fixture
def make_engine(tmp_path):
    """Fresh SQLite databases, as many as a test needs."""
    engines = []

    def make(name: str = "db"):
        engine = get_engine(f"sqlite:///{tmp_path / name}.sqlite")
        init_db(engine)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
