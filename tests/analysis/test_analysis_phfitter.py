"""PHFitter skips lifelines' central values and nothing else: the estimates are
CoxPHFitter's to the last bit, for the model shapes the analysis fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from connector.analysis.phfitter import PHFitter


def _data(n: int = 600, seed: int = 3) -> pd.DataFrame:
    """Tied, censored times with an effect of ``x``, five sites, patients with several rows."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n)
    return pd.DataFrame({
        "T": np.round(rng.exponential(10.0 / np.where(x == 1, 1.6, 1.0)), 1) + 0.1,
        "E": (rng.random(n) < 0.7).astype(int), "x": x,
        "line_number": rng.integers(1, 6, n).astype(float),
        "site": [f"site_{i % 5}" for i in range(n)],
        "cluster": [f"p{i // 3}" for i in range(n)],
    })


@pytest.mark.parametrize("kwargs", [
    {"strata": ["site"]},                               # cox_hazard_ratio, several sites
    {"strata": ["site"], "cluster_col": "cluster"},     # ... with correlated rows
    {"cluster_col": "cluster"},                         # pfs_line_adjusted
    {},                                                 # one site
])
def test_estimates_are_coxphfitters_to_the_last_bit(kwargs):
    data = _data()
    if "cluster_col" not in kwargs:
        data = data.drop(columns=["cluster"])
    if "strata" not in kwargs:
        data = data.drop(columns=["site"])
    ours = PHFitter(alpha=0.05).fit(data, "T", "E", **kwargs)
    theirs = CoxPHFitter(alpha=0.05).fit(data, "T", "E", **kwargs)
    pd.testing.assert_frame_equal(ours.summary, theirs.summary, check_exact=True)
    assert ours.log_likelihood_ == theirs.log_likelihood_
    assert ours._model._central_values is None  # the skipped work really was skipped
    assert theirs._model._central_values is not None
