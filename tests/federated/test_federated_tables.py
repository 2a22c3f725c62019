"""Event tables: exact round trip, small-cell coarsening that never publishes a small
event count or a row of fewer patients than the threshold, consistency checks."""

from __future__ import annotations

import numpy as np
import pytest

from connector.federated.tables import (
    DAYS_PER_MONTH,
    Row,
    check_table,
    coarsen,
    event_table,
    expand,
    to_days,
)


def _random(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 900, n), rng.random(n) < 0.7


@pytest.mark.parametrize("seed", range(5))
def test_expand_gives_back_the_multiset_of_pairs(seed):
    days, events = _random(seed, 60)
    months, flags = expand(event_table(days, events))
    original = sorted(zip((days / DAYS_PER_MONTH).tolist(), events.tolist(), strict=True))
    assert sorted(zip(months.tolist(), flags.tolist(), strict=True)) == original
    assert check_table(event_table(days, events)) is None


def test_to_days_undoes_the_analysis_months_exactly():
    days = np.arange(0, 5000)
    assert (to_days(days.astype("float64") / DAYS_PER_MONTH) == days).all()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("k", [3, 5, 10])
def test_coarsened_rows_are_safe_and_keep_the_totals(seed, k):
    days, events = _random(seed, 80)
    rows = event_table(days, events)
    safe, merged = coarsen(rows, k)
    if safe is None:
        assert 0 < events.sum() < k
        return
    assert merged
    assert all(r.events >= k or (r.events == 0 and r.censored >= k) for r in safe)
    assert sum(r.events for r in safe) == events.sum()
    assert sum(r.events + r.censored for r in safe) == len(days)
    assert safe[0].at_risk == len(days)
    assert check_table(safe) is None  # at risk still follows from the rows


def test_small_groups_and_few_events_are_suppressed():
    assert coarsen(event_table([10, 20, 30], [True, False, True]), 5) == (None, True)
    few = event_table(list(range(20)), [i < 3 for i in range(20)])
    assert coarsen(few, 5) == (None, True)
    assert coarsen(few, 1) == (few, False)
    no_events = event_table(list(range(12)), [False] * 12)
    safe, _ = coarsen(no_events, 5)
    assert [r.censored for r in safe] == [5, 7]


def test_check_table_finds_inconsistent_counts():
    rows = [Row(10, 10, 2, 0), Row(20, 8, 3, 0), Row(30, 5, 5, 0)]
    assert check_table(rows) is None
    assert "at risk" in check_table([Row(10, 10, 2, 0), Row(20, 9, 3, 0), Row(30, 6, 6, 0)])
    assert "increasing" in check_table([Row(10, 10, 2, 0), Row(10, 8, 8, 0)])
    assert "close" in check_table([Row(10, 10, 2, 0)])
