"""OMOP CDM 5.4 export: the DDL against the published field-level specification (names,
order, types, required fields, primary keys), in PostgreSQL as created; the CSV export of
the fixture cohort: required fields filled, concepts from mappings/omop_concepts.csv,
every concept-0 row reported, episodes per line linked to their drug exposures; the
PostgreSQL load equal to the CSV files; nothing identifying leaves."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "multicenter"))
from multicenter_sites import SECRET, build_site, identifiers  # noqa: E402

from connector.cli import app  # noqa: E402
from connector.db import get_engine, init_db  # noqa: E402
from connector.export import export_omop  # noqa: E402
from connector.export.omop_concepts import ConceptFileError, load_concepts  # noqa: E402
from connector.export.omop_ddl import PRIMARY_KEYS, TABLES  # noqa: E402

SPEC = Path(__file__).parent / "data" / "omop_cdm54_fields.csv"
#: CDM datatypes as PostgreSQL spells them (OHDSI's PostgreSQL DDL conventions)
PG_TYPE = {"integer": "integer", "float": "numeric", "date": "date",
           "datetime": "timestamp", "varchar(MAX)": "text"}


def _spec() -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    with SPEC.open(newline="") as handle:
        for row in csv.DictReader(handle):
            out.setdefault(row["cdmTableName"], []).append(row)
    return out


def _pg_type(cdm: str) -> str:
    return PG_TYPE.get(cdm, cdm.lower())


def test_ddl_matches_the_cdm54_specification():
    spec = _spec()
    assert sorted(spec) == sorted(TABLES)
    for table, fields in spec.items():
        ours = TABLES[table]
        assert [c.name for c in ours] == [f["cdmFieldName"] for f in fields], table
        for column, field in zip(ours, fields, strict=True):
            assert column.sql_type == _pg_type(field["cdmDatatype"]), (table, column)
            assert column.required == (field["isRequired"] == "TRUE"), (table, column)
        keys = [f["cdmFieldName"] for f in fields if f["isPrimaryKey"] == "TRUE"]
        assert keys == ([PRIMARY_KEYS[table]] if table in PRIMARY_KEYS else []), table


@pytest.fixture(scope="module")
def engine(built_engine):
    return built_engine


@pytest.fixture(scope="module")
def omop_csv(engine, built_cohort_secret, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("omop")
    export_omop(engine, out=out, secret=built_cohort_secret)
    return out


def _read(folder: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{table}.csv", keep_default_na=False, na_values=[""])


def test_csv_files_have_the_spec_columns_and_required_fields_filled(omop_csv):
    for table, fields in _spec().items():
        frame = _read(omop_csv, table)
        assert list(frame.columns) == [f["cdmFieldName"] for f in fields]
        required = [f["cdmFieldName"] for f in fields if f["isRequired"] == "TRUE"]
        assert not frame[required].isna().any().any(), table
        for field in fields:
            if field["cdmDatatype"].startswith("varchar(") and field["cdmDatatype"] != \
                    "varchar(MAX)":
                limit = int(field["cdmDatatype"][8:-1])
                values = frame[field["cdmFieldName"]].dropna().astype(str)
                assert (values.str.len() <= limit).all(), (table, field["cdmFieldName"])
        key = PRIMARY_KEYS.get(table)
        if key:
            assert frame[key].is_unique


def test_rows_and_concepts_follow_the_cohort(engine, omop_csv):
    concepts = load_concepts()
    with engine.connect() as conn:
        exposures = pd.read_sql(text("SELECT ingredient FROM medication_exposure"), conn)
        cohort = pd.read_sql(text("SELECT in_cohort FROM cohort_patient"), conn)
        lines = pd.read_sql(text("SELECT line, drugs FROM therapy_line"), conn)
    drugs = _read(omop_csv, "drug_exposure")
    assert len(drugs) == len(exposures)
    expected = exposures["ingredient"].map(lambda i: concepts.id("drug", i))
    assert sorted(drugs["drug_concept_id"]) == sorted(expected)
    assert (drugs["drug_concept_id"] == 19026972).sum() == \
        (exposures["ingredient"] == "lenalidomide").sum() > 0
    assert drugs["drug_source_value"].notna().all()
    person = _read(omop_csv, "person")
    assert person["person_source_value"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert set(person["gender_concept_id"]) <= {8507, 8532, 0}
    episodes = _read(omop_csv, "episode")
    disease = episodes[episodes["episode_parent_id"].isna()]
    regimens = episodes[episodes["episode_concept_id"] == 32531]
    assert len(disease) == int(cohort["in_cohort"].sum())
    assert len(regimens) == len(lines)
    assert set(regimens["episode_parent_id"].astype(int)) <= set(disease["episode_id"])
    assert sorted(regimens["episode_number"].astype(int)) == sorted(lines["line"])
    events = _read(omop_csv, "episode_event")
    drug_events = events[events["episode_event_field_concept_id"] == 1147094].merge(
        drugs, left_on="event_id", right_on="drug_exposure_id").merge(
        regimens, on="episode_id", suffixes=("", "_episode"))
    assert len(drug_events) > len(regimens)
    assert (drug_events["person_id"] == drug_events["person_id_episode"]).all()
    assert (drug_events["drug_exposure_start_date"] >= drug_events["episode_start_date"]).all()


def test_every_concept_zero_row_is_reported(omop_csv):
    report = _read(omop_csv, "omop_concept_zero")
    manifest = json.loads((omop_csv / "manifest.json").read_text())
    for table, fields in _spec().items():
        frame = _read(omop_csv, table)
        concept_columns = [f["cdmFieldName"] for f in fields
                           if f["cdmFieldName"].endswith("concept_id") and
                           not f["cdmFieldName"].endswith("source_concept_id")]
        for column in concept_columns:
            zeros = int((frame[column] == 0).sum())
            listed = report[(report["table"] == table) & (report["concept_column"] == column)]
            assert int(listed["rows"].sum()) == zeros, (table, column)
        any_zero = int((frame[concept_columns] == 0).any(axis=1).sum())
        assert manifest["rows_with_concept_id_0"].get(table, 0) == any_zero, table
    drug_zero = report[(report["table"] == "drug_exposure")]
    assert "lenalidomide" not in set(drug_zero["source_value"])
    assert "pomalidomide" in set(drug_zero["source_value"])


def test_postgres_load_equals_the_csv_files(engine, omop_csv, built_cohort_secret, pg_url,
                                            tmp_path):
    target = create_engine(pg_url)
    try:
        for _ in range(2):  # a second export replaces the first
            summary = export_omop(engine, into=target, out=tmp_path, secret=built_cohort_secret)
        with target.connect() as conn:
            for table, fields in _spec().items():
                columns = conn.execute(text(
                    "SELECT column_name, data_type, character_maximum_length, is_nullable "
                    "FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = :t ORDER BY ordinal_position"), {"t": table}).all()
                assert [c[0] for c in columns] == [f["cdmFieldName"] for f in fields]
                for (_, data_type, length, nullable), field in zip(columns, fields, strict=True):
                    cdm = field["cdmDatatype"]
                    if cdm.startswith("varchar(") and cdm != "varchar(MAX)":
                        assert (data_type, length) == ("character varying", int(cdm[8:-1]))
                    else:
                        assert data_type.split(" ")[0] == _pg_type(cdm), (table, field)
                    assert (nullable == "NO") == (field["isRequired"] == "TRUE")
                n = conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar()
                assert n == len(_read(omop_csv, table)) == summary.rows[table]
        assert (tmp_path / "omop_concept_zero.csv").read_bytes() == \
            (omop_csv / "omop_concept_zero.csv").read_bytes()
    finally:
        target.dispose()


def test_no_identifier_leaves_in_omop(tmp_path):
    site = get_engine(f"sqlite:///{tmp_path / 'site.db'}")
    init_db(site)
    build_site(site, "site_a", n=5)
    export_omop(site, out=tmp_path / "omop", secret=SECRET)
    site.dispose()
    text_out = "\n".join(p.read_text() for p in sorted((tmp_path / "omop").iterdir()))
    assert [v for v in identifiers("site_a", 5) if v in text_out] == []
    assert "MRN-" not in text_out


def test_bad_concept_file_is_a_clear_error(tmp_path, monkeypatch, built_cohort):
    (tmp_path / "omop_concepts.csv").write_text(
        "kind,key,vocabulary,code,concept_id,concept_name,status,source\n"
        "drug,lenalidomide,RxNorm,342369,abc,lenalidomide,confirmed,x\n")
    with pytest.raises(ConceptFileError, match="integer"):
        load_concepts(tmp_path)
    monkeypatch.setenv("COHORT_MAPPINGS_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["export", "-f", "omop", "-o", str(tmp_path / "o"),
                                      "--db", built_cohort, "--allow-unkeyed"])
    assert result.exit_code == 2 and "concept_id must be an integer" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_omop_needs_a_target(built_cohort):
    result = CliRunner().invoke(app, ["export", "-f", "omop", "--db", built_cohort])
    assert result.exit_code == 2 and "--into" in result.output
    wrong = CliRunner().invoke(app, ["export", "-f", "csv", "--into", "postgresql://x/y",
                                     "-o", "z", "--db", built_cohort])
    assert wrong.exit_code == 2


def test_large_tables_are_built_chunk_by_chunk():
    """measurement rows go out per chunk read, not collected: memory stays flat."""
    import datetime as dt

    from connector.export.omop_build import OmopBuild

    build = OmopBuild(load_concepts())
    build.persons([{"site": "s", "source_id": "k", "birth_year": 1950, "sex": "female"}])
    chunk = [{"site": "s", "patient_source_id": "k", "analyte": "hemoglobin",
              "effective_date": dt.date(2020, 1, 1) + dt.timedelta(days=i), "value": 12.0,
              "unit": "g/dL", "value_code": None} for i in range(100)]
    stream = build.measurements(iter([chunk, chunk, chunk]))
    first = next(stream)
    assert first.num_rows == 100 and build.rows["measurement"] == []
    assert sum(b.num_rows for b in stream) == 200
    assert first.column("measurement_concept_id").to_pylist()[0] == 3000963
    build.periods()
    period = build.drain("observation_period").to_pylist()[0]
    assert period["observation_period_start_date"] == dt.date(2020, 1, 1)
    assert period["observation_period_end_date"] == dt.date(2020, 1, 1) + dt.timedelta(days=99)
