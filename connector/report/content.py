"""What the report says: its sections, built from one Analysis.

Every number printed comes from results.json (``analysis.results``), so the
report and the machine-readable output cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector.analysis.results import Analysis
from connector.report import formatting as fmt
from connector.report import labels as lb
from connector.report.completeness import completeness_section
from connector.report.document import Image, Section, Table
from connector.report.endpoints import endpoints_section
from connector.report.flow import flow_section
from connector.report.nexttreatment import next_treatment_section
from connector.report.published import SOURCE, comparison_rows
from connector.report.subgroups import cox_section, subgroups_section
from connector.report.table1 import table1_section

TITLE = "Outcomes of salvage therapy after progression on BCMA CAR-T"
CLASS_NAMES = lb.CLASS_NAMES


def _summary(r: dict[str, Any]) -> Section:
    excluded = sum(r["excluded"].values())
    first = r["first_line_detail"]
    text = (f"{lb.plural(r['n_patients'], 'patient')} from {lb.plural(r['n_sites'], 'site')} "
            "progressed after a BCMA CAR-T infusion and form the cohort; they received "
            f"{lb.plural(r['n_lines'], 'line')} of therapy after that progression.")
    if excluded:
        text += (f" {lb.plural(excluded, 'further patient')} "
                 f"{'was' if excluded == 1 else 'were'} seen but excluded (see 'Patient "
                 "flow').")
    if r["n_patients"]:
        pfs = fmt.median(first["pfs_median_months"]["overall"])
        text += (f" The first salvage line gave a response (≥PR) in "
                 f"{fmt.pct(first['orr']['overall'])} of evaluable patients, with a median "
                 f"progression-free survival of {pfs}; median overall survival from "
                 "progression was "
                 f"{fmt.median(r['os']['median_months'])}.")
    notation = ("TCE (T-cell engaging therapy) means a bispecific antibody or a subsequent "
                "CAR-T of any target. Rates are shown with exact 95% CIs and x/n; medians in "
                "months (30.4375 days) with 95% CIs; 'NE' marks a confidence bound that cannot "
                "be estimated and 'not reached' a median the Kaplan–Meier curve has not "
                "fallen to.")
    return Section("Summary", [text, notation])


def _comparison(r: dict[str, Any]) -> Section:
    return Section("Comparison with the published study", [
        "This cohort's figures beside those published by Van Oekelen et al. (79 patients, "
        "2 centers). A synthetic cohort is calibrated to resemble them; a real cohort may "
        "differ for many reasons (era, products, access to bispecifics). A comparable "
        "cohort (Reyes et al., Blood Advances 2024, 68 patients) reported a median OS of "
        "about 18 months from relapse and a 41% first-salvage response rate.",
        Table(["measure", "published", "this cohort"], comparison_rows(r),
              caption=f"Published values: {SOURCE}.")])


def _cohort(r: dict[str, Any]) -> Section:
    c, n = r["cohort"], r["n_patients"]
    rows = [
        # age, sex, product and time to progression are in Table 1
        ["Patients", str(n)],
        ["Centre", fmt.tally(c["site"], n, lb.site_name)],
        ["Basis of the progression date",
         fmt.tally(c["progression_basis"], n,
                   lambda code: lb.name(code, lb.PROGRESSION_BASIS_NAMES))],
        ["Lines after progression per patient", fmt.spread(c["lines_per_patient"])],
        ["Patients with ≥1 line", str(c["patients_with_a_line"])],
        ["Ever received a TCE line", fmt.pct(c["ever_tce"])],
        ["Median follow-up from progression (reverse KM)",
         fmt.median(r["os"]["follow_up_median_months"]["overall"])],
    ]
    return Section("Cohort and treatment after progression",
                   [Table(["characteristic", "value"], rows)])


def km_caption(title: str, min_at_risk: int, extra: str = "") -> str:
    """A Kaplan–Meier figure's caption: its title, what is drawn and where curves stop."""
    cut = (f" Each curve stops when fewer than {lb.plural(min_at_risk, 'patient')} remain "
           "at risk." if min_at_risk > 1 else "")
    return (f"{title}. Kaplan–Meier estimate with 95% band; ticks mark censored "
            f"observations; dashed lines mark the median.{extra}{cut} Numbers at risk "
            "below.")


