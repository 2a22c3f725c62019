"""``cohort pool``: pooled results from several sites' share files, without patient rows.

Each share file's event tables are expanded back into the (time, event) pairs they
stand for and fitted with the analysis layer's own functions (``kaplan_meier``,
``logrank``, ``cox_hazard_ratio``), and response counts are summed and given the same
exact intervals. With nothing suppressed this is the patient-level analysis of the
merged cohort, number for number (tested); where a site coarsened a table or withheld
a count, the affected estimates are flagged in ``completeness``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connector.analysis.rates import fisher_exact, rate
from connector.analysis.settings import AnalysisSettings
from connector.analysis.survival import KMResult, cox_hazard_ratio, kaplan_meier, logrank
from connector.federated.share import FORMAT, RESPONSES, SURVIVAL, VERSION
from connector.federated.tables import Row, check_table, expand

GROUPS = {"therapy_class": ["tce", "non_tce"], "ever_tce_group": ["tce", "non_tce"],
          "tce_kind": ["bispecific", "car_t"]}
APPROXIMATIONS = [
    "All-lines PFS Cox: model-based standard errors. The patient-level analysis clusters the "
    "lines of a patient (robust errors); share files carry no patient link, so the pooled "
    "hazard ratio is the same but its interval and p-value use model-based errors, which "
    "ignore the correlation between the lines of one patient.",
    "OS with TCE as a time-varying covariate and the 6-month landmark are not pooled: they "
    "need each patient's TCE start within the follow-up, which aggregate tables do not carry.",
    "A coarsened table (small cells merged) places each merged row's events at the mean "
    "time of its patients: medians and curves from it are approximate, and a suppressed "
    "group is left out entirely. A rate with a withheld count is pooled over the sites "
    "that published it (listed under completeness); its overall rate is then not given.",
]


class PoolRefused(ValueError):
    """A share file cannot be pooled (wrong format, inconsistent, a site twice)."""


@dataclass
class Pooled:
    """Pooled results and the fits to draw."""

    results: dict[str, Any]
    fits: dict[str, dict[str, KMResult]] = field(default_factory=dict)


def load_share(path: Path) -> dict[str, Any]:
    """A share file, checked: format, version and every event table's arithmetic."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PoolRefused(f"{path}: not a readable share file ({type(exc).__name__})") from None
    if content.get("format") != FORMAT or content.get("version") != VERSION:
        raise PoolRefused(f"{path}: not a version-{VERSION} share file of this tool")
    for name, block in content["survival"].items():
        for site, groups in block["sites"].items():
            for group, table in groups.items():
                problem = None if table["rows"] is None else check_table(
                    [Row(*r) for r in table["rows"]])
                if problem:
                    raise PoolRefused(f"{path}: {name} {site}/{group}: {problem}")
    return content


def _merge_blocks(shares: list[dict[str, Any]], part: str, name: str) -> dict[str, Any]:
    """site -> group -> content of one analysis over all files."""
    out: dict[str, Any] = {}
    for share in shares:
        out.update(share[part][name]["sites"])
    return out


def _survival_frame(sites: dict[str, Any], notes: dict[str, list[str]]) -> pd.DataFrame:
    parts = []
    for site, groups in sorted(sites.items()):
        for group, table in sorted(groups.items()):
            if table["rows"] is None:
                notes["suppressed"].append(f"{site}/{group}")
                continue
            if table["coarsened"]:
                notes["coarsened"].append(f"{site}/{group}")
            months, events = expand([Row(*r) for r in table["rows"]])
            parts.append(pd.DataFrame({"site": site, "group": group, "months": months,
                                       "event": events}))
    if not parts:
        return pd.DataFrame({"site": [], "group": [], "months": [], "event": []})
    return pd.concat(parts, ignore_index=True)


def _survival(name: str, sites: dict[str, Any], group_by: str, s: AnalysisSettings,
              fits: dict[str, dict[str, KMResult]]) -> dict[str, Any]:
    notes: dict[str, list[str]] = {"suppressed": [], "coarsened": []}
    frame = _survival_frame(sites, notes)
    frame["event"] = frame["event"].astype(bool)
    groups = GROUPS[group_by]
    fit = {"overall": kaplan_meier(frame["months"], frame["event"], "all", s.alpha)}
    for g in groups:
        part = frame[frame["group"] == g]
        fit[g] = kaplan_meier(part["months"], part["event"], g, s.alpha)
    fits[name] = fit
    flagged = frame.assign(flag=frame["group"] == groups[0])
    cox = cox_hazard_ratio(flagged[flagged["group"].isin(groups)], "months", "event", "flag",
                           alpha=s.alpha, min_events=s.cox_min_events) if name != "os" else {
        "status": "not pooled: a Cox model of ever-TCE is immortal-time biased (see "
                  "approximations)"}
    return {
        "median_months": {k: v.as_estimate() for k, v in fit.items()},
        "logrank": logrank(frame[frame["group"].isin(groups)], "months", "event", "group"),
        "cox": cox,
        "cox_compares": f"{groups[0]} vs {groups[1]}, stratified by site when several",
        "completeness": {"exact": not any(notes.values()), **notes},
    }


