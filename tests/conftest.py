"""Shared fixtures: a fresh SQLite database per test, PostgreSQL when available."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from connector.db import get_engine, init_db

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "cohort"
PG_URL = os.environ.get("COHORT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cohort.db'}"


@pytest.fixture
def engine(db_url: str):
    eng = get_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL schema on the local server; in CI a missing server fails."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL required in CI but not reachable at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    yield url
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
