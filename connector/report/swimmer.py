"""The swimmer plot: one row per patient from progression after CAR-T.

Each line of therapy is a bar coloured by its regimen class, running from its start to
the next line's start or its own progression, whichever comes first (to the end of
follow-up when neither happened), so the eye reads time on each regimen. The best
response of a line is a symbol on its bar, a progression a black tick, a CAR-T
infusion a triangle at the infusion day (a one-day bar would be invisible), death a
cross and an arrow a patient alive at last contact. The legend sits outside the rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MultipleLocator

from connector.analysis.results import Analysis
from connector.analysis.settings import DAYS_PER_MONTH
from connector.report import labels as lb
from connector.report.figure import OTHER_COLOR, SUBCLASS_COLORS, no_data, save_figure

FOLLOW_UP = "#E8E8E8"
# best response of a line -> (marker, face colour, size, legend text); unlisted: no mark
RESPONSE_MARKS = {"sCR": ("*", "black", 7, "CR or better"), "CR": ("*", "black", 7, None),
                  "VGPR": ("D", "black", 3.6, "VGPR"), "PR": ("o", "white", 4.2, "PR")}
CAR_T_SUBCLASS = "car_t"


def swimmer_patients(analysis: Analysis) -> pd.DataFrame:
    """Patients shown: all, or a subset fixed by the (pseudonymous) key order when too many."""
    patients = analysis.patients[analysis.patients["os_valid"]]
    limit = analysis.settings.swimmer_max_patients
    if len(patients) > limit:
        patients = patients.sort_values(["patient_key", "pid"], kind="mergesort").head(limit)
    patients = patients.sort_values(["os_months", "pid"], ascending=[True, True],
                                    kind="mergesort")
    return patients.reset_index(drop=True)


def _months(dates: pd.Series, origin: pd.Series) -> pd.Series:
    return (pd.to_datetime(dates) - pd.to_datetime(origin)).dt.days / DAYS_PER_MONTH


def line_bars(lines: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """Each line's bar: start, end (next line or progression, else end of follow-up)."""
    shown = lines.merge(patients[["pid", "os_months", "progression_date", "y"]], on="pid")
    shown = shown.sort_values(["pid", "line"], kind="mergesort").reset_index(drop=True)
    shown["left"] = shown["start_months"].clip(lower=0)
    next_start = shown.groupby("pid")["left"].shift(-1)
    event = _months(shown["pfs_event_date"], shown["progression_date"])
    shown["pfs_event_months"] = event
    end = pd.concat([next_start, event.where(event >= shown["left"])], axis=1).min(axis=1)
    end = end.fillna(shown["os_months"]).clip(upper=shown["os_months"])
    shown["width"] = (end - shown["left"]).clip(lower=0.05)
    return shown


def _legend_handles(bars: pd.DataFrame, tce_classes: set[str]) -> list:
    present = list(dict.fromkeys(bars["subclass"]))
    ordered = ([s for s in SUBCLASS_COLORS if s in present and s in tce_classes]
               + [s for s in SUBCLASS_COLORS if s in present and s not in tce_classes]
               + sorted(s for s in present if s not in SUBCLASS_COLORS))
    handles = [Patch(color=SUBCLASS_COLORS.get(s, OTHER_COLOR),
                     label=f"{lb.name(s, lb.SUBCLASS_NAMES)}"
                           f"{' (TCE)' if s in tce_classes else ''}") for s in ordered]
    handles.append(Patch(color=FOLLOW_UP, label="follow-up between or after lines"))
    for code in ("sCR", "VGPR", "PR"):
        marker, face, size, text = RESPONSE_MARKS[code]
        handles.append(Line2D([], [], marker=marker, color="black", mfc=face, ls="",
                              ms=size + 1, label=f"best response {text}"))
    handles += [Line2D([], [], marker="|", color="black", ls="", ms=8, mew=1.6,
                       label="progression"),
                Line2D([], [], marker="^", color="black", mfc=SUBCLASS_COLORS[CAR_T_SUBCLASS],
                       ls="", ms=7, label="CAR-T infusion"),
                Line2D([], [], marker="X", color="black", ls="", ms=6, label="death"),
                Line2D([], [], marker=">", color="#555555", ls="", ms=5,
                       label="alive at last contact")]
    return handles


def swimmer_figure(analysis: Analysis) -> Figure:
    patients = swimmer_patients(analysis)
    n = len(patients)
    fig = Figure(figsize=(10, max(3.6, min(0.1 * n + 1.6, 15))), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.set_gid("swimmer-axes")
    if n == 0:
        no_data(ax)
        return fig
    patients["y"] = np.arange(n)
    height = 0.72
    ax.barh(patients["y"], patients["os_months"], left=0, height=height, color=FOLLOW_UP, lw=0)
    bars = line_bars(analysis.lines, patients)
    colors = [SUBCLASS_COLORS.get(s, OTHER_COLOR) for s in bars["subclass"]]
    ax.barh(bars["y"], bars["width"], left=bars["left"], height=height, color=colors,
            edgecolor="white", lw=0.4)
    middle = bars["left"] + bars["width"] / 2
    for code, (marker, face, size, _) in RESPONSE_MARKS.items():
        hit = bars["best_response"] == code
        if hit.any():
            mark, = ax.plot(middle[hit], bars.loc[hit, "y"], marker, mfc=face, mec="black",
                            ms=size, mew=0.7, ls="")
            mark.set_gid(f"best-response-{code}")
    events = bars.dropna(subset=["pfs_event_months"])
    ax.plot(events["pfs_event_months"], events["y"], "|", color="black", ms=7, mew=1.6)
    car_t = bars[bars["subclass"] == CAR_T_SUBCLASS]
    if len(car_t):
        infusion, = ax.plot(car_t["left"], car_t["y"], "^", mfc=SUBCLASS_COLORS[CAR_T_SUBCLASS],
                            mec="black", ms=6, mew=0.7, ls="")
        infusion.set_gid("car-t-infusion")
    dead, alive = patients[patients["os_event"]], patients[~patients["os_event"]]
    ax.plot(dead["os_months"], dead["y"], "X", color="black", ms=5, ls="")
    ax.plot(alive["os_months"] + 0.2, alive["y"], ">", color="#555555", ms=4, ls="")
    ax.set_ylim(-1, n)
    ax.set_yticks([])
    ax.set_ylabel("patients (one row each)")
    ax.set_xlabel("months from progression after BCMA CAR-T")
    ax.set_xlim(0, float(patients["os_months"].max()) * 1.03 + 0.5)
    ax.xaxis.set_major_locator(MultipleLocator(6 if ax.get_xlim()[1] > 24 else 3))
    ax.grid(axis="x", alpha=0.25)
    tce_classes = set(analysis.lines.loc[analysis.lines["therapy_class"] == "tce", "subclass"])
    legend = fig.legend(handles=_legend_handles(bars, tce_classes), loc="outside right upper",
                        fontsize=8, frameon=False)
    legend.set_gid("swimmer-legend")
    return fig


def swimmer_plot(analysis: Analysis, path: Path) -> Path:
    return save_figure(swimmer_figure(analysis), path,
                       "Treatment course after progression on BCMA CAR-T")
