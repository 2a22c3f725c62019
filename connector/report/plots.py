"""The report's figures: which are drawn, from which fits, and the response bar chart.

Kaplan–Meier figures are drawn by ``connector.report.km``, the swimmer plot by
``connector.report.swimmer``; both, and the bar chart here, save through
``connector.report.figure.save_figure`` (300-dpi PNG + SVG). Numbers printed on a figure
(hazard ratios, p-values, x/n) come from results.json, like the report's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MultipleLocator, PercentFormatter

from connector.analysis.results import Analysis
from connector.report import formatting as fmt
from connector.report import labels as lb
from connector.report.figure import COLORS, no_data, save_figure
from connector.report.km import Curve, km_plot
from connector.report.swimmer import swimmer_plot

LABELS = lb.CLASS_NAMES
GROUPS = ("overall", "tce", "non_tce")


def two_group_stats(cox: dict[str, Any] | None, test: dict[str, Any] | None,
                    compared: str) -> str:
    """"HR (TCE vs non-TCE) 0.65 (95% CI 0.35–1.22)" over "log-rank p = 0.187"."""
    parts = []
    if cox is not None:
        if cox.get("estimate") is None:
            parts.append(f"HR ({compared}) not estimated")
        else:
            parts.append(f"HR ({compared}) {cox['estimate']:.2f} (95% CI "
                         f"{fmt._num(cox['ci_low'], 2)}–{fmt._num(cox['ci_high'], 2)})")
    if test is not None:
        parts.append(f"log-rank {fmt.p_value(test.get('p'))}")
    return "\n".join(parts)


# -------------------------------------------------------------- response bars


def _bars(ax, x: np.ndarray, ests: list[dict], colors: list[str], width: float,  # noqa: ANN001
          hatch: str = "") -> None:
    values = np.array([np.nan if e.get("estimate") is None else e["estimate"] for e in ests])
    low = np.array([np.nan if e.get("ci_low") is None else e["ci_low"] for e in ests])
    high = np.array([np.nan if e.get("ci_high") is None else e["ci_high"] for e in ests])
    heights = np.nan_to_num(values)
    ax.bar(x, heights, width=width, color=colors, edgecolor="black" if hatch else colors,
           hatch=hatch, lw=0.6 if hatch else 0)
    err = np.vstack([np.nan_to_num(values - low), np.nan_to_num(high - values)])
    ax.errorbar(x, heights, yerr=err, fmt="none", ecolor="black", capsize=3, lw=0.9)
    for xi, e, top in zip(x, ests, np.nan_to_num(high), strict=True):
        label = f"{e.get('x', 0)}/{e['n']}" if e.get("n") else "n=0"
        ax.text(xi, top + 0.02, label, ha="center", va="bottom", fontsize=7)


def _percent_axis(ax) -> None:  # noqa: ANN001
    ax.set_ylim(0, 1.12)
    ax.yaxis.set_major_locator(MultipleLocator(0.25))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    ax.grid(axis="y", alpha=0.25)
    ax.set_axisbelow(True)


def _panel_letter(ax, letter: str) -> None:  # noqa: ANN001
    ax.text(-0.02, 1.02, letter, transform=ax.transAxes, fontsize=12, fontweight="bold",
            ha="right", va="bottom")


def response_figure(analysis: Analysis) -> Figure:
    """A: ORR and ≥VGPR of the first salvage line by class; B: ORR of all lines by
    regimen class, TCE classes first, then non-TCE."""
    r = analysis.results
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 2.2])
    left, right = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    first = r["first_line_detail"]
    x = np.arange(len(GROUPS))
    colors = [COLORS[g] for g in GROUPS]
    _bars(left, x - 0.19, [first["orr"][g] for g in GROUPS], colors, 0.36)
    _bars(left, x + 0.19, [first["vgpr_or_better"][g] for g in GROUPS], colors, 0.36, "///")
    left.set_xticks(x, [LABELS[g] for g in GROUPS])
    left.set_xlabel("first salvage line, by class")
    left.set_ylabel("patients responding (%, exact 95% CI)")
    left.legend(handles=[Patch(facecolor="#BBBBBB", label="ORR (≥PR)"),
                         Patch(facecolor="#BBBBBB", edgecolor="black", hatch="///",
                               label="≥VGPR")], loc="upper left", fontsize=8, frameon=False)
    _percent_axis(left)
    _panel_letter(left, "A")
    by_sub = r["all_lines"]["orr_by_subclass"]
    tce = set(analysis.lines.loc[analysis.lines["therapy_class"] == "tce", "subclass"])
    subs = sorted((s for s in by_sub if s in tce), key=lambda s: lb.name(s, lb.SUBCLASS_NAMES))
    others = sorted((s for s in by_sub if s not in tce),
                    key=lambda s: lb.name(s, lb.SUBCLASS_NAMES))
    _percent_axis(right)
    _panel_letter(right, "B")
    if not by_sub:
        no_data(right)
        return fig
    # a one-bar gap between the TCE and the non-TCE group
    pos = np.array([i for i in range(len(subs))] +
                   [len(subs) + 1 + i for i in range(len(others))], dtype=float)
    order = subs + others
    _bars(right, pos, [by_sub[s] for s in order],
          [COLORS["tce"] if s in tce else COLORS["non_tce"] for s in order], 0.7)
    right.set_xticks(pos, [lb.name(s, lb.SUBCLASS_NAMES) for s in order], rotation=30,
                     ha="right", fontsize=8)
    for group, members, color in (("TCE", subs, COLORS["tce"]),
                                  ("non-TCE", others, COLORS["non_tce"])):
        if members:
            where = pos[[order.index(s) for s in members]]
            right.text(where.mean(), 1.08, group, ha="center", va="center", fontsize=9,
                       fontweight="bold", color=color)
    if subs and others:
        right.axvline(len(subs), color="#999999", lw=0.8, ls=":")
    right.set_ylabel("lines responding, ≥PR (%, exact 95% CI)")
    right.set_xlabel("all lines after progression, by regimen class")
    return fig


def response_plot(analysis: Analysis, path: Path) -> Path:
    return save_figure(response_figure(analysis), path, "Response rates")


# ---------------------------------------------------------------- all figures


def draw_all(analysis: Analysis, out_dir: Path, min_at_risk: int = 1) -> dict[str, Path]:
    """Every figure of the report (PNG path, an SVG beside each), keyed by its role."""
    fits, r = analysis.fits, analysis.results
    first, os_ = r["first_line_detail"], r["os"]
    months_prog = "months from progression after BCMA CAR-T"
    landmark = analysis.settings.landmark_months
    cut = {"min_at_risk": min_at_risk}
    return {
        "first_line_pfs": km_plot(
            [Curve("TCE", fits["first_line_pfs"]["tce"], COLORS["tce"]),
             Curve("non-TCE", fits["first_line_pfs"]["non_tce"], COLORS["non_tce"])],
            "PFS of the first salvage line by therapy class", "months from the line's start",
            out_dir / "km_first_line_pfs.png", ylabel="progression-free survival (%)",
            stats=two_group_stats(first.get("pfs_cox_tce_vs_non_tce"),
                                  first.get("pfs_logrank_tce_vs_non_tce"), "TCE vs non-TCE"),
            **cut),
        "os": km_plot([Curve("all patients", fits["os"]["overall"], COLORS["overall"])],
                      "Overall survival from progression after BCMA CAR-T", months_prog,
                      out_dir / "km_os.png", ylabel="overall survival (%)", **cut),
        "os_ever_tce": km_plot(
            [Curve("ever TCE", fits["os_ever_tce"]["tce"], COLORS["tce"]),
             Curve("never TCE", fits["os_ever_tce"]["non_tce"], COLORS["non_tce"])],
            "OS by ever receiving TCE (naive; immortal-time biased)", months_prog,
            out_dir / "km_os_by_ever_tce.png", ylabel="overall survival (%)",
            stats=two_group_stats(os_.get("ever_tce_cox"), os_.get("ever_tce_logrank"),
                                  "ever vs never TCE, biased"), **cut),
        "os_landmark": km_plot(
            [Curve(f"TCE by {landmark:g} mo", fits["os_landmark"]["tce"], COLORS["tce"]),
             Curve(f"no TCE by {landmark:g} mo", fits["os_landmark"]["non_tce"],
                   COLORS["non_tce"])],
            f"OS from a {landmark:g}-month landmark by TCE started before it",
            f"months from the landmark ({landmark:g} months after progression)",
            out_dir / "km_os_landmark.png", ylabel="overall survival (%)",
            stats=two_group_stats(os_["landmark"].get("cox"), os_["landmark"].get("logrank"),
                                  "TCE vs no TCE"), **cut),
        "swimmer": swimmer_plot(analysis, out_dir / "swimmer.png"),
        "responses": response_plot(analysis, out_dir / "response_rates.png"),
    }


__all__ = ["COLORS", "LABELS", "Curve", "draw_all", "km_plot", "response_plot",
           "swimmer_plot", "two_group_stats"]
