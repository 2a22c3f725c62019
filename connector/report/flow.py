"""Report section: patient flow (CONSORT style), a table per site and a diagram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from connector.report.document import Image, Section, Table
from connector.report.figure import save_figure

FLOW_PNG = "patient_flow.png"


def _excluded_text(step: dict[str, Any]) -> str:
    return "; ".join(f"{e['reason']}: {e['n']}" for e in step["excluded"])


def flow_section(r: dict[str, Any], images: dict[str, Path]) -> Section:
    flow = r["patient_flow"]
    sites = sorted(flow["by_site"])
    header = ["step", "all centres", *[s.replace("_", " ") for s in sites],
              "left the flow here (all centres)"]
    rows = []
    for i, step in enumerate(flow["overall"]["steps"]):
        per_site = [str(flow["by_site"][s]["steps"][i]["n"]) for s in sites]
        rows.append([step["label"], str(step["n"]), *per_site, _excluded_text(step)])
    blocks: list = [
        "Every patient the extraction found, and where each left the path to the analysis. "
        "The cohort is the patients who progressed after a BCMA-directed CAR-T.",
        Table(header, rows)]
    if "patient_flow" in images:
        blocks.append(Image(images["patient_flow"].name,
                            "Patient flow from all patients seen to the analysed cohort"))
    return Section("Patient flow", blocks)


def flow_diagram(r: dict[str, Any], path: Path) -> Path:
    """Boxes down the left for the steps, exclusions to the right (CONSORT layout)."""
    steps = r["patient_flow"]["overall"]["steps"]
    fig = Figure(figsize=(8, 1.3 * len(steps) + 0.4))
    ax = fig.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, len(steps))
    ax.axis("off")
    box = {"boxstyle": "round,pad=0.4", "facecolor": "#eef3f8", "edgecolor": "#33557a"}
    side = {"boxstyle": "round,pad=0.4", "facecolor": "#fbf1e6", "edgecolor": "#a0602a"}
    for i, step in enumerate(steps):
        y = len(steps) - i - 0.5
        ax.text(2.6, y, f"{step['label']}\nn = {step['n']}", ha="center", va="center",
                fontsize=9, bbox=box, wrap=True)
        if i:
            ax.annotate("", xy=(2.6, y + 0.28), xytext=(2.6, y + 0.72),
                        arrowprops={"arrowstyle": "->", "color": "#33557a"})
        if step["excluded"]:
            text = "\n".join(f"{e['reason']}: {e['n']}" for e in step["excluded"])
            # left-aligned beside the arrow, so the connector always meets the box
            ax.text(5.3, y + 0.5, f"Excluded\n{text}", ha="left", va="center", fontsize=8,
                    bbox=side)
            ax.plot([2.6, 5.22], [y + 0.5, y + 0.5], color="#a0602a", lw=0.8)
    fig.tight_layout()
    return save_figure(fig, path, "Patient flow")
