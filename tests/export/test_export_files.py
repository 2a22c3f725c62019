"""Parquet and CSV export of a real pipeline database: readable with the right types in
pyarrow, pandas and DuckDB (and types R's arrow maps to native R types), the same rows
as the database, analysis-ready outcomes equal to the analysis layer's, a complete data
dictionary, byte-identical reruns, and nothing written when a site may not leave."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from connector.analysis import run_analysis
from connector.analysis.survival import kaplan_meier
from connector.cli import app
from connector.db.models import SQLModel
from connector.export import export_files
from connector.merge import MergeRefused

SOURCE = ["patient", "medication_exposure", "procedure_event", "lab_result",
          "condition_record", "cohort_patient", "therapy_line", "patient_baseline"]
TABLES = [*SOURCE, "analysis_patient", "analysis_line"]
#: Arrow types R's arrow package turns into native R vectors (Date, logical, integer or
#: double, double, character); anything else (dictionaries, unsigned, large or nested
#: types, naive timestamps) would surprise an R user.
R_NATIVE = (pa.date32(), pa.bool_(), pa.int64(), pa.float64(), pa.string())
DUCKDB_TYPE = {"date": "DATE", "boolean": "BOOLEAN", "integer": "BIGINT", "double": "DOUBLE",
               "string": "VARCHAR"}


@pytest.fixture(scope="module")
def engine(built_engine):
    return built_engine


@pytest.fixture(scope="module")
def exported(engine, built_cohort_secret, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("export")
    out = {}
    for fmt in ("parquet", "csv"):
        out[fmt] = base / fmt
        export_files(engine, out[fmt], fmt, secret=built_cohort_secret)
    return out


def _dictionary(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "data_dictionary.csv", keep_default_na=False)


def test_every_table_is_written_with_the_database_row_counts(engine, exported):
    manifest = json.loads((exported["parquet"] / "manifest.json").read_text())
    tables = SQLModel.metadata.tables
    with engine.connect() as conn:
        for name in SOURCE:
            n = conn.execute(select(func.count()).select_from(tables[name])).scalar()
            assert pq.read_table(exported["parquet"] / f"{name}.parquet").num_rows == n
            assert len(pd.read_csv(exported["csv"] / f"{name}.csv")) == n
            assert manifest["rows"][name] == n
        in_cohort = conn.execute(select(func.count()).select_from(tables["cohort_patient"])
                                 .where(tables["cohort_patient"].c.in_cohort)).scalar()
    assert manifest["rows"]["analysis_patient"] == in_cohort
    assert manifest["patient_keys"] == "keyed"


def test_parquet_types_are_native_for_r_and_match_the_dictionary(exported):
    dictionary = _dictionary(exported["parquet"])
    for name in TABLES:
        schema = pq.read_schema(exported["parquet"] / f"{name}.parquet")
        assert all(field.type in R_NATIVE for field in schema), (name, schema)
        declared = dictionary[dictionary["table"] == name]
        assert list(declared["column"]) == schema.names
        for field, kind in zip(schema, declared["type"], strict=True):
            assert DUCKDB_TYPE[kind] == {pa.date32(): "DATE", pa.bool_(): "BOOLEAN",
                                         pa.int64(): "BIGINT", pa.float64(): "DOUBLE",
                                         pa.string(): "VARCHAR"}[field.type], (name, field)
        assert "source_id" not in schema.names and "patient_source_id" not in schema.names


def test_duckdb_reads_parquet_and_csv_with_the_dictionary_types(exported):
    dictionary = _dictionary(exported["parquet"])
    con = duckdb.connect()
    for name in TABLES:
        declared = dictionary[dictionary["table"] == name]
        expected = [DUCKDB_TYPE[k] for k in declared["type"]]
        path = exported["parquet"] / f"{name}.parquet"
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
        assert [row[1] for row in described] == expected, name
        csv_types = {c: DUCKDB_TYPE[k] for c, k in zip(declared["column"], declared["type"],
                                                       strict=True)}
        from_csv = con.execute(f"SELECT * FROM read_csv('{exported['csv'] / (name + '.csv')}', "
                               f"header=true, columns={csv_types!r})").df()
        from_parquet = con.execute(f"SELECT * FROM read_parquet('{path}')").df()
        # CSV readers (DuckDB, pandas, readr) read an empty cell, quoted or not, as missing
        text = [c for c, k in csv_types.items() if k == "VARCHAR"]
        from_parquet[text] = from_parquet[text].replace("", None)
        pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)


def test_pandas_reads_dates_as_dates_and_flags_as_booleans(exported):
    patients = pd.read_parquet(exported["parquet"] / "analysis_patient.parquet")
    assert pd.api.types.is_bool_dtype(patients["os_event"])
    assert pd.api.types.is_float_dtype(patients["os_months"])
    dates = patients["progression_date"].dropna()
    assert len(dates) == len(patients) and all(isinstance(d, dt.date) for d in dates)
    typed = pd.read_parquet(exported["parquet"] / "analysis_line.parquet",
                            dtype_backend="pyarrow")
    assert str(typed["start_date"].dtype) == "date32[day][pyarrow]"
    assert str(typed["pfs_event"].dtype) == "bool[pyarrow]"
    csv = pd.read_csv(exported["csv"] / "analysis_line.csv", parse_dates=["start_date"])
    assert csv["start_date"].dt.date.tolist() == typed["start_date"].tolist()
    assert csv["evaluable"].dtype == bool


def test_analysis_ready_outcomes_are_the_analysis_layers(engine, exported):
    """os/pfs months and events equal what the report is computed from; KM medians too."""
    analysis = run_analysis(engine)
    patients = pd.read_parquet(exported["parquet"] / "analysis_patient.parquet")
    lines = pd.read_parquet(exported["parquet"] / "analysis_line.parquet")
    assert len(patients) == analysis.results["n_patients"]
    assert len(lines) == analysis.results["n_lines"]
    ours = np.sort(patients["os_months"].dropna().to_numpy())
    theirs = np.sort(analysis.patients.loc[analysis.patients["os_valid"], "os_months"])
    np.testing.assert_array_equal(ours, theirs)
    valid = patients.dropna(subset=["os_months"])
    fit = kaplan_meier(valid["os_months"], valid["os_event"].astype(bool), "os")
    assert round(fit.median, 6) == analysis.results["os_median_months"]["estimate"]
    first = lines[lines["is_first"] & lines["evaluable"]]
    orr = analysis.results["first_line"]["orr"]["overall"]
    assert orr["n"] == len(first)
    assert round(first["responder"].mean(), 6) == orr["estimate"]
    tce = lines[lines["is_first"] & (lines["therapy_class"] == "tce")].dropna(
        subset=["pfs_months"])
    pfs = kaplan_meier(tce["pfs_months"], tce["pfs_event"].astype(bool), "tce")
    assert round(pfs.median, 6) == \
        analysis.results["first_line"]["pfs_median_months"]["tce"]["estimate"]


def test_baseline_and_conditions_give_the_reports_table_1(engine, exported):
    """patient_baseline and condition_record leave keyed, without free text, and the
    exported baseline of the cohort patients reproduces results.json's Table 1."""
    table1 = run_analysis(engine).results["table1"]
    patients = pd.read_parquet(exported["parquet"] / "analysis_patient.parquet")
    baseline = pd.read_parquet(exported["parquet"] / "patient_baseline.parquet")
    conditions = pd.read_parquet(exported["parquet"] / "condition_record.parquet")
    assert set(baseline["patient_key"]) == set(patients["patient_key"])
    assert len(baseline) == table1["n_patients"] > 0
    for finding in ("del_17p", "t_4_14", "t_14_16", "gain_1q", "extramedullary"):
        counts = baseline[finding].fillna("not_recorded").value_counts().to_dict()
        assert {k: v for k, v in table1[finding].items() if v} == counts, finding
    assert baseline["prior_lines"].notna().sum() == \
        table1["prior_lines_before_car_t"]["n"]
    assert {"display", "version_id", "source_id", "patient_source_id"}.isdisjoint(
        conditions.columns)
    assert set(conditions["finding"]) <= {"del_17p", "t_4_14", "t_14_16", "gain_1q",
                                          "extramedullary"}
    # a finding matched in the Condition's text has no code; the text itself stays behind
    by_text = conditions["code_system"] == "text"
    assert conditions.loc[~by_text, "code"].notna().all()
    assert conditions.loc[by_text, "code"].isna().all() and by_text.any() and (~by_text).any()
    assert conditions["resource_key"].is_unique
    assert not set(conditions["resource_key"]) & set(conditions["patient_key"])
    everyone = pd.read_parquet(exported["parquet"] / "patient.parquet")
    assert set(conditions["patient_key"]) <= set(everyone["patient_key"])


