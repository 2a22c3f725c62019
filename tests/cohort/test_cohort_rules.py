"""mappings/rules.toml loads, and mistakes in it are refused rather than ignored."""

from __future__ import annotations

import tomllib

import pytest

from connector.cohort.rules import DEFAULT_RULES_PATH, RulesError, load_rules, parse_rules


def _data() -> dict:
    return tomllib.loads(DEFAULT_RULES_PATH.read_text())


def test_default_rules_load_with_the_documented_windows():
    rules = load_rules()
    assert rules.lines.regimen_window_days == 30
    assert rules.lines.gap_days == 90
    assert rules.imwg.pd_relative == 0.25
    assert [s.name for s in rules.classify.subclasses][:2] == ["car_t", "bcma_bispecific"]
    assert rules.classify.subclasses[-1].name == "other"


def test_every_table_has_a_source_note():
    data = _data()
    for name, table in data.items():
        if isinstance(table, dict):
            assert "source" in table, name
    assert all("source" in t for t in data["subclass"])


def test_missing_value_is_an_error():
    data = _data()
    del data["lines"]["gap_days"]
    with pytest.raises(RulesError, match="gap_days"):
        parse_rules(data)


def test_misspelt_key_is_an_error():
    data = _data()
    data["lines"]["gap_day"] = 60
    with pytest.raises(RulesError, match="gap_day"):
        parse_rules(data)


def test_table_without_source_is_an_error():
    data = _data()
    del data["imwg"]["source"]
    with pytest.raises(RulesError, match="source"):
        parse_rules(data)


def test_wrong_type_is_an_error():
    data = _data()
    data["lines"]["gap_days"] = "ninety"
    with pytest.raises(RulesError, match="whole number"):
        parse_rules(data)


def test_rules_file_from_environment(tmp_path, monkeypatch):
    text = DEFAULT_RULES_PATH.read_text().replace("gap_days = 90", "gap_days = 120")
    path = tmp_path / "rules.toml"
    path.write_text(text)
    monkeypatch.setenv("COHORT_RULES_FILE", str(path))
    assert load_rules().lines.gap_days == 120
