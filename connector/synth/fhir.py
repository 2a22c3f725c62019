"""Turn a course into FHIR R4 resources (plain dicts, keys in a fixed order).

Sites differ the way real ones do: the even-numbered sites send RxNorm and HCPCS
codes together and CPT plus ICD-10-PCS for a CAR-T infusion; the odd-numbered
ones send HCPCS alone for drugs that have it and ICD-10-PCS alone where the code
existed on the day. Every resource carries ``meta.versionId`` and
``meta.lastUpdated``; clock times are local with the site's UTC offset and lie
between 07:00 and 15:59, so the calendar day is the same in UTC.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

from connector.synth import catalog as cat
from connector.synth.course import Assessment, Course, Dose, Proc, iso, ordinal
from connector.synth.covariates import covariate_resources
from connector.synth.names import address, person_name
from connector.synth.params import SynthParams

Resource = dict[str, Any]
#: (resource type, resource, written at the end of the file)
Emitted = tuple[str, Resource, bool]

SITE_OFFSETS = ("-05:00", "-06:00", "-07:00", "-08:00", "-04:00")
LAB_CATEGORY = [{"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "laboratory", "display": "Laboratory"}]}]
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
MCODE_STATUS = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-disease-status"
ROUTES = {
    "iv": {"coding": [{"system": cat.SNOMED, "code": "47625008",
                       "display": "Intravenous route"}]},
    "sc": {"coding": [{"system": cat.SNOMED, "code": "34206005",
                       "display": "Subcutaneous route"}]},
    "oral": {"coding": [{"system": cat.SNOMED, "code": "26643006", "display": "Oral route"}]},
}


def _loinc(code: str, text: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, str] = {"system": cat.LOINC, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": text}


CODE_M_PROTEIN = _loinc("33358-3", "M-spike (SPEP)",
                        "Protein.monoclonal [Mass/volume] in Serum or Plasma by Electrophoresis")
CODE_KAPPA = _loinc("36916-5", "Free kappa light chains, serum")
CODE_LAMBDA = _loinc("33944-0", "Free lambda light chains, serum")
CODE_RATIO = _loinc("48378-4", "Free kappa/lambda ratio",
                    "Kappa light chains.free/Lambda light chains.free [Mass Ratio] in Serum")
CODE_IFE = _loinc("25700-6", "Immunofixation, serum")
CODE_MARROW = _loinc("11118-7", "Plasma cells in bone marrow (%)")
CODE_HGB = _loinc("718-7", "Hemoglobin", "Hemoglobin [Mass/volume] in Blood")
CODE_CREAT = _loinc("2160-0", "Creatinine", "Creatinine [Mass/volume] in Serum or Plasma")
CODE_STATUS = _loinc("97509-4", "Disease status", "Cancer disease progression")
IFE_VALUES = {
    "negative": {"coding": [{"system": cat.SNOMED, "code": "260385009",
                             "display": "Negative"}], "text": "Negative"},
    "positive": {"coding": [{"system": cat.SNOMED, "code": "10828004",
                             "display": "Positive"}], "text": "Positive"},
}
WORSENED = {"coding": [{"system": cat.SNOMED, "code": "271299001",
                        "display": "Patient's condition worsened"}]}


def _qty(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": cat.UCUM, "code": code or unit}


def site_name(i: int) -> str:
    """site_a, site_b, ..., site_z, site_aa, site_ab, ..."""
    letters = ""
    n = i
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return f"site_{letters}"


#: How an oral cycle is recorded, rotating by site and dose (FhirBuilder.oral).
ORAL_FORMS = ("MedicationAdministration", "MedicationDispense", "MedicationRequest",
              "MedicationStatement")


class FhirBuilder:
    """Builds one patient's resources; all randomness comes from ``rng``."""

    def __init__(self, rng: random.Random, site: str, site_no: int,
                 params: SynthParams) -> None:
        self.rng = rng
        self.site = site
        self.site_no = site_no
        self.full_codes = site_no % 2 == 0
        self.tz = SITE_OFFSETS[site_no % len(SITE_OFFSETS)]
        self.p = params
        self.host = site.replace("_", "-")
        self._med_cache: dict[str, dict[str, Any]] = {}
        self._dosage_cache: dict[str, dict[str, Any]] = {}
        self.pcs_from = {"ide_cel": ordinal(params.icd10pcs_ide_cel_from),
                         "cilta_cel": ordinal(params.icd10pcs_cilta_cel_from)}
        self.cat1_from = ordinal(params.cpt_cat1_from)
        self.cutoff = ordinal(params.data_cutoff)

    # -- small pieces ---------------------------------------------------------------

    def new_id(self) -> str:
        x = self.rng.getrandbits(128)
        x = (x & ~(0xF << 76)) | (0x4 << 76)
        x = (x & ~(0x3 << 62)) | (0x2 << 62)
        h = f"{x:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def meta(self, day: int, version: int = 1, delay: tuple[int, int] = (0, 2)) -> dict:
        """Version and a server timestamp a little after the event (never past the cutoff)."""
        r = self.rng.random
        when = iso(min(day + delay[0] + int(r() * (delay[1] - delay[0] + 1)), self.cutoff))
        sec = int(r() * 86400)
        return {"versionId": str(version),
                "lastUpdated": f"{when}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z"}

    def when(self, day: int) -> str:
        """A local clock time between 07:00 and 15:59 with the site's UTC offset."""
        minute = int(self.rng.random() * 540)
        return f"{iso(day)}T{7 + minute // 60:02d}:{minute % 60:02d}:00{self.tz}"

    def medication(self, drug_key: str) -> dict[str, Any]:
        cached = self._med_cache.get(drug_key)
        if cached is None:
            d = cat.DRUGS[drug_key]
            codings = []
            rx = d.rxnorm if (self.full_codes or d.hcpcs is None) else None
            if rx:
                codings.append({"system": cat.RXNORM, "code": rx, "display": d.ingredient})
            if d.hcpcs:
                codings.append({"system": cat.HCPCS, "code": d.hcpcs})
            cached = {"coding": codings, "text": d.text} if codings else {"text": d.text}
            self._med_cache[drug_key] = cached
        return cached

    def dosage(self, drug_key: str) -> dict[str, Any]:
        cached = self._dosage_cache.get(drug_key)
        if cached is None:
            d = cat.DRUGS[drug_key]
            cached = {"route": ROUTES[d.route]}
            if d.dose:
                cached["dose"] = _qty(d.dose[0], d.dose[1])
            elif d.drug_class.endswith("car_t"):
                cached["text"] = "single infusion"
            self._dosage_cache[drug_key] = cached
        return cached

    # -- resources --------------------------------------------------------------------

    def patient(self, course: Course, pid: str) -> Resource:
        given, family = person_name(self.rng)
        res: Resource = {
            "resourceType": "Patient", "id": pid,
            "meta": self.meta(course.last_contact, delay=(1, 5)),
            "identifier": [{
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                     "code": "MR"}]},
                "system": f"https://{self.host}.example.org/fhir/mrn",
                "value": f"{self.site[-1].upper()}{self.rng.randint(1000000, 9999999)}"}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": course.gender,
            "birthDate": iso(course.birth_date),
        }
        if course.death_day is not None and course.death_date_known:
            res["deceasedDateTime"] = iso(course.death_day)
        elif course.death_day is not None:
            res["deceasedBoolean"] = True
        res["address"] = [address(self.rng)]
        return res

    def med_admin(self, dose: Dose, subject: dict[str, str]) -> Resource:
        res: Resource = {
            "resourceType": "MedicationAdministration", "id": self.new_id(),
            "meta": self.meta(dose.end if dose.end is not None else dose.day),
            "status": dose.status,
        }
        if dose.note:
            res["statusReason"] = [{"text": dose.note}]
        res["medicationCodeableConcept"] = self.medication(dose.drug)
        res["subject"] = subject
        if dose.end is not None:
            res["effectivePeriod"] = {"start": iso(dose.day), "end": iso(dose.end)}
        else:
            res["effectiveDateTime"] = self.when(dose.day)
        res["dosage"] = self.dosage(dose.drug)
        return res

    def oral(self, dose: Dose, subject: dict[str, str], i: int) -> tuple[str, Resource]:
        """An oral cycle, recorded the way the site records oral drugs.

        Hospitals mostly record oral drugs as a prescription, a pharmacy dispense or a
        statement of use, rarely an administration (issue 15). The form rotates with
        the site and the dose, so every site sends all four; the exposure period is
        the same cycle (days supply = the cycle's days).
        """
        form = ORAL_FORMS[(self.site_no + i) % len(ORAL_FORMS)]
        if form == "MedicationAdministration":
            return form, self.med_admin(dose, subject)
        end = dose.end if dose.end is not None else dose.day
        days = end - dose.day + 1
        res: Resource = {"resourceType": form, "id": self.new_id(), "meta": self.meta(dose.day)}
        supply = {"value": days, "unit": "days", "system": "http://unitsofmeasure.org",
                  "code": "d"}
        if form == "MedicationRequest":
            res.update(status="completed", intent="order",
                       medicationCodeableConcept=self.medication(dose.drug), subject=subject,
                       authoredOn=self.when(dose.day),
                       dispenseRequest={"expectedSupplyDuration": supply})
        elif form == "MedicationDispense":
            res.update(status="completed", medicationCodeableConcept=self.medication(dose.drug),
                       subject=subject, daysSupply=supply, whenHandedOver=self.when(dose.day))
        else:
            res.update(status="completed", medicationCodeableConcept=self.medication(dose.drug),
                       subject=subject,
                       effectivePeriod={"start": iso(dose.day), "end": iso(end)})
        return form, res

    def procedure(self, proc: Proc, subject: dict[str, str]) -> Resource:
        return {
            "resourceType": "Procedure", "id": self.new_id(), "meta": self.meta(proc.day),
            "status": "completed", "code": self._proc_code(proc), "subject": subject,
            "performedDateTime": self.when(proc.day),
        }

    def _proc_code(self, proc: Proc) -> dict[str, Any]:
        cat1 = proc.day >= self.cat1_from
        if proc.kind == "car_t_harvest":
            return {"coding": [{"system": cat.CPT, "code": "38225" if cat1 else "0537T"}],
                    "text": "Leukapheresis for CAR-T cell manufacturing"}
        if proc.kind == "auto_transplant":
            return {"coding": [{"system": cat.CPT, "code": "38241"}],
                    "text": "Autologous hematopoietic progenitor cell transplantation"}
        cpt = {"system": cat.CPT, "code": "38228" if cat1 else "0540T"}
        pcs = None
        if proc.product in self.pcs_from and proc.day >= self.pcs_from[proc.product]:
            vein = "XW04" if self.rng.random() < 0.3 else "XW03"
            suffix = "3K7" if proc.product == "ide_cel" else "3A7"
            pcs = {"system": cat.ICD10PCS, "code": vein + suffix}
        if pcs is None:
            codings = [cpt]
        elif self.full_codes:
            codings = [cpt, pcs]
        else:
            codings = [pcs]
        return {"coding": codings, "text": "Chimeric antigen receptor T-cell infusion"}

    def _obs(self, code: dict[str, Any], subject: dict[str, str], day: int, when: str,
             **value: Any) -> Resource:
        res: Resource = {
            "resourceType": "Observation", "id": self.new_id(), "meta": self.meta(day),
            "status": "final", "category": LAB_CATEGORY, "code": code, "subject": subject,
            "effectiveDateTime": when,
        }
        res.update(value)
        return res

    def assessment(self, course: Course, a: Assessment, subject: dict[str, str],
                   with_context: bool) -> list[Resource]:
        rng = self.rng
        when = self.when(a.day)
        if course.flc_only:
            dflc = a.value
            m_protein = round(min(0.4, course.m_protein_scale * dflc), 2)
        else:
            m_protein = a.value
            dflc = round(course.flc_per_g_dl * a.value, 1)
        uninvolved = round(course.uninvolved_flc * rng.uniform(0.93, 1.07), 1)
        involved = round(uninvolved + dflc, 1)
        kappa, lam = (involved, uninvolved) if course.kappa_involved else (uninvolved, involved)
        ratio = kappa / lam
        ratio = round(ratio, 3) if ratio < 0.1 else round(ratio, 2)
        out = [
            self._obs(CODE_M_PROTEIN, subject, a.day, when, **self._m_protein_value(m_protein,
                                                                                  a.day)),
            self._obs(CODE_KAPPA, subject, a.day, when, valueQuantity=_qty(kappa, "mg/L")),
            self._obs(CODE_LAMBDA, subject, a.day, when, valueQuantity=_qty(lam, "mg/L")),
            self._obs(CODE_RATIO, subject, a.day, when,
                      valueQuantity=_qty(ratio, "{ratio}", "{ratio}")),
        ]
        if a.ife:
            out.append(self._obs(CODE_IFE, subject, a.day, when,
                                 valueCodeableConcept=IFE_VALUES[a.ife]))
        if a.marrow is not None:
            out.append(self._obs(CODE_MARROW, subject, a.day, when,
                                 valueQuantity=_qty(a.marrow, "%")))
        if with_context:
            out.extend(self.context(a.day, subject, when))
        return out

    def _m_protein_value(self, m_protein: float, day: int) -> dict[str, Any]:
        """An undetectable M-spike as laboratories send it: 0, text, or below a limit."""
        if m_protein > 0:
            return {"valueQuantity": _qty(m_protein, "g/dL")}
        form = (self.site_no + day) % 3
        if form == 1:
            return {"valueString": "None detected"}
        if form == 2:
            return {"valueQuantity": {"value": 0.1, "comparator": "<", **_qty(0.1, "g/dL")}}
        return {"valueQuantity": _qty(0.0, "g/dL")}

    def context(self, day: int, subject: dict[str, str], when: str | None = None
                ) -> list[Resource]:
        rng = self.rng
        when = when or self.when(day)
        hgb = round(min(max(rng.gauss(10.8, 1.4), 6.5), 15.5), 1)
        creat = round(min(max(rng.lognormvariate(0.0, 0.25), 0.5), 3.5), 2)
        return [self._obs(CODE_HGB, subject, day, when, valueQuantity=_qty(hgb, "g/dL")),
                self._obs(CODE_CREAT, subject, day, when, valueQuantity=_qty(creat, "mg/dL"))]

    def disease_status(self, day: int, subject: dict[str, str]) -> Resource:
        meta = self.meta(day)
        meta["profile"] = [MCODE_STATUS]
        return {"resourceType": "Observation", "id": self.new_id(), "meta": meta,
                "status": "final", "code": CODE_STATUS, "subject": subject,
                "effectiveDateTime": self.when(day), "valueCodeableConcept": WORSENED}

    def data_absent(self, day: int, subject: dict[str, str]) -> Resource:
        reason = self.rng.choice((("not-performed", "Not Performed", "specimen not run"),
                                  ("error", "Error", "specimen haemolysed")))
        return self._obs(CODE_M_PROTEIN, subject, day, self.when(day), dataAbsentReason={
            "coding": [{"system": DATA_ABSENT, "code": reason[0], "display": reason[1]}],
            "text": reason[2]})

    # -- one patient -------------------------------------------------------------------

    def build(self, course: Course) -> tuple[str, list[Emitted]]:
        """(Patient id, every resource of the patient in file order).

        Resources flagged ``True`` belong at the end of their file (a later re-send).
        """
        pid = self.new_id()
        subject = {"reference": f"Patient/{pid}"}
        out: list[Emitted] = [("Patient", self.patient(course, pid), False)]
        noise = {n.kind: n for n in course.noise}
        dup = noise.get("duplicate")
        for i, dose in enumerate(course.doses):
            rtype, res = self.oral(dose, subject, i) if dose.end is not None else (
                "MedicationAdministration", self.med_admin(dose, subject))
            out.append((rtype, res, False))
            if dup is not None and dup.index == i:
                twin = copy.deepcopy(res)
                twin["id"] = self.new_id()
                out.append(("MedicationAdministration", twin, False))
        for kind, status, note in (("entered_in_error", "entered-in-error", ""),
                                   ("not_done", "not-done", "Held: patient unwell")):
            item = noise.get(kind)
            if item is not None:
                dose = Dose(item.drug, item.day, None, -1, status, note)
                out.append(("MedicationAdministration", self.med_admin(dose, subject), False))
        for proc in course.procs:
            out.append(("Procedure", self.procedure(proc, subject), False))
        deferred: list[Emitted] = []
        for res in self._observations(course, subject, noise, deferred):
            out.append(("Observation", res, False))
        # Table 1 covariates last: the draws of everything above stay as they were
        out.extend((rtype, res, False) for rtype, res in
                   covariate_resources(self, course, course.covariates, subject))
        out.extend(deferred)
        return pid, out

    def _observations(self, course: Course, subject: dict[str, str], noise: dict[str, Any],
                      deferred: list[Emitted]) -> Iterator[Resource]:
        corrected = noise.get("corrected")
        absent = noise.get("data_absent")
        for i, a in enumerate(course.assessments):
            resources = self.assessment(course, a, subject,
                                        self.rng.random() < self.p.p_context_labs)
            if corrected is not None and corrected.index == i:
                # Version 1 carried a wrong value; version 2 (sent later) corrects it.
                v2 = copy.deepcopy(resources[0])
                v2["meta"] = self.meta(a.day, version=2, delay=(3, 10))
                v2["status"] = "corrected"
                resources[0]["valueQuantity"] = _qty(corrected.value, "g/dL")
                deferred.append(("Observation", v2, True))
            yield from resources
            if course.status_obs_day == a.day:
                yield self.disease_status(a.day, subject)
            if absent is not None and i + 1 < len(course.assessments) and \
                    a.day < absent.day < course.assessments[i + 1].day:
                yield self.data_absent(absent.day, subject)
        for day in course.context_days:
            yield from self.context(day, subject)
