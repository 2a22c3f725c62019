"""A new drug class is a change to mappings/ only (issue 14 item 1).

A synthetic cohort whose teclistamab is recorded as "novotamab", a product the shipped
code sets do not know, is run three ways: as generated (teclistamab), renamed with the
shipped mappings/ (novotamab is unmapped), and renamed with a copy of mappings/ that adds
novotamab in a new class ``test_bispecific`` (rows in the CSV files, a [[subclass]] and a
TCE class in rules.toml; ``COHORT_MAPPINGS_DIR`` / ``COHORT_RULES_FILE``). Only the last
sees the class: as its own subclass in results.json and the report, as T-cell engaging
therapy, and among the bispecific lines the analysis compares with CAR-T.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from connector.cli import app
from connector.codes.codesets import DEFAULT_DIR
from connector.codes.screen import car_t_screen_terms
from connector.synth import synthesize

NEW = {"coding": [{"system": "urn:oid:2.16.840.1.113883.3.9999.1", "code": "NOVO-1",
                   "display": "novotamab"}], "text": "novotamab 10 mg"}
TECLISTAMAB = ("teclistamab", "tecvayli", "2619432", "j9380")


def _rename_teclistamab(source: Path) -> int:
    """Record every teclistamab dose as novotamab; the number of doses renamed."""
    renamed = 0
    for path in source.rglob("Medication*.ndjson"):
        lines = []
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line) if line.strip() else None
            concept = (resource or {}).get("medicationCodeableConcept")
            if concept is not None and any(t in orjson.dumps(concept).decode().lower()
                                           for t in TECLISTAMAB):
                resource["medicationCodeableConcept"] = NEW
                line = orjson.dumps(resource)
                renamed += 1
            lines.append(line)
        path.write_bytes(b"\n".join(lines) + b"\n")
    return renamed


def _append(path: Path, row: list[str]) -> None:
    with path.open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(row)


def _mappings_with_new_class(folder: Path) -> Path:
    """A copy of mappings/ with novotamab in a new bispecific class: data only."""
    shutil.copytree(DEFAULT_DIR, folder)
    _append(folder / "drug_classes.csv", ["novotamab", "test_bispecific", "unconfirmed",
                                          "test only"])
    _append(folder / "drug_names.csv", ["novotamab", "novotamab", "generic", "unconfirmed",
                                        "test only"])
    rules = (folder / "rules.toml").read_text(encoding="utf-8")
    tce = 'tce_classes = ["bcma_car_t", '
    assert tce in rules
    rules = rules.replace(tce, 'tce_classes = ["test_bispecific", "bcma_car_t", ')
    first_bispecific = '[[subclass]]\nname = "bcma_bispecific"\n'
    assert first_bispecific in rules
    rules = rules.replace(first_bispecific, (
        '[[subclass]]\nname = "test_bispecific"\ntce_kind = "bispecific"\n'
        'source = "test only"\nclasses = ["test_bispecific"]\n\n' + first_bispecific))
    (folder / "rules.toml").write_text(rules, encoding="utf-8")
    return folder


def _run(source: Path, work: Path, name: str) -> tuple[dict, str, list[dict]]:
    out = work / f"report_{name}"
    result = CliRunner().invoke(app, ["run", "--source", str(source), "--db",
                                      f"sqlite:///{work / name}.db", "--out", str(out),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    with (out / "therapy_lines.csv").open(newline="", encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    return (json.loads((out / "results.json").read_text()),
            (out / "report.md").read_text(encoding="utf-8"), lines)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("newclass")
    original, renamed = work / "original", work / "renamed"
    synthesize(40, 1, 1414, original)
    shutil.copytree(original, renamed)
    assert _rename_teclistamab(renamed) > 0
    mappings = _mappings_with_new_class(work / "mappings")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("COHORT_MAPPINGS_DIR", raising=False)
        mp.delenv("COHORT_RULES_FILE", raising=False)
        runs = {"original": _run(original, work, "original"),
                "shipped": _run(renamed, work, "shipped")}
        mp.setenv("COHORT_MAPPINGS_DIR", str(mappings))
        mp.setenv("COHORT_RULES_FILE", str(mappings / "rules.toml"))
        runs["extended"] = _run(renamed, work, "extended")
    return runs


def test_the_new_class_is_seen_only_with_the_extended_mappings(three_runs):
    results, report, lines = three_runs["extended"]
    new_lines = [x for x in lines if x["subclass"] == "test_bispecific"]
    assert new_lines and all("novotamab" in x["drugs"].split(";") for x in new_lines)
    assert all(x["therapy_class"] == "tce" for x in new_lines)
    assert results["all_lines"]["lines_by_subclass"]["test_bispecific"] == len(new_lines)
    assert "test bispecific" in report.lower()
    for name in ("original", "shipped"):
        other_results, other_report, other_lines = three_runs[name]
        assert "test_bispecific" not in other_results["all_lines"]["lines_by_subclass"]
        assert not any("novotamab" in x["drugs"] for x in other_lines)
        assert "test bispecific" not in other_report.lower()


def test_the_new_class_counts_as_the_bispecific_it_replaced(three_runs):
    """novotamab stands where teclistamab stood: the same TCE and bispecific lines."""
    original = three_runs["original"][0]
    extended = three_runs["extended"][0]
    shipped = three_runs["shipped"][0]
    assert extended["tce"]["bispecific_vs_car_t"]["n_lines"] == \
        original["tce"]["bispecific_vs_car_t"]["n_lines"]
    assert extended["tce"]["ever_tce"] == original["tce"]["ever_tce"]
    by_original = original["all_lines"]["lines_by_subclass"]
    by_extended = extended["all_lines"]["lines_by_subclass"]
    assert by_extended["test_bispecific"] + by_extended.get("bcma_bispecific", 0) == \
        by_original["bcma_bispecific"]
    # without the new rows novotamab is an unknown drug: fewer bispecific lines
    assert shipped["tce"]["bispecific_vs_car_t"]["n_lines"]["bispecific"] < \
        original["tce"]["bispecific_vs_car_t"]["n_lines"]["bispecific"]


def test_a_new_car_t_class_is_screened_from_the_mappings_alone(tmp_path):
    """The CAR-T screen follows rules.toml's CAR-T classes and the code sets' names."""
    mappings = tmp_path / "mappings"
    shutil.copytree(DEFAULT_DIR, mappings)
    _append(mappings / "drug_classes.csv", ["novocabtagene", "cd70_car_t", "unconfirmed",
                                            "test only"])
    _append(mappings / "drug_names.csv", ["novocabtagene", "Novo-cel", "brand",
                                          "unconfirmed", "test only"])
    _append(mappings / "drug_codes.csv", ["novocabtagene", "urn:oid:1.2.3.4", "NC-70", "local",
                                          "novocabtagene", "unconfirmed", "test only"])
    assert "novo-cel" not in car_t_screen_terms(mappings).texts  # not a CAR-T class yet
    rules = (mappings / "rules.toml").read_text(encoding="utf-8")
    rules = rules.replace('other_classes = ["other_car_t"]',
                          'other_classes = ["other_car_t", "cd70_car_t"]')
    (mappings / "rules.toml").write_text(rules, encoding="utf-8")
    from connector.codes.rulesfile import study_terms

    terms = car_t_screen_terms(mappings, terms=study_terms(mappings / "rules.toml"))
    assert "novo-cel" in terms.texts
    assert {"NC-70", "nc-70"} <= set(terms.medication_codes)
    assert "abecma" in terms.texts  # the shipped products stay
