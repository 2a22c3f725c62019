"""ground_truth.json follows contracts.md; every resource is valid FHIR R4 (R4B models)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from synth_reader import FIXTURE

from connector.synth.catalog import INGREDIENT_CLASS
from connector.synth.params import PUBLISHED, SynthParams

MODELS = {"Patient": Patient, "MedicationAdministration": MedicationAdministration,
          "MedicationRequest": MedicationRequest, "MedicationDispense": MedicationDispense,
          "MedicationStatement": MedicationStatement, "Procedure": Procedure,
          "Observation": Observation}
DESIGN = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
PATIENT_KEYS = {"site": str, "source_id": str, "in_cohort": bool, "exclusion_reason": (str, None),
                "index_product": (str, None), "index_date": "date?",
                "progression_date": "date?", "death_date": "date?",
                "last_contact_date": "date", "lines": list, "progression_basis": (str, None)}
LINE_KEYS = {"line": int, "start_date": "date", "end_date": "date?", "drugs": list,
             "therapy_class": str, "subclass": str, "best_response": str,
             "pfs_event_date": "date?", "pfs_censor_date": "date?"}
SUBCLASSES = {"car_t", "bcma_bispecific", "gprc5d_bispecific", "fcrh5_bispecific",
              "autologous_transplant", "bcma_adc", "xpo1_inhibitor", "bcl2_inhibitor",
              "anti_cd38", "anti_slamf7", "chemotherapy", "imid_pi", "other"}


def _check(record: dict, spec: dict) -> None:
    for key, kind in spec.items():
        assert key in record, key
        value = record[key]
        if kind in ("date", "date?"):
            if value is None and kind == "date?":
                continue
            assert isinstance(value, str) and dt.date.fromisoformat(value).isoformat() == value
        elif isinstance(kind, tuple):
            assert value is None or isinstance(value, kind[0]), key
        else:
            assert isinstance(value, kind), key


@pytest.mark.parametrize("which", ["small_cohort", "committed_cohort"])
def test_ground_truth_schema(which: str, request: pytest.FixtureRequest) -> None:
    folder, truth = request.getfixturevalue(which)
    on_disk = orjson.loads((folder / "ground_truth.json").read_bytes())
    assert on_disk == truth
    assert isinstance(truth["seed"], int) and isinstance(truth["parameters"], dict)
    assert truth["parameters"]["data_cutoff"] == "2022-03-31"
    ingredients = set(re.findall(r"`([a-z][a-z ]+)`", DESIGN.split("**Drug classes**")[0]))
    for p in truth["patients"]:
        _check(p, PATIENT_KEYS)
        assert re.fullmatch(r"site_[a-z]+", p["site"])
        assert p["exclusion_reason"] in (None, "no_car_t", "non_bcma_car_t", "no_progression")
        assert (p["exclusion_reason"] is None) == p["in_cohort"]
        assert p["progression_basis"] in (
            (None,) if not p["in_cohort"] else ("imwg_labs", "new_line_fallback"))
        for ln in p["lines"]:
            _check(ln, LINE_KEYS)
            assert ln["drugs"] == sorted(set(ln["drugs"])) and set(ln["drugs"]) <= ingredients
            assert ln["therapy_class"] in ("tce", "non_tce")
            assert ln["subclass"] in SUBCLASSES
            assert ln["best_response"] in ("CR", "VGPR", "PR", "MR", "SD", "PD", "NE")
    assert set(INGREDIENT_CLASS) <= ingredients


def test_default_fixture_shape(committed_cohort: tuple[Path, dict]) -> None:
    folder, truth = committed_cohort
    assert truth["seed"] == 2023
    patients = truth["patients"]
    assert sum(p["in_cohort"] for p in patients) == 79
    assert {p["site"] for p in patients} == {"site_a", "site_b"}
    reasons = [p["exclusion_reason"] for p in patients if not p["in_cohort"]]
    assert reasons.count("no_car_t") == 3 and reasons.count("non_bcma_car_t") == 1
    assert reasons.count("no_progression") in (3, 4)
    fallback = [p for p in patients if p["progression_basis"] == "new_line_fallback"]
    assert 1 <= len(fallback) <= 2


def _validate_folder(folder: Path, every: int) -> int:
    n = 0
    for site in sorted(p for p in folder.iterdir() if p.is_dir()):
        for rtype, model in MODELS.items():
            lines = (site / f"{rtype}.ndjson").read_bytes().splitlines()
            for line in lines[::every]:
                resource = orjson.loads(line)
                assert resource["resourceType"] == rtype
                assert list(resource)[:3] == ["resourceType", "id", "meta"]
                meta = resource["meta"]
                assert meta["versionId"] in ("1", "2") and meta["lastUpdated"].endswith("Z")
                model.model_validate(resource)
                n += 1
    return n


def test_every_resource_of_the_fixture_is_valid_r4() -> None:
    assert _validate_folder(FIXTURE, every=1) > 20_000


def test_small_cohort_resources_are_valid_r4(small_cohort: tuple[Path, dict]) -> None:
    assert _validate_folder(small_cohort[0], every=11) > 3_000


def test_every_parameter_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "synthetic.md").read_text()
    missing = [f.name for f in dataclasses.fields(SynthParams) if f"`{f.name}`" not in doc]
    assert not missing, f"docs/synthetic.md does not list: {missing}"
    assert set(PUBLISHED) - {"n_patients", "n_sites"} <= {
        f.name for f in dataclasses.fields(SynthParams)}
