"""Report sections: subgroups (with the forest plot) and the multivariable Cox models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.report import formatting as fmt
from connector.report import labels as lb
from connector.report.document import Image, Section, Table


def level_label(key: str, level: dict[str, Any]) -> str:
    """A subgroup level in the reader's words (a centre by its configured name)."""
    return lb.site_name(level["label"]) if key == "site_group" else level["label"]


def subgroups_section(r: dict[str, Any], images: dict[str, Path]) -> Section:
    rows = []
    for key, g in r["subgroups"].items():
        for level in g["levels"].values():
            rows.append([g["label"], level_label(key, level), str(level["n_patients"]),
                         fmt.pct(level["orr"]), fmt.median(level["pfs_median_months"]),
                         fmt.median(level["os_median_months"])])
    left_out = [f"{g['label'].lower()}: {g['not_classified']}" for g in r["subgroups"].values()
                if g["not_classified"]]
    blocks: list = [
        "First salvage line response (at least PR, among evaluable first lines) and "
        "progression-free survival, and overall survival from progression, by group. "
        "Groups are small and many are compared, so these are descriptive; hazard ratios "
        "compare the first group of each pair with the second and are stratified by "
        "centre (except the centre comparison)."
        + (f" Patients who could not be classified were left out ({'; '.join(left_out)})."
           if left_out else ""),
        Table(["group", "subgroup", "patients", "first salvage response",
               "first salvage PFS (median)", "overall survival (median)"], rows)]
    if "forest" in images:
        blocks.append(Image(images["forest"].name,
                            "Subgroups: hazard ratios of first salvage progression-free "
                            "survival and of overall survival with 95% CIs (log scale)"))
    return Section("Subgroups", blocks)


def _two(value: float | None) -> str:
    return fmt.NE if value is None else f"{value:.2f}"


def _hr_rows(model: dict[str, Any]) -> list[list[str]]:
    return [[h["label"], _two(h["estimate"]), f"{_two(h['ci_low'])}–{_two(h['ci_high'])}",
             fmt.p_value(h["p"])]
            for h in model["hazard_ratios"].values()]


def cox_section(r: dict[str, Any]) -> Section:
    c = r["multivariable_cox"]
    os_model, pfs_model = c["os"], c["pfs_line_adjusted"]
    blocks: list = [os_model["caveat"]]
    if os_model["status"] == "ok":
        blocks.append(
            f"Overall survival from progression: TCE as a time-varying covariate (counted "
            f"from the first TCE line on) with the baseline characteristics, "
            f"{os_model['n_used']} of {os_model['n_patients_with_os']} patients with every "
            f"characteristic recorded ({os_model['events']} deaths); the other "
            f"{os_model['n_left_out_incomplete']} were left out, not imputed.")
        blocks.append(Table(["characteristic", "hazard ratio", "95% CI", "p"],
                            _hr_rows(os_model)))
    else:
        blocks.append(f"Overall survival model not estimated: "
                      f"{os_model['status'].replace('not_estimable: ', '')} "
                      f"({os_model['n_used']} patients with every characteristic recorded).")
    if pfs_model["status"] == "ok":
        blocks.append(
            f"Progression-free survival of every line ({pfs_model['n_lines']} lines, "
            f"{pfs_model['n_patients']} patients, {pfs_model['events']} events), TCE adjusted "
            "for the line number; confidence intervals allow for several lines per patient.")
        blocks.append(Table(["characteristic", "hazard ratio", "95% CI", "p"],
                            _hr_rows(pfs_model)))
    return Section("Multivariable Cox models", blocks)