def test_ttnt_follows_its_definition(exported):
    patients = pd.read_parquet(exported["parquet"] / "analysis_patient.parquet")
    lines = pd.read_parquet(exported["parquet"] / "analysis_line.parquet")
    days = 30.4375
    for key, group in lines.groupby("patient_key"):
        group = group.sort_values("line")
        patient = patients[patients["patient_key"] == key].iloc[0]
        starts = group["start_date"].tolist()
        for i, row in enumerate(group.itertuples()):
            candidates = [d for d in (starts[i + 1] if i + 1 < len(starts) else None,
                                      patient["death_date"]) if d is not None]
            end = min(candidates) if candidates else patient["last_contact_date"]
            assert row.ttnt_event == bool(candidates)
            assert row.ttnt_months == pytest.approx((end - row.start_date).days / days)
        first_end = min(d for d in (starts[0], patient["death_date"]) if d is not None)
        assert patient["ttnt_months"] == pytest.approx(
            (first_end - patient["index_date"]).days / days)
        assert bool(patient["ttnt_event"])


def test_dictionary_describes_every_column_of_every_file(exported):
    dictionary = _dictionary(exported["csv"])
    assert (dictionary["description"].str.len() > 10).all()
    for name in TABLES:
        header = pd.read_csv(exported["csv"] / f"{name}.csv", nrows=0).columns.tolist()
        assert header == dictionary.loc[dictionary["table"] == name, "column"].tolist()
    assert sorted(set(dictionary["table"])) == sorted(TABLES)