def _first_line(r: dict[str, Any], images: dict[str, Path], min_at_risk: int) -> Section:
    d = r["first_line_detail"]
    rows = []
    for g in ("overall", "tce", "non_tce"):
        rows.append([CLASS_NAMES[g], str(d["orr_all_treated"][g]["n"]),
                     str(d["n_not_evaluable"][g]), fmt.pct(d["orr"][g]),
                     fmt.pct(d["vgpr_or_better"][g]), fmt.pct(d["cr_or_better"][g]),
                     fmt.median(d["pfs_median_months"][g])])
    fisher = d["orr_fisher_tce_vs_non_tce"]
    odds = fisher["odds_ratio"]
    odds_text = ("" if odds["estimate"] is None else
                 f", odds ratio {odds['estimate']:.2f} (95% CI {fmt._num(odds['ci_low'], 2)}–"
                 f"{fmt._num(odds['ci_high'], 2)})")
    tests = (f"TCE vs non-TCE: ORR by Fisher's exact test {fmt.p_value(fisher['p'])}{odds_text}; "
             f"PFS by log-rank {fmt.p_value(d['pfs_logrank_tce_vs_non_tce']['p'])}; Cox "
             f"model {fmt.hazard_ratio(d['pfs_cox_tce_vs_non_tce'])}. ORR counting every first "
             f"line (NE as no response): {fmt.pct(d['orr_all_treated']['overall'])}.")
    if d["n_cr_not_determinable"]:
        tests += (f" ≥CR could not be determined for "
                  f"{lb.plural(d['n_cr_not_determinable'], 'VGPR line')} (no immunofixation "
                  "or marrow); they are left out of the ≥CR denominator.")
    if d["n_pfs_not_usable"]:
        n_bad = d["n_pfs_not_usable"]
        tests += (f" {lb.plural(n_bad, 'first line')} had no PFS event or censoring date "
                  f"and {'is' if n_bad == 1 else 'are'} left out of PFS.")
    return Section("First salvage line", [
        Table(["class", "lines", "not evaluable (NE)", "ORR (≥PR)", "≥VGPR", "≥CR",
               "median PFS"], rows),
        tests,
        Image(images["first_line_pfs"].name,
              km_caption("Progression-free survival of the first salvage line, TCE vs "
                         "non-TCE", min_at_risk,
                         " Hazard ratio (Cox, stratified by site) and log-rank p as in "
                         "the text."))])


