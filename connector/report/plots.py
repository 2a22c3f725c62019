"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Figures are built with ``Figure`` + ``FigureCanvasAgg`` rather than pyplot so that
no global backend or figure state is touched (a notebook's inline backend keeps
working) and rendering is Agg everywhere. PNG metadata carries no version or
date, so the same data gives the same bytes on the same installation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from connector.analysis.results import Analysis
from connector.analysis.settings import DAYS_PER_MONTH
from connector.analysis.survival import KMResult

COLORS = {"tce": "#1f77b4", "non_tce": "#d95f02", "overall": "#333333",
          "bispecific": "#1f77b4", "car_t": "#7570b3"}
LABELS = {"tce": "TCE", "non_tce": "non-TCE", "overall": "all"}
DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _no_data(ax, text: str = "no data") -> None:  # noqa: ANN001
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class Curve:
    label: str
    fit: KMResult
    color: str


def _at_risk(fit: KMResult, ticks: np.ndarray) -> list[int]:
    if fit.fitter is None:
        return [0 for _ in ticks]
    durations = np.asarray(fit.fitter.durations, dtype=float)
    return [int((durations >= t).sum()) for t in ticks]


def km_plot(curves: Sequence[Curve], title: str, xlabel: str, path: Path) -> Path:
    """Kaplan–Meier curves with 95% bands, censoring ticks and a numbers-at-risk table."""
    fig = Figure(figsize=(8, 4.6 + 0.28 * len(curves)), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[4, 0.35 + 0.28 * len(curves)])
    ax, table = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    fitted = [c for c in curves if c.fit.fitter is not None]
    ax.set_title(title)
    if not fitted:
        _no_data(ax)
        table.axis("off")
        return _save(fig, path)
    t_max = max(float(np.max(c.fit.fitter.durations)) for c in fitted)
    for curve in fitted:
        f = curve.fit.fitter
        sf = f.survival_function_.iloc[:, 0]
        ci = f.confidence_interval_
        name = f"{curve.label} (n={curve.fit.n}, events={curve.fit.events})"
        ax.step(sf.index, sf.values, where="post", color=curve.color, label=name, lw=1.8)
        ax.fill_between(ci.index, ci.iloc[:, 0], ci.iloc[:, 1], step="post",
                        color=curve.color, alpha=0.15, lw=0)
        censored = np.asarray(f.durations)[~np.asarray(f.event_observed, dtype=bool)]
        if censored.size:
            ax.plot(censored, f.survival_function_at_times(censored).values, "|",
                    color=curve.color, ms=7, mew=1.2)
    ax.axhline(0.5, color="#999", lw=0.8, ls=":")
    ax.set_xlim(0, t_max * 1.03 if t_max > 0 else 1)
    ax.set_ylim(0, 1.03)
    ax.set_ylabel("probability")
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    ticks = np.array([t for t in ax.get_xticks() if 0 <= t <= ax.get_xlim()[1]])
    table.set_xlim(ax.get_xlim())
    table.set_ylim(-0.5, len(curves) - 0.5)
    for row, curve in enumerate(reversed(curves)):
        for t, count in zip(ticks, _at_risk(curve.fit, ticks), strict=True):
            table.text(t, row, str(count), ha="center", va="center", fontsize=8,
                       color=curve.color)
    table.set_yticks(range(len(curves)), [c.label for c in reversed(curves)], fontsize=8)
    table.set_xticks([])
    table.set_title("number at risk", fontsize=8, loc="left")
    for spine in table.spines.values():
        spine.set_visible(False)
    table.tick_params(left=False)
    return _save(fig, path)


# ------------------------------------------------------------------- swimmer


def _swimmer_patients(analysis: Analysis) -> pd.DataFrame:
    """Patients shown: all, or a subset fixed by the (pseudonymous) key order when too many."""
    patients = analysis.patients[analysis.patients["os_valid"]]
    limit = analysis.settings.swimmer_max_patients
    if len(patients) > limit:
        patients = patients.sort_values(["patient_key", "pid"], kind="mergesort").head(limit)
    patients = patients.sort_values(["os_months", "pid"], ascending=[True, True],
                                    kind="mergesort")
    return patients.reset_index(drop=True)