RATES = {"orr": ("responder", "evaluable"), "vgpr_or_better": ("vgpr_or_better", "evaluable"),
         "cr_or_better": ("cr_or_better", "cr_determinable"),
         "orr_all_treated": ("responder", "treated")}


def _rates(sites: dict[str, Any], groups: list[str], alpha: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (num, den) in RATES.items():
        sums: dict[str, list[int]] = {g: [0, 0] for g in groups}
        missing: list[str] = []
        for site, per_group in sorted(sites.items()):
            for g, counts in sorted(per_group.items()):
                x, n = counts.get(num), counts.get(den)
                if x is None or n is None:
                    missing.append(f"{site}/{g}")
                    continue
                sums.setdefault(g, [0, 0])
                sums[g][0] += x
                sums[g][1] += n
        total = [sum(v[0] for v in sums.values()), sum(v[1] for v in sums.values())]
        # an overall rate over the groups that happen to be published would be a
        # different population (e.g. non-TCE only): none rather than a misleading one
        out[name] = {"overall": rate(*total, alpha) if not missing else rate(0, 0, alpha),
                     **{g: rate(*sums[g], alpha) for g in groups},
                     "completeness": {"exact": not missing, "withheld": missing}}
    return out


def pool(shares: list[dict[str, Any]], settings: AnalysisSettings | None = None) -> Pooled:
    """Pooled KM medians, log-rank and Cox, and response rates of the share files."""
    sites = [site for share in shares for site in share["sites"]]
    twice = sorted({s for s in sites if sites.count(s) > 1})
    if twice:
        raise PoolRefused(f"site(s) in more than one share file: {', '.join(twice)}")
    alphas = {share["alpha"] for share in shares}
    if len(alphas) > 1:
        raise PoolRefused(f"share files made with different alpha: {sorted(alphas)}")
    s = settings or AnalysisSettings(alpha=alphas.pop() if alphas else 0.05)
    fits: dict[str, dict[str, KMResult]] = {}
    survival = {name: _survival(name, _merge_blocks(shares, "survival", name),
                                spec[4], s, fits) for name, spec in SURVIVAL.items()}
    responses = {}
    for name, (_subset, group_by) in RESPONSES.items():
        block = _merge_blocks(shares, "responses", name)
        groups = GROUPS.get(group_by) or sorted({g for per in block.values() for g in per})
        responses[name] = _rates(block, groups, s.alpha)
    orr = responses["first_line"]["orr"]
    first_pfs = survival["first_line_pfs"]["median_months"]
    results = {
        "sites": sorted(sites), "n_sites": len(sites),
        "min_cell": {site: share["min_cell"] for share in shares for site in share["sites"]},
        "n_patients": _sum_counts(shares, "n_patients"), "n_lines": _sum_counts(shares, "n_lines"),
        "first_line": {
            "orr": {k: _contract(orr[k]) for k in ("overall", "tce", "non_tce")},
            "vgpr_or_better": {k: _contract(responses["first_line"]["vgpr_or_better"][k])
                               for k in ("overall", "tce", "non_tce")},
            "pfs_median_months": {k: _contract(v) for k, v in first_pfs.items()},
        },
        "os_median_months": _contract(survival["os"]["median_months"]["overall"]),
        "os_median_months_by_ever_tce": {k: _contract(survival["os"]["median_months"][k])
                                         for k in ("tce", "non_tce")},
        "orr_fisher_tce_vs_non_tce": _fisher(orr, s.alpha),
        "survival": survival, "responses": responses, "approximations": APPROXIMATIONS,
        "settings": s.as_dict(),
    }
    return Pooled(results=results, fits=fits)


def _contract(est: dict[str, Any]) -> dict[str, Any]:
    return {k: est[k] for k in ("estimate", "ci_low", "ci_high", "n")}


def _fisher(orr: dict[str, Any], alpha: float) -> dict[str, Any]:
    tce, non = orr["tce"], orr["non_tce"]
    return {"groups": ["tce", "non_tce"],
            **fisher_exact(tce["x"], tce["n"], non["x"], non["n"], alpha)}


def _sum_counts(shares: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [share["counts"][site][key] for share in shares for site in share["sites"]]
    known = [v for v in values if v is not None]
    return {"value": int(np.sum(known)) if known else 0,
            "complete": len(known) == len(values)}
