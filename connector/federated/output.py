"""The pooled report folder: results JSON, Kaplan–Meier curves as CSV and PNG, a summary.

Drawn with the report's own ``km_plot`` so pooled and site curves look the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from connector.analysis.survival import KMResult
from connector.federated.pool import Pooled
from connector.report.plots import COLORS, LABELS, Curve, km_plot

TITLES = {"first_line_pfs": "PFS of the first line after CAR-T progression (pooled)",
          "all_lines_pfs": "PFS of all lines after CAR-T progression (pooled)",
          "tce_kind_pfs": "PFS of TCE lines: bispecific vs CAR-T (pooled)",
          "os": "OS from progression after CAR-T, by ever TCE (pooled; naive grouping)"}


def curve_rows(name: str, group: str, fit: KMResult) -> list[dict[str, Any]]:
    """The curve of one fit: each time with at risk, events, censored, S(t) and its band."""
    if fit.fitter is None:
        return []
    table = fit.fitter.event_table
    sf = fit.fitter.survival_function_.iloc[:, 0]
    ci = fit.fitter.confidence_interval_
    rows = []
    for t in table.index:
        if t == 0 and table.at[t, "observed"] == 0 and table.at[t, "censored"] == 0:
            continue
        rows.append({"analysis": name, "group": group, "time_months": round(float(t), 6),
                     "at_risk": int(table.at[t, "at_risk"]),
                     "events": int(table.at[t, "observed"]),
                     "censored": int(table.at[t, "censored"]),
                     "survival": round(float(sf.at[t]), 6),
                     "ci_low": round(float(ci.iloc[:, 0].at[t]), 6),
                     "ci_high": round(float(ci.iloc[:, 1].at[t]), 6)})
    return rows


def _median_text(est: dict[str, Any]) -> str:
    if est["estimate"] is None:
        return "not reached" if est.get("n") else "no data"
    low = "NE" if est["ci_low"] is None else f"{est['ci_low']:.1f}"
    high = "NE" if est["ci_high"] is None else f"{est['ci_high']:.1f}"
    return f"{est['estimate']:.1f} ({low}–{high})"


def _rate_text(est: dict[str, Any]) -> str:
    if est["estimate"] is None:
        return "–"
    return (f"{100 * est['estimate']:.1f}% ({100 * est['ci_low']:.1f}–"
            f"{100 * est['ci_high']:.1f}), {est.get('x')}/{est['n']}")


def summary_markdown(results: dict[str, Any]) -> str:
    """A short readable summary; pooled_results.json has everything."""
    lines = [f"# Pooled results: {', '.join(results['sites'])}", "",
             f"{results['n_patients']['value']} patients, {results['n_lines']['value']} lines "
             f"(small-cell threshold per site: "
             f"{', '.join(f'{k} {v}' for k, v in results['min_cell'].items())}).", "",
             "| analysis | overall | TCE | non-TCE | exact |", "|---|---|---|---|---|"]
    for name in ("first_line_pfs", "all_lines_pfs", "os"):
        block = results["survival"][name]
        med = block["median_months"]
        lines.append(f"| median {name} (months, 95% CI) | {_median_text(med['overall'])} | "
                     f"{_median_text(med['tce'])} | {_median_text(med['non_tce'])} | "
                     f"{'yes' if block['completeness']['exact'] else 'no'} |")
    for name in ("orr", "vgpr_or_better"):
        block = results["responses"]["first_line"][name]
        lines.append(f"| first-line {name} | {_rate_text(block['overall'])} | "
                     f"{_rate_text(block['tce'])} | {_rate_text(block['non_tce'])} | "
                     f"{'yes' if block['completeness']['exact'] else 'no'} |")
    lines += ["", "## Where pooled results differ from a patient-level analysis", ""]
    lines += [f"- {text}" for text in results["approximations"]]
    return "\n".join(lines) + "\n"


def write_pooled(pooled: Pooled, out: Path) -> list[Path]:
    """Write the pooled report folder; returns the files written, sorted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "pooled_results.json", out / "pooled_report.md", out / "pooled_km.csv"]
    written[0].write_text(json.dumps(pooled.results, indent=2) + "\n", encoding="utf-8")
    rows = [row for name, fits in pooled.fits.items() for group, fit in fits.items()
            for row in curve_rows(name, group, fit)]
    pd.DataFrame(rows, columns=["analysis", "group", "time_months", "at_risk", "events",
                                "censored", "survival", "ci_low", "ci_high"]).to_csv(
        written[2], index=False)
    figures: list[str] = []
    for name, fits in pooled.fits.items():
        curves = [Curve(LABELS.get(g, g.replace("_", " ")), fit, COLORS.get(g, "#333333"))
                  for g, fit in fits.items() if g != "overall" or len(fits) == 1]
        png = km_plot(curves, TITLES[name], "months", out / f"km_{name}.png")
        written += [png, png.with_suffix(".svg")]
        figures.append(f"![{TITLES[name]}]({png.name})\n\n*{TITLES[name]}* "
                       f"([SVG]({png.with_suffix('.svg').name}))")
    # the figures carry no title (as in the site report): their captions say what they are
    text = summary_markdown(pooled.results)
    if figures:
        text += "\n## Figures\n\n" + "\n\n".join(figures) + "\n"
    written[1].write_text(text, encoding="utf-8")
    return sorted(written)