def _line_segments(lines: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """Each line from its start to its end (else the next start, else end of follow-up)."""
    shown = lines.merge(patients[["pid", "os_months", "progression_date", "y"]], on="pid")
    shown = shown.sort_values(["pid", "line"], kind="mergesort")
    next_start = shown.groupby("pid")["start_months"].shift(-1)
    end = (shown["end_date"] - shown["progression_date"]).dt.days / DAYS_PER_MONTH
    end = end.fillna(next_start).fillna(shown["os_months"])
    shown["left"] = shown["start_months"].clip(lower=0)
    shown["width"] = (np.minimum(end, shown["os_months"]) - shown["left"]).clip(lower=0.05)
    event = (shown["pfs_event_date"] - shown["progression_date"]).dt.days / DAYS_PER_MONTH
    shown["pfs_event_months"] = event
    return shown


def swimmer_plot(analysis: Analysis, path: Path) -> Path:
    """One bar per patient from progression; line segments by class; PD and death marked."""
    patients = _swimmer_patients(analysis)
    n = len(patients)
    fig = Figure(figsize=(9, max(3.0, min(0.09 * n + 1.6, 14))))
    ax = fig.add_subplot(1, 1, 1)
    total = len(analysis.patients)
    subset = f" ({n} of {total} patients shown)" if n < total else ""
    ax.set_title(f"Treatment course after progression on BCMA CAR-T{subset}")
    if n == 0:
        _no_data(ax)
        return _save(fig, path)
    patients["y"] = np.arange(n)
    height = 0.72
    ax.barh(patients["y"], patients["os_months"], left=0, height=height, color="#e6e6e6",
            lw=0)
    segments = _line_segments(analysis.lines, patients)
    for cls in ("non_tce", "tce"):
        part = segments[segments["therapy_class"] == cls]
        ax.barh(part["y"], part["width"], left=part["left"], height=height,
                color=COLORS[cls], edgecolor="white", lw=0.4)
    events = segments.dropna(subset=["pfs_event_months"])
    ax.plot(events["pfs_event_months"], events["y"], "x", color="black", ms=4, mew=1)
    dead = patients[patients["os_event"]]
    alive = patients[~patients["os_event"]]
    ax.plot(dead["os_months"], dead["y"], "s", color="#b2182b", ms=3.5)
    ax.plot(alive["os_months"] + 0.15, alive["y"], ">", color="#555", ms=3.5)
    ax.set_ylim(-1, n)
    ax.set_yticks([])
    ax.set_ylabel("patients")
    ax.set_xlabel("months from progression after CAR-T")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))
    ax.grid(axis="x", alpha=0.25)
    handles = [Patch(color=COLORS["tce"], label="TCE line"),
               Patch(color=COLORS["non_tce"], label="non-TCE line"),
               Patch(color="#e6e6e6", label="follow-up"),
               Line2D([], [], marker="x", color="black", ls="",
                      label="progression (line PFS event)"),
               Line2D([], [], marker="s", color="#b2182b", ls="", label="death"),
               Line2D([], [], marker=">", color="#555", ls="", label="alive at last contact")]
    ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=True)
    fig.tight_layout()
    return _save(fig, path)


# -------------------------------------------------------------- response bars


def _bars(ax, names: list[str], ests: list[dict], colors: list[str], title: str) -> None:  # noqa: ANN001
    x = np.arange(len(names))
    values = np.array([e["estimate"] if e["estimate"] is not None else np.nan for e in ests])
    low = np.array([e["ci_low"] if e["ci_low"] is not None else np.nan for e in ests])
    high = np.array([e["ci_high"] if e["ci_high"] is not None else np.nan for e in ests])
    heights = np.nan_to_num(values)
    ax.bar(x, heights, color=colors, width=0.65)
    err = np.vstack([np.nan_to_num(values - low), np.nan_to_num(high - values)])
    ax.errorbar(x, heights, yerr=err, fmt="none", ecolor="black", capsize=4, lw=1)
    for xi, e in zip(x, ests, strict=True):
        label = f"{e.get('x', 0)}/{e['n']}" if e["n"] else "n=0"
        top = e["ci_high"] if e["ci_high"] is not None else 0
        ax.text(xi, top + 0.02, label, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("rate (95% exact CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.25)


def response_plot(analysis: Analysis, path: Path) -> Path:
    """ORR (≥PR) and ≥VGPR of the first line by class, and ORR of all lines by subclass."""
    r = analysis.results
    fig = Figure(figsize=(11, 4.6))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    first = r["first_line_detail"]
    groups = ["overall", "tce", "non_tce"]
    names = [f"ORR {LABELS[g]}" for g in groups] + [f"≥VGPR {LABELS[g]}" for g in groups]
    ests = [first["orr"][g] for g in groups] + [first["vgpr_or_better"][g] for g in groups]
    colors = [COLORS[g] for g in groups] * 2
    _bars(left, names, ests, colors, "First salvage line (evaluable lines)")
    by_sub = r["all_lines"]["orr_by_subclass"]
    if by_sub:
        subs = sorted(by_sub)
        tce_subs = set(analysis.lines.loc[analysis.lines["therapy_class"] == "tce", "subclass"])
        _bars(right, subs, [by_sub[s] for s in subs],
              [COLORS["tce"] if s in tce_subs else COLORS["non_tce"] for s in subs],
              "ORR of all lines by subclass (evaluable lines)")
    else:
        _no_data(right)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- all figures


def draw_all(analysis: Analysis, out_dir: Path) -> dict[str, Path]:
    """Every figure of the report, keyed by its role."""
    fits = analysis.fits
    months_prog = "months from progression after CAR-T"
    landmark = analysis.settings.landmark_months
    return {
        "first_line_pfs": km_plot(
            [Curve("TCE", fits["first_line_pfs"]["tce"], COLORS["tce"]),
             Curve("non-TCE", fits["first_line_pfs"]["non_tce"], COLORS["non_tce"])],
            "PFS of the first salvage line by therapy class", "months from line start",
            out_dir / "km_first_line_pfs.png"),
        "os": km_plot([Curve("all", fits["os"]["overall"], COLORS["overall"])],
                      "Overall survival from progression after BCMA CAR-T", months_prog,
                      out_dir / "km_os.png"),
        "os_ever_tce": km_plot(
            [Curve("ever TCE", fits["os_ever_tce"]["tce"], COLORS["tce"]),
             Curve("never TCE", fits["os_ever_tce"]["non_tce"], COLORS["non_tce"])],
            "OS by ever receiving TCE (naive; immortal-time biased)", months_prog,
            out_dir / "km_os_by_ever_tce.png"),
        "os_landmark": km_plot(
            [Curve(f"TCE by {landmark:g} mo", fits["os_landmark"]["tce"], COLORS["tce"]),
             Curve(f"no TCE by {landmark:g} mo", fits["os_landmark"]["non_tce"],
                   COLORS["non_tce"])],
            f"OS from a {landmark:g}-month landmark by TCE started before it",
            f"months from the landmark ({landmark:g} months after progression)",
            out_dir / "km_os_landmark.png"),
        "swimmer": swimmer_plot(analysis, out_dir / "swimmer.png"),
        "responses": response_plot(analysis, out_dir / "response_rates.png"),
    }
