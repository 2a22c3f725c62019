"""Federated mode end to end on the fixture cohort: two sites share aggregates, the pool
equals the patient-level analysis of both exactly when nothing is suppressed; with the
default threshold the files hold no small cell, key or date, and the pool says what is
approximate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from connector.analysis import run_analysis
from connector.cli import app
from connector.federated import PoolRefused, load_share, pool, share_from_db, write_pooled
from connector.federated.share import NESTED

SITES = ("site_a", "site_b")


@pytest.fixture(scope="module")
def engine(built_engine):
    return built_engine


@pytest.fixture(scope="module")
def patient_level(engine) -> dict:
    return run_analysis(engine).results


def _shares(engine, folder: Path, min_cell: int) -> list[Path]:
    paths = []
    for site in SITES:
        path = folder / f"{site}.agg.json"
        share_from_db(engine, path, sites=[site], min_cell=min_cell)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def exact(engine, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("exact")
    return pool([load_share(p) for p in _shares(engine, folder, 1)]).results


def test_pooled_contract_figures_equal_the_patient_level_ones(exact, patient_level):
    for key in ("first_line", "os_median_months", "os_median_months_by_ever_tce"):
        assert exact[key] == patient_level[key], key
    assert exact["n_patients"] == {"value": patient_level["n_patients"], "complete": True}
    assert exact["n_lines"]["value"] == patient_level["n_lines"]


def test_pooled_tests_rates_and_cox_equal_the_patient_level_ones(exact, patient_level):
    detail = patient_level["first_line_detail"]
    first = exact["survival"]["first_line_pfs"]
    assert first["median_months"] == detail["pfs_median_months"]
    assert first["logrank"] == detail["pfs_logrank_tce_vs_non_tce"]
    assert first["cox"] == detail["pfs_cox_tce_vs_non_tce"]
    rates = exact["responses"]["first_line"]
    for name in ("orr", "vgpr_or_better", "cr_or_better", "orr_all_treated"):
        assert {k: rates[name][k] for k in ("overall", "tce", "non_tce")} == detail[name]
        assert rates[name]["completeness"] == {"exact": True, "withheld": []}
    fisher = detail["orr_fisher_tce_vs_non_tce"]
    assert exact["orr_fisher_tce_vs_non_tce"] == fisher
    lines = patient_level["all_lines"]
    assert exact["survival"]["all_lines_pfs"]["median_months"] == \
        lines["pfs_median_months_by_class"]
    assert exact["survival"]["all_lines_pfs"]["logrank"] == lines["pfs_logrank_tce_vs_non_tce"]
    by_subclass = exact["responses"]["all_lines_by_subclass"]["orr"]
    assert {k: v for k, v in by_subclass.items() if k in lines["orr_by_subclass"]} == \
        lines["orr_by_subclass"]
    kinds = patient_level["tce"]["bispecific_vs_car_t"]
    tce_kind = exact["survival"]["tce_kind_pfs"]
    assert {k: tce_kind["median_months"][k] for k in ("bispecific", "car_t")} == \
        kinds["pfs_median_months"]
    assert tce_kind["logrank"] == kinds["pfs_logrank"]
    os_detail = patient_level["os"]
    assert exact["survival"]["os"]["logrank"] == os_detail["ever_tce_logrank"]
    # Cox with lines clustered by patient: same hazard ratio, model-based interval
    cox, robust = exact["survival"]["all_lines_pfs"]["cox"], lines["pfs_cox_tce_vs_non_tce"]
    assert cox["estimate"] == robust["estimate"] and robust["robust_se"] and not cox["robust_se"]
    assert all(s["completeness"]["exact"] for s in exact["survival"].values())


def test_default_share_holds_no_small_cell_key_or_date(engine, tmp_path):
    paths = _shares(engine, tmp_path, 5)
    for path in paths:
        text = path.read_text()
        assert not re.search(r"[0-9a-f]{32}", text)
        assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
        content = json.loads(text)
        assert content["min_cell"] == 5
        for block in content["survival"].values():
            for groups in block["sites"].values():
                for table in groups.values():
                    for _days, at_risk, events, censored in table["rows"] or []:
                        assert at_risk >= 5 and events + censored >= 5
                        assert events == 0 or events >= 5
        for block in content["responses"].values():
            for groups in block["sites"].values():
                for counts in groups.values():
                    assert all(v is None or v == 0 or v >= 5 for v in counts.values())
                    for part, whole, _ in NESTED:
                        if counts[part] is not None and counts[whole] is not None:
                            assert not 0 < counts[whole] - counts[part] < 5
        for site in content["counts"].values():
            assert all(v is None or v >= 5 for v in site["excluded"].values())


def test_suppressed_pool_says_what_is_approximate(engine, tmp_path, patient_level):
    pooled = pool([load_share(p) for p in _shares(engine, tmp_path, 5)])
    results = pooled.results
    first = results["survival"]["first_line_pfs"]
    assert not first["completeness"]["exact"] and first["completeness"]["coarsened"]
    assert any("Cox" in text for text in results["approximations"])
    os_median = results["os_median_months"]["estimate"]
    assert os_median == pytest.approx(patient_level["os_median_months"]["estimate"], rel=0.25)
    files = write_pooled(pooled, tmp_path / "report")
    names = {f.name for f in files}
    assert {"pooled_results.json", "pooled_report.md", "pooled_km.csv",
            "km_first_line_pfs.png", "km_os.png", "km_os.svg"} <= names
    assert imread(tmp_path / "report" / "km_os.png").shape[0] > 100
    summary = (tmp_path / "report" / "pooled_report.md").read_text()
    assert "| no |" in summary
    assert "## Figures" in summary and "](km_os.png)" in summary  # titles live in captions


def test_pool_refuses_a_site_twice_and_a_tampered_file(engine, tmp_path):
    paths = _shares(engine, tmp_path, 1)
    with pytest.raises(PoolRefused, match="more than one"):
        pool([load_share(paths[0]), load_share(paths[0])])
    content = json.loads(paths[1].read_text())
    table = content["survival"]["os"]["sites"]["site_b"]["tce"]["rows"]
    table[1][1] += 1
    bad = tmp_path / "bad.agg.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(PoolRefused, match="at risk"):
        load_share(bad)
    other = tmp_path / "other.json"
    other.write_text('{"format": "something else"}')
    with pytest.raises(PoolRefused, match="not a version"):
        load_share(other)


def test_cli_share_and_pool(built_cohort, tmp_path, patient_level):
    runner = CliRunner()
    for site in SITES:
        result = runner.invoke(app, ["share", "--db", built_cohort, "--site", site,
                                     "--min-cell", "0", "--out", str(tmp_path / f"{site}.json")])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["pool", str(tmp_path / "site_a.json"),
                                 str(tmp_path / "site_b.json"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    pooled = json.loads((tmp_path / "r" / "pooled_results.json").read_text())
    assert pooled["first_line"] == patient_level["first_line"]
    refused = runner.invoke(app, ["pool", str(tmp_path / "site_a.json"),
                                  str(tmp_path / "site_a.json"), "--out", str(tmp_path / "s")])
    assert refused.exit_code == 2 and "pool refused" in refused.output
    missing = runner.invoke(app, ["share", "--db", built_cohort, "--site", "nowhere",
                                  "--out", str(tmp_path / "n.json")])
    assert missing.exit_code == 2
