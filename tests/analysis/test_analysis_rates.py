"""Exact binomial intervals and Fisher's test against independent references."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from connector.analysis.rates import (
    clopper_pearson,
    fisher_between,
    fisher_exact,
    rate,
    rates_by,
)


@pytest.mark.parametrize("x,n", [(0, 1), (0, 10), (1, 10), (7, 20), (33, 76), (76, 76),
                                 (32, 35), (500, 1000)])
def test_clopper_pearson_matches_scipy_exact_interval(x, n):
    low, high = clopper_pearson(x, n)
    ref = stats.binomtest(x, n).proportion_ci(confidence_level=0.95, method="exact")
    assert low == pytest.approx(ref.low, abs=1e-9)
    assert high == pytest.approx(ref.high, abs=1e-9)


def test_clopper_pearson_known_value_from_r():
    # R: binom.test(7, 20)$conf.int -> 0.1539092 0.5921885
    low, high = clopper_pearson(7, 20)
    assert low == pytest.approx(0.1539092, abs=1e-7)
    assert high == pytest.approx(0.5921885, abs=1e-7)


def test_clopper_pearson_bounds_at_the_edges_and_other_levels():
    assert clopper_pearson(0, 12)[0] == 0.0
    assert clopper_pearson(12, 12)[1] == 1.0
    narrow = clopper_pearson(10, 40, alpha=0.10)
    wide = clopper_pearson(10, 40, alpha=0.01)
    assert wide[0] < narrow[0] < 0.25 < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        clopper_pearson(0, 0)
    with pytest.raises(ValueError):
        clopper_pearson(5, 4)


def test_rate_estimate_shape_and_empty_group():
    est = rate(33, 76)
    assert list(est)[:4] == ["estimate", "ci_low", "ci_high", "n"]
    assert est["estimate"] == pytest.approx(33 / 76, abs=1e-6)
    assert est["n"] == 76 and est["x"] == 33
    assert est["ci_low"] < est["estimate"] < est["ci_high"]
    empty = rate(0, 0)
    assert empty["estimate"] is None and empty["ci_low"] is None and empty["n"] == 0


def test_rates_by_names_every_requested_group_even_when_absent():
    frame = pd.DataFrame({"cls": ["tce", "tce", "non_tce"], "ok": [True, False, True]})
    out = rates_by(frame, "ok", "cls", ["tce", "non_tce", "other"])
    assert out["tce"]["estimate"] == 0.5 and out["tce"]["n"] == 2
    assert out["non_tce"]["estimate"] == 1.0
    assert out["other"]["n"] == 0 and out["other"]["estimate"] is None


def test_fisher_exact_lady_tasting_tea():
    # Fisher's tea-tasting table: two-sided p = 17/35; R fisher.test gives the
    # conditional MLE odds ratio 6.408309 with 95% CI 0.2117329-621.9337505.
    result = fisher_exact(3, 4, 1, 4)
    assert result["p"] == pytest.approx(17 / 35, abs=1e-4)
    assert result["odds_ratio"]["estimate"] == pytest.approx(6.408309, rel=1e-4)
    assert result["odds_ratio"]["ci_low"] == pytest.approx(0.2117329, rel=1e-3)
    assert result["odds_ratio"]["ci_high"] == pytest.approx(621.93, rel=2e-2)
    assert result["table"] == [[3, 1], [1, 3]]


def test_fisher_exact_matches_scipy_and_handles_empty_groups():
    result = fisher_exact(32, 35, 20, 44)
    ref = stats.fisher_exact([[32, 3], [20, 24]]).pvalue
    assert result["p"] == pytest.approx(ref, rel=1e-3)
    assert result["p"] < 0.001
    none = fisher_exact(0, 0, 3, 5)
    assert none["p"] is None


def test_fisher_between_orders_groups_as_asked():
    frame = pd.DataFrame({"cls": ["a"] * 10 + ["b"] * 10,
                          "ok": [True] * 9 + [False] + [True] * 2 + [False] * 8})
    result = fisher_between(frame, "ok", "cls", "a", "b")
    assert result["groups"] == ["a", "b"]
    assert result["table"] == [[9, 1], [2, 8]]
    assert result["p"] < 0.01
    assert result["odds_ratio"]["estimate"] > 1
