"""Baseline covariates of a study patient (Table 1, issue 16) and their FHIR resources.

They come from a random stream of their own, so adding them leaves every other
draw (and so the calibrated outcomes) unchanged. The resources are those a
hospital record holds: FISH results as Conditions (confirmed when found,
refuted when looked for and not found, nothing when never tested),
extramedullary disease as an ICD-10-CM coded Condition, the R-ISS stage at
diagnosis as a staging Observation (LOINC 21908-9 with an NCIt value, as mCODE
codes it) and LDH as a lab (LOINC 2532-0). Ground truth carries what was
recorded, with None for "not recorded", as the connector should report it.
"""

from __future__ import annotations

import random
from typing import Any

from connector.codes.codesets import FINDINGS
from connector.synth import catalog as cat
from connector.synth.course import Course, iso
from connector.synth.params import SynthParams

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item", "display": "Problem List Item"}]}
#: How a FISH finding is written on the problem list (text only: no code exists).
FISH_TEXT = {"del_17p": "Multiple myeloma with del(17p) by FISH",
             "t_4_14": "Multiple myeloma with t(4;14) by FISH",
             "t_14_16": "Multiple myeloma with t(14;16) by FISH",
             "gain_1q": "Multiple myeloma with 1q21 gain by FISH"}
RISS_CODES = {"I": "C141394", "II": "C141395", "III": "C141396"}


def draw_covariates(course: Course, rng: random.Random, p: SynthParams) -> dict[str, Any]:
    """What the record will hold (None = not recorded), with the days of each record."""
    out: dict[str, Any] = dict.fromkeys(FINDINGS)
    index = course.index_day or course.last_contact
    progression = course.progression_day or course.last_contact
    out["_fish_day"] = index - rng.randint(365, 4 * 365)
    if rng.random() < p.p_fish_recorded:
        for name, chance in (("del_17p", p.p_del_17p), ("t_4_14", p.p_t_4_14),
                             ("t_14_16", p.p_t_14_16), ("gain_1q", p.p_gain_1q)):
            out[name] = "present" if rng.random() < chance else "absent"
    if rng.random() < p.p_extramedullary:
        out["extramedullary"] = "present"
        out["_emd_day"] = progression - rng.randint(0, 120)
    stage = None
    if rng.random() < p.p_riss_recorded:
        stage = rng.choices(list(p.riss_probs), weights=list(p.riss_probs.values()))[0]
    out["riss_stage"] = stage
    ldh = None
    if rng.random() < p.p_ldh_recorded:
        ldh = round(rng.lognormvariate(0.0, p.ldh_sigma) * p.ldh_median)
        out["_ldh_day"] = progression - rng.randint(0, 20)
    out["ldh"] = ldh
    return out


def truth_of(cov: dict[str, Any], upper_limit: float = 250.0) -> dict[str, Any]:
    """The ground-truth ``baseline`` entry (no private day fields)."""
    out = {k: v for k, v in cov.items() if not k.startswith("_")}
    out["ldh_elevated"] = None if out.get("ldh") is None else out["ldh"] > upper_limit
    return out


def covariate_resources(builder: Any, course: Course, cov: dict[str, Any],
                        subject: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(resource type, resource) for each recorded covariate."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name in ("del_17p", "t_4_14", "t_14_16", "gain_1q"):
        if cov.get(name) is not None:
            out.append(("Condition", _condition(builder, subject, cov["_fish_day"],
                                                {"text": FISH_TEXT[name]},
                                                refuted=cov[name] == "absent")))
    if cov.get("extramedullary") == "present":
        code = "C90.22" if cov["_emd_day"] > (course.index_day or 0) else "C90.20"
        display = ("Extramedullary plasmacytoma in relapse" if code == "C90.22"
                   else "Extramedullary plasmacytoma not having achieved remission")
        out.append(("Condition", _condition(builder, subject, cov["_emd_day"], {
            "coding": [{"system": ICD10CM, "code": code, "display": display}],
            "text": display}, refuted=False)))
    if cov.get("riss_stage"):
        stage = cov["riss_stage"]
        day = cov["_fish_day"]
        out.append(("Observation", builder._obs(
            {"coding": [{"system": cat.LOINC, "code": "21908-9",
                         "display": "Stage group.clinical Cancer"}], "text": "R-ISS stage"},
            subject, day, builder.when(day), valueCodeableConcept={
                "coding": [{"system": NCIT, "code": RISS_CODES[stage],
                            "display": f"RISS Stage {stage} Plasma Cell Myeloma"}],
                "text": f"R-ISS stage {stage}"})))
    if cov.get("ldh") is not None:
        day = cov["_ldh_day"]
        out.append(("Observation", builder._obs(
            {"coding": [{"system": cat.LOINC, "code": "2532-0",
                         "display": "Lactate dehydrogenase [Enzymatic activity/volume] in "
                                    "Serum or Plasma"}], "text": "LDH"},
            subject, day, builder.when(day),
            valueQuantity={"value": cov["ldh"], "unit": "U/L",
                           "system": "http://unitsofmeasure.org", "code": "U/L"})))
    return out


def _condition(builder: Any, subject: dict[str, str], day: int, code: dict[str, Any],
               refuted: bool) -> dict[str, Any]:
    status = "refuted" if refuted else "confirmed"
    res: dict[str, Any] = {
        "resourceType": "Condition", "id": builder.new_id(), "meta": builder.meta(day),
        "verificationStatus": {"coding": [{"system": VER_STATUS, "code": status}]},
        "category": [CATEGORY], "code": code, "subject": subject,
        "onsetDateTime": iso(day), "recordedDate": iso(day)}
    if not refuted:
        res["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": "active"}]}
    return res
