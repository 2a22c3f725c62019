"""Kaplan–Meier figures as a journal prints them.

Survival in % on the y-axis; each median marked by dashed lines to both axes with its
value; the hazard ratio and log-rank p printed when two groups are compared; a
numbers-at-risk table in its own panel below the x-axis label; and each curve cut
where fewer than ``min_at_risk`` patients remain at risk, because the tail of a
Kaplan–Meier curve over two or three patients swings by tens of percent on a single
event and invites over-reading (Pocock et al., Lancet 2002; the number comes from
rules.toml's [report] table and the caption states it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MultipleLocator, PercentFormatter

from connector.analysis.survival import KMResult
from connector.report.figure import no_data, save_figure

AT_RISK_TITLE = "Number at risk"


@dataclass
class Curve:
    label: str
    fit: KMResult
    color: str


def stop_time(fit: KMResult, min_at_risk: int) -> float | None:
    """Last time at which at least ``min_at_risk`` subjects are still at risk (None: never).

    At a time t the subjects at risk are those whose follow-up lasts t or longer, so the
    answer is the ``min_at_risk``-th longest follow-up.
    """
    if fit.fitter is None:
        return None
    durations = np.sort(np.asarray(fit.fitter.durations, dtype=float))[::-1]
    if len(durations) < min_at_risk:
        return None
    return float(durations[min_at_risk - 1])


def at_risk(fit: KMResult, times: np.ndarray) -> list[int]:
    if fit.fitter is None:
        return [0 for _ in times]
    durations = np.asarray(fit.fitter.durations, dtype=float)
    return [int((durations >= t).sum()) for t in times]


def _tick_step(span: float) -> float:
    """Months between x ticks: a clinical 3-, 6- or 12-month grid for the span shown."""
    for limit, step in ((6, 1), (12, 2), (24, 3), (48, 6), (96, 12)):
        if span <= limit:
            return step
    return 24


def _draw_curve(ax, index: int, curve: Curve, stop: float) -> None:  # noqa: ANN001
    f = curve.fit.fitter
    sf = f.survival_function_.iloc[:, 0]
    ci = f.confidence_interval_
    keep = sf.index <= stop
    times = np.append(sf.index[keep], stop)
    values = np.append(sf.values[keep], sf.values[keep][-1])
    low = np.append(ci.iloc[:, 0].values[keep], ci.iloc[:, 0].values[keep][-1])
    high = np.append(ci.iloc[:, 1].values[keep], ci.iloc[:, 1].values[keep][-1])
    name = f"{curve.label} (n={curve.fit.n}, {curve.fit.events} events)"
    line, = ax.step(times, values, where="post", color=curve.color, label=name, lw=1.8)
    line.set_gid(f"km-curve-{index}")
    ax.fill_between(times, low, high, step="post", color=curve.color, alpha=0.13, lw=0)
    durations = np.asarray(f.durations, dtype=float)
    censored = durations[~np.asarray(f.event_observed, dtype=bool) & (durations <= stop)]
    if censored.size:
        ax.plot(censored, f.survival_function_at_times(censored).values, "|",
                color=curve.color, ms=7, mew=1.2)


def _mark_median(ax, index: int, curve: Curve, stop: float,  # noqa: ANN001
                 x_max: float) -> None:
    """Dashed lines from the curve's median to both axes and the value at its foot."""
    median = curve.fit.median
    if median is None or median > stop:
        return
    style = {"color": curve.color, "ls": "--", "lw": 1.0}
    horizontal, = ax.plot([0, median], [0.5, 0.5], **style)
    vertical, = ax.plot([median, median], [0, 0.5], **style)
    horizontal.set_gid(f"median-{index}-to-y")
    vertical.set_gid(f"median-{index}-to-x")
    # two curves: one value right of its line, one left; never past the axis end
    right = index % 2 == 0 and median < 0.9 * x_max
    label = ax.annotate(f"{median:.1f}", xy=(median, 0), xytext=(3 if right else -3, 3),
                        textcoords="offset points", ha="left" if right else "right",
                        va="bottom", fontsize=8, color=curve.color, fontweight="bold")
    label.set_gid(f"median-{index}-value")


def _at_risk_table(table, curves: Sequence[Curve], ticks: np.ndarray, xlim) -> None:  # noqa: ANN001
    table.set_gid("at-risk-table")
    table.set_xlim(xlim)
    table.set_ylim(-0.5, len(curves) - 0.5)
    for row, curve in enumerate(reversed(curves)):
        for t, count in zip(ticks, at_risk(curve.fit, ticks), strict=True):
            table.text(t, row, str(count), ha="center", va="center", fontsize=8,
                       color=curve.color)
    table.set_yticks(range(len(curves)), [c.label for c in reversed(curves)], fontsize=8)
    for label, curve in zip(table.get_yticklabels(), reversed(curves), strict=True):
        label.set_color(curve.color)
    table.set_xticks([])
    table.set_title(AT_RISK_TITLE, fontsize=8, loc="left")
    for spine in table.spines.values():
        spine.set_visible(False)
    table.tick_params(left=False, pad=10)


def km_figure(curves: Sequence[Curve], xlabel: str, *, ylabel: str = "survival (%)",
              stats: str = "", min_at_risk: int = 1) -> Figure:
    """Curves with 95% bands, censoring ticks, medians, ``stats`` and numbers at risk."""
    fig = Figure(figsize=(7.5, 4.9 + 0.25 * len(curves)), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[4, 0.45 + 0.3 * len(curves)])
    ax, table = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    ax.set_gid("km-axes")
    stops = [stop_time(c.fit, min_at_risk) for c in curves]
    drawn = [(i, c, s) for i, (c, s) in enumerate(zip(curves, stops, strict=True))
             if s is not None]
    if not drawn:
        no_data(ax, "no data" if all(c.fit.fitter is None for c in curves) else
                f"fewer than {min_at_risk} at risk from the start")
        table.axis("off")
        return fig
    t_max = max(stop for _, _, stop in drawn)
    xlim = (0, t_max * 1.03 if t_max > 0 else 1)
    for index, curve, stop in drawn:
        _draw_curve(ax, index, curve, stop)
        _mark_median(ax, index, curve, stop, xlim[1])
    for curve, stop in zip(curves, stops, strict=True):
        if stop is None and curve.fit.fitter is not None:
            ax.plot([], [], color=curve.color,
                    label=f"{curve.label} (n={curve.fit.n}: not drawn, <{min_at_risk})")
    ax.set_xlim(xlim)
    ax.set_ylim(0, 1.03)
    ax.yaxis.set_major_locator(MultipleLocator(0.25))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MultipleLocator(_tick_step(xlim[1])))
    legend = ax.legend(loc="upper right", fontsize=8, frameon=False, title=stats or None,
                       title_fontsize=8, alignment="right")
    legend.set_gid("km-legend")
    ax.grid(alpha=0.25)
    ticks = np.array([t for t in ax.get_xticks() if xlim[0] <= t <= xlim[1]])
    _at_risk_table(table, curves, ticks, xlim)
    return fig


def km_plot(curves: Sequence[Curve], title: str, xlabel: str, path: Path, *,
            ylabel: str = "survival (%)", stats: str = "", min_at_risk: int = 1) -> Path:
    """``km_figure`` saved as PNG and SVG; ``title`` is file metadata, the caption says it."""
    fig = km_figure(curves, xlabel, ylabel=ylabel, stats=stats, min_at_risk=min_at_risk)
    return save_figure(fig, path, title)
