"""Patient flow (CONSORT style): patients seen → any CAR-T → BCMA CAR-T → progressed →
received at least one line after progression, overall and per site.

Each step lists the patients who left the flow there, by reason in clinical words.
The reasons come from the derive stage's ``exclusion_reason``; a reason this module
does not know is shown as it is, at the progression step.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

STEPS = ["seen", "any_car_t", "bcma_car_t", "progressed", "received_a_line"]
STEP_NAMES = {
    "seen": "Patients seen",
    "any_car_t": "Received a CAR-T infusion",
    "bcma_car_t": "Received a BCMA-directed CAR-T",
    "progressed": "Progressed after the BCMA CAR-T",
    "received_a_line": "Received at least one line of therapy after progression",
}
#: exclusion_reason → (the step the patient does not reach, the reason in clinical words)
REASONS = {
    "no_car_t": ("any_car_t", "No CAR-T infusion on record"),
    "non_bcma_car_t": ("bcma_car_t", "CAR-T against another target only"),
    "no_progression": ("progressed", "No progression recorded after the BCMA CAR-T"),
}
NO_LINE = "No line of therapy recorded after progression"


def _flow(all_patients: pd.DataFrame, n_lines: pd.Series) -> dict[str, Any]:
    reasons = all_patients.loc[~all_patients["in_cohort"], "exclusion_reason"].astype(
        object).where(lambda s: s.notna(), "unspecified")
    lost: dict[str, list[dict[str, Any]]] = {step: [] for step in STEPS}
    for reason, count in sorted(reasons.value_counts().items()):
        step, words = REASONS.get(str(reason), ("progressed", f"Other: {reason}"))
        lost[step].append({"reason": words, "n": int(count)})
    without_line = int((n_lines == 0).sum())
    if without_line:
        lost["received_a_line"].append({"reason": NO_LINE, "n": without_line})
    counts = {"seen": int(len(all_patients))}
    for before, step in zip(STEPS, STEPS[1:], strict=False):
        counts[step] = counts[before] - sum(item["n"] for item in lost[step])
    return {"steps": [{"step": step, "label": STEP_NAMES[step], "n": counts[step],
                       "excluded": lost[step]} for step in STEPS]}


def patient_flow(all_patients: pd.DataFrame, patients: pd.DataFrame) -> dict[str, Any]:
    """The flow overall and by site; ``patients`` are the in-cohort rows with ``n_lines``."""
    lines_of = patients.set_index(["site", "source_id"])["n_lines"]
    out = {"overall": _flow(all_patients, lines_of)}
    out["by_site"] = {
        str(site): _flow(group, lines_of[lines_of.index.get_level_values(0) == site])
        for site, group in all_patients.groupby("site", sort=True)}
    return out
