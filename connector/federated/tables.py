"""Event/risk tables: the aggregate form of a group's (time, event) data, and back.

A table lists, for each distinct time (whole days), the number at risk just before
it, the events and the censorings there. That is all Kaplan–Meier, the log-rank test
and a Cox model with a binary covariate stratified by site use (their likelihoods
and estimators depend on the data only through these counts), so pooling the
tables of several sites gives exactly the patient-level results: ``expand`` turns a
table back into the multiset of (time, event) pairs it came from, which the analysis
layer's own functions then fit.

Small cells: no published row stands for fewer than ``min_cell`` patients, and no
event count between 1 and ``min_cell - 1`` is published. ``coarsen`` merges
consecutive times until each row has at least ``min_cell`` events (or none and at
least ``min_cell`` censorings); a merged row is placed at the mean time of its
patients (an average over at least ``min_cell`` of them) with the number at risk of
its first time. Censorings inside such a row are published with it: they
follow from the numbers at risk, which any Kaplan–Meier risk table shows. A group
smaller than ``min_cell``, or with fewer events than that (but some), is suppressed
whole. A coarsened table gives an approximate curve (each row's events at their mean
time), and the pool says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from connector.analysis.settings import DAYS_PER_MONTH


@dataclass(frozen=True)
class Row:
    """One time of an event table: ``days``, at risk just before, events, censorings."""

    days: int
    at_risk: int
    events: int
    censored: int


def to_days(months: Sequence[float] | np.ndarray) -> np.ndarray:
    """Whole days from the analysis layer's months (days / 30.4375), exactly."""
    return np.rint(np.asarray(months, dtype=float) * DAYS_PER_MONTH).astype(np.int64)


def event_table(days: Sequence[int] | np.ndarray,
                events: Sequence[bool] | np.ndarray) -> list[Row]:
    """The event table of (days, event) pairs, one row per distinct time."""
    t = np.asarray(days, dtype=np.int64)
    e = np.asarray(events, dtype=bool)
    rows: list[Row] = []
    at_risk = int(t.size)
    for time in np.unique(t):
        here = t == time
        d = int(e[here].sum())
        c = int(here.sum()) - d
        rows.append(Row(int(time), at_risk, d, c))
        at_risk -= d + c
    return rows


def small(count: int, min_cell: int) -> bool:
    """A count that may not be published: at least 1 and below ``min_cell``."""
    return 0 < count < min_cell


def _merge(rows: Sequence[Row]) -> Row:
    """One row for consecutive rows, at the mean time of their patients (whole days)."""
    exits = [r.events + r.censored for r in rows]
    days = rows[-1].days if len(rows) == 1 else int(round(
        sum(r.days * n for r, n in zip(rows, exits, strict=True)) / max(sum(exits), 1)))
    return Row(days, rows[0].at_risk, sum(r.events for r in rows),
               sum(r.censored for r in rows))


def coarsen(rows: Sequence[Row], min_cell: int) -> tuple[list[Row] | None, bool]:
    """(rows safe to publish, whether any were merged); (None, True) when suppressed.

    Safe: the group has at least ``min_cell`` patients, and every row holds at least
    ``min_cell`` events, or no event and at least ``min_cell`` censorings. Consecutive
    times are merged until that holds; a tail that cannot be made safe on its own is
    merged backwards; a group with fewer events than ``min_cell`` (but some) is
    suppressed.
    """
    if not rows:
        return [], False
    if min_cell <= 1:
        return list(rows), False
    if small(rows[0].at_risk, min_cell):
        return None, True
    bins: list[list[Row]] = []
    current: list[Row] = []
    for row in rows:
        current.append(row)
        if _safe(_merge(current), min_cell):
            bins.append(current)
            current = []
    if current:
        bins.append(current)
    while len(bins) > 1 and not _safe(_merge(bins[-1]), min_cell):
        bins[-2:] = [bins[-2] + bins[-1]]
    out = [_merge(b) for b in bins]
    if not _safe(out[-1], min_cell):
        return None, True
    return out, len(out) != len(rows)


def _safe(row: Row, min_cell: int) -> bool:
    """At least ``min_cell`` events, or none and at least ``min_cell`` censorings."""
    return row.events >= min_cell or (row.events == 0 and row.censored >= min_cell)


def expand(rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
    """The (months, event) pairs a table stands for: d events and c censorings per time."""
    days = [r.days for r in rows for _ in range(r.events + r.censored)]
    flags = [flag for r in rows for flag in [True] * r.events + [False] * r.censored]
    months = np.asarray(days, dtype=np.int64).astype("float64") / DAYS_PER_MONTH
    return months, np.asarray(flags, dtype=bool)


def check_table(rows: Sequence[Row]) -> str | None:
    """Why a table is not consistent (at risk must fall by events + censorings), or None."""
    for here, after in zip(rows, rows[1:], strict=False):
        if after.days <= here.days:
            return f"times not increasing at day {after.days}"
        if after.at_risk != here.at_risk - here.events - here.censored:
            return f"at risk does not follow from the previous row at day {after.days}"
    if any(min(r.at_risk, r.events, r.censored) < 0 for r in rows):
        return "negative count"
    if rows and rows[-1].at_risk != rows[-1].events + rows[-1].censored:
        return "the last row does not close the table"
    return None
