"""Forest plot of the subgroups: hazard ratios of first-salvage PFS and of OS with 95%
CIs and the patients in each group, on a log scale (issue 16 item 3)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from connector.report.figure import COLORS, no_data, save_figure
from connector.report.subgroups import level_label

FOREST_PNG = "forest_subgroups.png"


def forest_rows(subgroups: dict[str, Any], measure: str) -> list[tuple[str, dict[str, Any]]]:
    """(row label with counts, hazard ratio estimate) per grouping, in results order."""
    rows = []
    for key, g in subgroups.items():
        test, ref = g["comparison"].split(" vs ")
        a, b = g["levels"][test], g["levels"][ref]
        label = (f"{g['label']}\n{level_label(key, a)} (n={a['n_patients']}) vs "
                 f"{level_label(key, b)} (n={b['n_patients']})")
        rows.append((label, g[measure]))
    return rows


def forest_plot(subgroups: dict[str, Any], path: Path) -> Path:
    """Two panels (first-salvage PFS, OS); a row per grouping; HR < 1 favours the first."""
    panels = (("pfs_hazard_ratio", "First salvage PFS: hazard ratio"),
              ("os_hazard_ratio", "Overall survival: hazard ratio"))
    rows = forest_rows(subgroups, panels[0][0])
    fig = Figure(figsize=(12, 0.75 * max(len(rows), 2) + 1.4))
    axes = fig.subplots(1, 2, sharey=True)
    if not rows:
        for ax in axes:
            no_data(ax)
        fig.tight_layout()
        return save_figure(fig, path, "Subgroups")
    ys = list(range(len(rows)))[::-1]
    for ax, (measure, xlabel) in zip(axes, panels, strict=True):
        values = forest_rows(subgroups, measure)
        for y, (_, est) in zip(ys, values, strict=True):
            hr, lo, hi = est.get("estimate"), est.get("ci_low"), est.get("ci_high")
            if hr is None:
                ax.text(1.0, y, "not estimated", ha="center", va="center", fontsize=8,
                        color="#777")
                continue
            lo = lo if lo is not None else hr / 50
            hi = hi if hi is not None else hr * 50
            ax.plot([lo, hi], [y, y], color=COLORS["overall"], lw=1.2)
            ax.plot([hr], [y], marker="s", color=COLORS["tce"], ms=6)
            ax.text(1.03, y, f"{hr:.2f} ({lo:.2f}–{hi:.2f})\n{est.get('events', 0)} events",
                    transform=ax.get_yaxis_transform(), fontsize=7, va="center")
        ax.axvline(1.0, color="#999", lw=0.8, ls="--")
        ax.set_xscale("log")
        finite = [v for _, e in values for v in (e.get("ci_low"), e.get("ci_high"))
                  if v is not None and math.isfinite(v) and v > 0]
        low, high = (min(finite + [0.5]), max(finite + [2.0])) if finite else (0.1, 10)
        left, right = max(low / 1.3, 0.01), min(high * 1.3, 100)
        ax.set_xlim(left, right)
        ticks = [t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 10, 20) if left <= t <= right]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(f"{xlabel}\n(log scale; below 1 favours the first group)", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([label for label, _ in rows], fontsize=8)
    axes[0].set_ylim(-0.6, len(rows) - 0.4)
    fig.tight_layout()
    fig.subplots_adjust(wspace=0.45)
    return save_figure(fig, path, "Subgroups")