def test_rerun_gives_identical_csv_files(engine, exported, built_cohort_secret, tmp_path):
    export_files(engine, tmp_path, "csv", secret=built_cohort_secret)
    for path in exported["csv"].iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_wrong_secret_or_unkeyed_writes_nothing(engine, tmp_path):
    with pytest.raises(MergeRefused, match="not made with this secret"):
        export_files(engine, tmp_path / "a", "parquet", secret=b"another-secret-0123456789")
    with pytest.raises(MergeRefused, match="no key secret"):
        export_files(engine, tmp_path / "b", "csv")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_export_site_and_refusal(built_cohort, built_cohort_secret, tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.delenv("COHORT_KEY_SECRET_FILE", raising=False)
    monkeypatch.delenv("COHORT_KEY_SECRET", raising=False)
    refused = runner.invoke(app, ["export", "--format", "csv", "--out", str(tmp_path / "x"),
                                  "--db", built_cohort])
    assert refused.exit_code == 2 and "nothing written" in refused.output
    monkeypatch.setenv("COHORT_KEY_SECRET", built_cohort_secret.decode())
    result = runner.invoke(app, ["export", "-f", "parquet", "-o", str(tmp_path / "y"),
                                 "--db", built_cohort, "--site", "site_b"])
    assert result.exit_code == 0, result.output
    sites = pq.read_table(tmp_path / "y" / "analysis_line.parquet").column("site").to_pylist()
    assert set(sites) == {"site_b"}
    bad = runner.invoke(app, ["export", "-f", "xlsx", "-o", str(tmp_path / "z"),
                              "--db", built_cohort])
    assert bad.exit_code == 2