def _all_lines(r: dict[str, Any], analysis: Analysis, images: dict[str, Path]) -> Section:
    a, t = r["all_lines"], r["tce"]
    lines = analysis.lines
    tce = set(lines.loc[lines["therapy_class"] == "tce", "subclass"]) if len(lines) else set()
    rows = [[CLASS_NAMES[g], fmt.pct(a["orr_by_class"][g]),
             fmt.pct(a["vgpr_or_better_by_class"][g]), fmt.pct(a["cr_or_better_by_class"][g]),
             fmt.median(a["pfs_median_months_by_class"][g])]
            for g in ("overall", "tce", "non_tce")]
    # TCE regimen classes first, then non-TCE (as in the figure), each by name
    order = sorted(a["orr_by_subclass"],
                   key=lambda s: (s not in tce, lb.name(s, lb.SUBCLASS_NAMES).lower()))
    sub_rows = [[lb.name(s, lb.SUBCLASS_NAMES), "TCE" if s in tce else "non-TCE",
                 str(a["lines_by_subclass"][s]), fmt.pct(a["orr_by_subclass"][s]),
                 fmt.median(a["pfs_median_months_by_subclass"][s])] for s in order]
    bv = t["bispecific_vs_car_t"]
    text = (f"Lines of one patient are pooled, so these CIs treat lines as independent and are "
            f"somewhat narrow. TCE vs non-TCE over all lines: ORR Fisher "
            f"{fmt.p_value(a['orr_fisher_tce_vs_non_tce']['p'])}; PFS log-rank "
            f"{fmt.p_value(a['pfs_logrank_tce_vs_non_tce']['p'])}; Cox "
            f"{fmt.hazard_ratio(a['pfs_cox_tce_vs_non_tce'])}. Patients responding (≥PR) to "
            f"at least one TCE line, among those with an evaluable TCE line: "
            f"{fmt.pct(t['patient_response_evaluable'])} (published: 91.4%, 32 of 35).")
    kind_text = ""
    if bv["n_lines"]["bispecific"] and bv["n_lines"]["car_t"]:
        kind_text = (f"Bispecific antibody lines of any target "
                     f"({lb.plural(bv['n_lines']['bispecific'], 'line')}): ORR "
                     f"{fmt.pct(bv['orr']['bispecific'])}, median PFS "
                     f"{fmt.median(bv['pfs_median_months']['bispecific'])}; against CAR-T "
                     f"lines (in the table): ORR Fisher {fmt.p_value(bv['orr_fisher']['p'])}, "
                     f"PFS log-rank {fmt.p_value(bv['pfs_logrank']['p'])}.")
    return Section("All lines after progression", [
        Table(["class", "ORR (≥PR)", "≥VGPR", "≥CR", "median PFS"], rows), text,
        Table(["regimen class", "class", "lines", "ORR (≥PR)", "median PFS"], sub_rows,
              caption="Regimen class: the first that applies of CAR-T (any target); a BCMA, "
                      "GPRC5D or FcRH5 bispecific antibody; autologous stem-cell transplant; "
                      "a BCMA antibody–drug conjugate; an XPO1 inhibitor; a BCL-2 inhibitor; "
                      "an anti-CD38 antibody; an anti-SLAMF7 antibody; cytotoxic "
                      "chemotherapy; an IMiD and/or proteasome inhibitor; other."),
        *([kind_text] if kind_text else []),
        Image(images["responses"].name,
              "Response rates with exact 95% CIs (x/n above each bar). A: first salvage "
              "line, overall response (≥PR, solid) and ≥VGPR (hatched) by class. B: "
              "overall response of all lines by regimen class, TCE classes (blue) then "
              "non-TCE classes (orange).")])


def _os(r: dict[str, Any], analysis: Analysis, images: dict[str, Path],
        min_at_risk: int) -> Section:
    o = r["os"]
    lm = o["landmark"]
    months = analysis.settings.landmark_months
    naive = o["median_months_by_ever_tce"]
    bias = (
        "Immortal-time bias. Grouping patients by whether they ever received a TCE line "
        "(as the published 'median OS not reached with TCE' does) favours the TCE group by "
        "construction: a patient who starts a TCE line 8 months after progression must have "
        "survived those 8 months, and that event-free time is credited to the TCE group, "
        "while every patient who dies early can only be in the never-TCE group. The naive "
        "comparison is shown only to set beside the published figure. Two analyses remove "
        f"the bias: (1) a landmark analysis at {months:g} months after progression — only "
        f"patients alive and still followed at {months:g} months, grouped by whether a TCE "
        "line had started by then, with survival counted from the landmark (patients who "
        "start TCE later stay in the no-TCE group, which pulls the groups together); (2) a "
        "Cox model with TCE exposure as a time-varying covariate (unexposed until the first "
        "TCE line, exposed from then on), stratified by site, which uses every patient and "
        "all follow-up.")
    rows = [
        ["All patients", fmt.median(o["median_months"])],
        ["Ever TCE (naive, biased)", fmt.median(naive["tce"])],
        ["Never TCE (naive, biased)", fmt.median(naive["non_tce"])],
        [f"TCE by {months:g} mo, from the landmark",
         fmt.median(lm["median_months_from_landmark"]["tce"])],
        [f"No TCE by {months:g} mo, from the landmark",
         fmt.median(lm["median_months_from_landmark"]["non_tce"])],
    ]
    gone = lm["n_not_at_risk_at_landmark"]
    before = f" ({gone} died or were censored before)" if gone else ""
    tests = (f"Naive ever-TCE log-rank {fmt.p_value(o['ever_tce_logrank']['p'])}. Landmark: "
             f"{lb.plural(lm['n'], 'patient')} at risk at {months:g} months{before}, log-rank "
             f"{fmt.p_value(lm['logrank']['p'])}. "
             f"Time-varying Cox for TCE exposure: {fmt.hazard_ratio(o['tce_time_varying_cox'])}. "
             f"Median follow-up (reverse Kaplan–Meier): all "
             f"{fmt.median(o['follow_up_median_months']['overall'])}; ever TCE "
             f"{fmt.median(o['follow_up_median_months']['tce'])}.")
    if o["n_not_usable"]:
        tests += (f" {lb.plural(o['n_not_usable'], 'patient')} lacked a usable progression "
                  "or last-contact date and are left out of OS.")
    return Section("Overall survival from progression after CAR-T", [
        Table(["group", "median OS"], rows), tests, bias,
        Image(images["os"].name,
              km_caption("Overall survival from progression after BCMA CAR-T", min_at_risk)),
        Image(images["os_ever_tce"].name,
              km_caption("Overall survival by ever receiving a TCE line — naive grouping, "
                         "subject to immortal-time bias", min_at_risk,
                         " The hazard ratio shares the bias.")),
        Image(images["os_landmark"].name,
              km_caption(f"Overall survival from a {months:g}-month landmark, by TCE started "
                         "before the landmark", min_at_risk))])


