"""Lab-heavy test data: a synthetic cohort drowned in Observations the study does not use.

Hospital exports are dominated by routine results (vital signs, chemistry, blood
counts) that no myeloma rule reads. ``make_lab_heavy`` writes a ``cohort synth``
cohort and then interleaves such Observations (LOINC codes absent from
``mappings/labs.csv``) into each site's ``Observation.ndjson`` until they make up
``unused_fraction`` of all resources. Everything follows from the seed; files are
streamed, so a million resources need no more memory than ten thousand.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson

from connector.synth import synthesize

#: Routine results with their UCUM unit, category and plausible range; none is a study code.
UNUSED_CODES: tuple[tuple[str, str, str, str, float, float], ...] = (
    ("8867-4", "Heart rate", "/min", "vital-signs", 50, 120),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", "vital-signs", 90, 170),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", "vital-signs", 50, 100),
    ("8310-5", "Body temperature", "Cel", "vital-signs", 36, 39),
    ("9279-1", "Respiratory rate", "/min", "vital-signs", 10, 28),
    ("2708-6", "Oxygen saturation in Arterial blood", "%", "vital-signs", 88, 100),
    ("29463-7", "Body weight", "kg", "vital-signs", 45, 120),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "laboratory", 130, 148),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "laboratory", 3.2, 5.4),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", "laboratory", 95, 110),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", 70, 220),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory", 6, 40),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume]", "U/L", "laboratory",
     7, 90),
    ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume]", "U/L", "laboratory",
     8, 80),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", "laboratory",
     20, 400),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "laboratory",
     0.5, 12),
    ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory",
     0.2, 2.5),
    ("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L",
     "laboratory", 20, 32),
)
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
#: Resources ``cohort synth`` writes per in-cohort patient, noise included (measured).
SYNTH_PER_PATIENT = 330
_EPOCH = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)


@dataclass
class LabHeavy:
    """What was written: counts to compute rates with."""

    folder: Path
    resources: int
    study: int  # resources cohort synth wrote
    unused: int  # routine Observations added
    patients: int
    bytes: int

    @property
    def unused_fraction(self) -> float:
        return self.unused / self.resources if self.resources else 0.0


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _patient_ids(path: Path) -> list[str]:
    with path.open("rb") as fh:
        return [orjson.loads(line)["id"] for line in fh if line.strip()]


def unused_observation(rng: random.Random, patient_id: str) -> bytes:
    """One routine result as an NDJSON line, shaped like a real export's."""
    code, display, unit, category, low, high = rng.choice(UNUSED_CODES)
    when = _EPOCH + dt.timedelta(seconds=rng.randrange(0, 6 * 365 * 86400))
    updated = when + dt.timedelta(seconds=rng.randrange(600, 86400))
    resource = {
        "resourceType": "Observation",
        "id": f"{rng.getrandbits(128):032x}",
        "meta": {"versionId": "1", "lastUpdated": updated.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category,
                                  "display": category.replace("-", " ").title()}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "issued": updated.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit,
                          "system": "http://unitsofmeasure.org", "code": unit},
    }
    return orjson.dumps(resource)


def make_lab_heavy(out_dir: Path | str, n_resources: int, *, seed: int = 11,
                   unused_fraction: float = 0.8, n_sites: int = 2) -> LabHeavy:
    """Write ``n_resources`` resources, about ``unused_fraction`` of them routine Observations.

    The study part is a ``cohort synth`` cohort of whole patients sized to the
    remaining share (one correction pass, as patients' record counts vary); routine
    results fill up to ``n_resources`` exactly, so the unused share is near, not
    exactly, ``unused_fraction`` (it is reported).
    """
    out = Path(out_dir)
    study_target = max(1, round(n_resources * (1 - unused_fraction)))
    n_patients = max(1, round(study_target / SYNTH_PER_PATIENT))
    for _attempt in range(2):
        if out.exists():
            shutil.rmtree(out)
        synthesize(n_patients, n_sites, seed, out)
        study = sum(_count_lines(f) for f in out.rglob("*.ndjson"))
        better = max(1, round(n_patients * study_target / max(study, 1)))
        if abs(study - study_target) <= 0.02 * study_target or better == n_patients:
            break
        n_patients = better
    (out / "ground_truth.json").unlink(missing_ok=True)
    sites = sorted(p for p in out.iterdir() if p.is_dir())
    study_by_site = {s: sum(_count_lines(f) for f in s.glob("*.ndjson")) for s in sites}
    study = sum(study_by_site.values())
    unused_total = max(0, n_resources - study)
    rng = random.Random(f"{seed}:lab-heavy")
    written = patients = 0
    for i, site in enumerate(sites):
        share = (unused_total - written if i == len(sites) - 1
                 else round(unused_total * study_by_site[site] / max(study, 1)))
        ids = _patient_ids(site / "Patient.ndjson")
        patients += len(ids)
        _interleave(site / "Observation.ndjson", share, ids, rng)
        written += share
    size = sum(f.stat().st_size for f in out.rglob("*.ndjson"))
    return LabHeavy(folder=out, resources=study + written, study=study, unused=written,
                    patients=patients, bytes=size)


def _interleave(path: Path, extra: int, patient_ids: list[str], rng: random.Random) -> None:
    """Rewrite ``path`` with ``extra`` routine results spread evenly among its lines."""
    original = _count_lines(path) if path.exists() else 0
    tmp = path.with_suffix(".tmp")
    per_line = extra / max(original, 1)
    owed = 0.0
    done = 0
    with tmp.open("wb", buffering=1 << 20) as out:
        if path.exists():
            with path.open("rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    out.write(line if line.endswith(b"\n") else line + b"\n")
                    owed += per_line
                    while owed >= 1 and done < extra:
                        out.write(unused_observation(rng, rng.choice(patient_ids)) + b"\n")
                        owed -= 1
                        done += 1
        while done < extra:
            out.write(unused_observation(rng, rng.choice(patient_ids)) + b"\n")
            done += 1
    tmp.replace(path)
