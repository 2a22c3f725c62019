"""Same seed, same bytes; the committed fixture is what `make fixtures` produces."""

from __future__ import annotations

from pathlib import Path

from synth_reader import FIXTURE

from connector.synth import synthesize, truth_only


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    synthesize(30, 2, seed=7, out_dir=tmp_path / "a")
    synthesize(30, 2, seed=7, out_dir=tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == ["ground_truth.json"] + [
        f"{site}/{t}.ndjson" for site in ("site_a", "site_b")
        for t in ("Condition", "MedicationAdministration", "MedicationDispense",
                  "MedicationRequest", "MedicationStatement", "Observation", "Patient",
                  "Procedure")]
    assert a == b


def test_different_seed_gives_different_cohort(tmp_path: Path) -> None:
    ta = synthesize(30, 2, seed=7, out_dir=tmp_path / "a")
    tb = synthesize(30, 2, seed=8, out_dir=tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "b")
    assert [p["source_id"] for p in ta["patients"]] != [p["source_id"] for p in tb["patients"]]


def test_patients_do_not_depend_on_cohort_size(tmp_path: Path) -> None:
    """Each patient has its own random streams: 20 patients are a prefix of 21."""
    small = synthesize(20, 1, seed=3, out_dir=tmp_path / "a", noise=False)
    large = synthesize(21, 1, seed=3, out_dir=tmp_path / "b", noise=False)
    ids_small = {p["source_id"]: p for p in small["patients"]}
    shared = [p for p in large["patients"] if p["source_id"] in ids_small]
    assert len(shared) == 20
    assert all(ids_small[p["source_id"]] == p for p in shared)


def test_committed_fixture_is_regenerated_byte_for_byte(tmp_path: Path) -> None:
    truth = synthesize(79, 2, seed=2023, out_dir=tmp_path)
    assert truth_only(79, 2, seed=2023) == truth["patients"]  # same ids without FHIR
    fresh, committed = _files(tmp_path), _files(FIXTURE)
    assert sorted(fresh) == sorted(committed)
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"fixtures/cohort is stale ({changed}): run `make fixtures`"


def test_without_noise_every_patient_is_a_clean_study_patient(tmp_path: Path) -> None:
    truth = synthesize(25, 2, seed=5, out_dir=tmp_path, noise=False)
    patients = truth["patients"]
    assert len(patients) == 25 and all(p["in_cohort"] for p in patients)
    assert {p["progression_basis"] for p in patients} == {"imwg_labs"}
    text = b"".join(p.read_bytes() for p in tmp_path.rglob("*.ndjson"))
    for marker in (b"entered-in-error", b"not-done", b"dataAbsentReason", b'"versionId":"2"'):
        assert marker not in text
