"""Cohorts shared by the synth tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from synth_reader import FIXTURE

from connector.synth import synthesize


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A noisy 3-site cohort, larger than the fixture so rare paths are exercised."""
    out = tmp_path_factory.mktemp("synth_small")
    truth = synthesize(n_patients=150, n_sites=3, seed=99, out_dir=out, noise=True)
    return out, truth


@pytest.fixture(scope="session")
def committed_cohort() -> tuple[Path, dict]:
    if not (FIXTURE / "ground_truth.json").exists():
        pytest.fail("fixtures/cohort is missing: run `make fixtures`")
    return FIXTURE, orjson.loads((FIXTURE / "ground_truth.json").read_bytes())
