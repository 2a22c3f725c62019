"""Figures, their targets and whether they are met; printed as they are measured."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<": operator.lt,
                                                   "<=": operator.le, ">": operator.gt}
_SHOWN = {">=": "≥", "<": "<", "<=": "≤", ">": ">"}


@dataclass
class Target:
    op: str  # ">=", "<", ...
    bound: float
    text: str = ""  # how to show the bound, e.g. "50,000 res/s"

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{_SHOWN[self.op]} {self.text or _number(self.bound)}"


@dataclass
class Figure:
    section: str
    label: str
    value: float | None
    unit: str = ""
    target: Target | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.target.met(self.value)

    def line(self, quick: bool = False) -> str:
        value = "n/a" if self.value is None else _number(self.value)
        text = f"[{self.section}] {self.label:<58} {value:>12} {self.unit:<8}"
        if self.target is not None:
            verdict = {True: "MET", False: "MISSED", None: "n/a"}[self.met]
            if quick:
                verdict += " (quick sizes)"
            text += f"  target {str(self.target):<16} {verdict}"
        if self.note:
            text += f"  ({self.note})"
        return text.rstrip()


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


class Report:
    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.figures: list[Figure] = []

    def add(self, section: str, label: str, value: float | None, unit: str = "", *,
            target: Target | None = None, note: str = "", **extra: Any) -> Figure:
        fig = Figure(section, label, value, unit, target, note, extra)
        self.figures.append(fig)
        print(fig.line(self.quick), flush=True)
        return fig

    def heading(self, text: str) -> None:
        print(f"\n== {text}", flush=True)

    def summary(self) -> str:
        checked = [f for f in self.figures if f.target is not None]
        met = [f for f in checked if f.met]
        lines = [f"targets: {len(met)} of {len(checked)} met"
                 + (" (quick sizes: the harness works; the verdicts mean nothing)"
                    if self.quick else "")]
        for f in checked:
            state = {True: "met   ", False: "MISSED", None: "n/a   "}[f.met]
            value = "n/a" if f.value is None else _number(f.value)
            lines.append(f"  {state} [{f.section}] {f.label}: {value} {f.unit} "
                         f"(target {f.target})")
        return "\n".join(lines)

    def as_dicts(self) -> list[dict[str, Any]]:
        out = []
        for f in self.figures:
            d = asdict(f)
            d["target"] = str(f.target) if f.target else None
            d["met"] = f.met
            out.append(d)
        return out


def markdown_table(figures: list[dict[str, Any]]) -> str:
    """The figures of a run (``Report.as_dicts``) as a Markdown table, for docs/benchmarks.md."""
    rows = ["| | figure | value | target | met | notes |", "|---|---|---:|---|---|---|"]
    for f in figures:
        value = "n/a" if f["value"] is None else f"{_number(f['value'])} {f['unit']}".strip()
        met = {True: "yes", False: "**no**", None: ""}[f["met"]]
        target = f["target"] or ""
        note = (f["note"] or "").replace("|", "/")
        rows.append(f"| {f['section']} | {f['label']} | {value} | {target} | {met} | {note} |")
    return "\n".join(rows)