def _swimmer(analysis: Analysis, images: dict[str, Path]) -> Section:
    n, limit = len(analysis.patients), analysis.settings.swimmer_max_patients
    note = (f" With {n} patients, a fixed subset of {limit} (chosen by pseudonymous key "
            "order, so the same on every run) is drawn." if n > limit else "")
    return Section("Treatment course", [
        "One row per patient from progression after CAR-T to death or last contact. Each "
        "line is a bar coloured by its regimen class, from its start to the next line's "
        "start or its progression, whichever came first; a symbol on the bar marks the "
        "line's best response, a black tick a progression, a triangle a CAR-T infusion, a "
        f"cross death and an arrow a patient alive at last contact.{note}",
        Image(images["swimmer"].name,
              "Treatment course after progression on BCMA CAR-T (swimmer plot)")])


def _methods(analysis: Analysis) -> Section:
    s = analysis.settings
    items = "\n".join(f"- {lb.name(key, lb.TERM_NAMES)}: {lb.prose(text)}"
                      for key, text in analysis.results["definitions"].items())
    return Section("Methods and definitions", [
        items,
        "ORR denominator: as in the study, evaluable patients — the first line counts when "
        "its best response is any category other than NE (NE: fewer than two response "
        "assessments). The 'all treated' variant counts NE lines as non-responders. "
        "Response categories follow the IMWG uniform criteria, each confirmed by two "
        "consecutive assessments; CR needs negative immunofixation and < 5% marrow plasma "
        "cells, otherwise the line is at most VGPR and ≥CR is 'not determinable'.",
        f"Statistics: exact Clopper–Pearson intervals; Fisher's exact test (two-sided) with "
        f"the conditional maximum-likelihood odds ratio; Kaplan–Meier with log(-log) "
        f"pointwise 95% bands (lifelines), medians as the first time S(t) ≤ 0.5; log-rank "
        f"tests; Cox proportional hazards stratified by site when there is more than one "
        f"site, fitted only with ≥ {s.cox_min_events} events and an event in each group "
        f"(otherwise, or when the fit does not converge, reported as not estimated). "
        f"Confidence level {100 * (1 - s.alpha):g}%. Landmark {s.landmark_months:g} months.",
    ])


def _files(written: list[str]) -> Section:
    return Section("Files", ["\n".join(f"- {name}" for name in written)])


def build_sections(analysis: Analysis, images: dict[str, Path],
                   extra_sections: list[Section], files: list[str],
                   min_at_risk: int = 1) -> list[Section]:
    r = analysis.results
    return [_summary(r), _comparison(r), flow_section(r, images), table1_section(r), _cohort(r),
            _first_line(r, images, min_at_risk), _all_lines(r, analysis, images),
            next_treatment_section(r),
            _os(r, analysis, images, min_at_risk), endpoints_section(r),
            subgroups_section(r, images), cox_section(r),
            _swimmer(analysis, images), completeness_section(r), *extra_sections,
            _methods(analysis),
            _files(files)]
