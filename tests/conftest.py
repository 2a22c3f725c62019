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


#: The secret the ``built_cohort`` database was mapped with (as COHORT_KEY_SECRET).
BUILT_COHORT_SECRET = "built-cohort-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def built_cohort(tmp_path_factory) -> str:
    """fixtures/cohort through extract, map and derive with a key secret; its SQLite URL.

    Built once per test process, in a child process so the secret is that process's
    environment only. For tests of the stages after derive (export, federated).
    """
    import subprocess
    import sys

    if not (FIXTURES / "site_a").is_dir():
        pytest.skip("fixtures/cohort is not generated")
    url = f"sqlite:///{tmp_path_factory.mktemp('built') / 'cohort.db'}"
    script = ("import sys\nfrom connector import pipeline\n"
              "engine = pipeline.open_db(sys.argv[1])\n"
              "pipeline.extract(engine, sys.argv[2])\npipeline.map_(engine)\n"
              "pipeline.derive(engine)\n")
    env = {**os.environ, "COHORT_KEY_SECRET": BUILT_COHORT_SECRET}
    env.pop("COHORT_KEY_SECRET_FILE", None)
    proc = subprocess.run([sys.executable, "-c", script, url, str(FIXTURES)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return url


@pytest.fixture(scope="module")
def built_engine(built_cohort):
    """An engine on ``built_cohort``, one per test module."""
    eng = get_engine(built_cohort)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def built_cohort_secret() -> bytes:
    """The key secret ``built_cohort`` was mapped with."""
    return BUILT_COHORT_SECRET.encode()
