"""The OMOP CDM 5.4 tables ``cohort export --format omop`` writes, as PostgreSQL DDL.

Written here by hand from the CDM 5.4 documentation (the same conventions as OHDSI's
PostgreSQL DDL: ``float`` → ``numeric``, ``datetime`` → ``timestamp``,
``varchar(MAX)`` → ``text``), and checked against the published field-level
specification by ``tests/export/test_export_omop.py`` (names, order, types, NOT NULL
for required fields). Every column of each table is created, so OHDSI tools (Achilles,
the Data Quality Dashboard) find the tables they expect; columns the connector has
no data for stay NULL.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

_DDL: dict[str, str] = {
    "person": """person_id integer!, gender_concept_id integer!, year_of_birth integer!,
        month_of_birth integer, day_of_birth integer, birth_datetime timestamp,
        race_concept_id integer!, ethnicity_concept_id integer!, location_id integer,
        provider_id integer, care_site_id integer, person_source_value varchar(50),
        gender_source_value varchar(50), gender_source_concept_id integer,
        race_source_value varchar(50), race_source_concept_id integer,
        ethnicity_source_value varchar(50), ethnicity_source_concept_id integer""",
    "observation_period": """observation_period_id integer!, person_id integer!,
        observation_period_start_date date!, observation_period_end_date date!,
        period_type_concept_id integer!""",
    "drug_exposure": """drug_exposure_id integer!, person_id integer!, drug_concept_id integer!,
        drug_exposure_start_date date!, drug_exposure_start_datetime timestamp,
        drug_exposure_end_date date!, drug_exposure_end_datetime timestamp,
        verbatim_end_date date, drug_type_concept_id integer!, stop_reason varchar(20),
        refills integer, quantity numeric, days_supply integer, sig text,
        route_concept_id integer, lot_number varchar(50), provider_id integer,
        visit_occurrence_id integer, visit_detail_id integer, drug_source_value varchar(50),
        drug_source_concept_id integer, route_source_value varchar(50),
        dose_unit_source_value varchar(50)""",
    "procedure_occurrence": """procedure_occurrence_id integer!, person_id integer!,
        procedure_concept_id integer!, procedure_date date!, procedure_datetime timestamp,
        procedure_end_date date, procedure_end_datetime timestamp,
        procedure_type_concept_id integer!, modifier_concept_id integer, quantity integer,
        provider_id integer, visit_occurrence_id integer, visit_detail_id integer,
        procedure_source_value varchar(50), procedure_source_concept_id integer,
        modifier_source_value varchar(50)""",
    "measurement": """measurement_id integer!, person_id integer!, measurement_concept_id integer!,
        measurement_date date!, measurement_datetime timestamp, measurement_time varchar(10),
        measurement_type_concept_id integer!, operator_concept_id integer,
        value_as_number numeric, value_as_concept_id integer, unit_concept_id integer,
        range_low numeric, range_high numeric, provider_id integer,
        visit_occurrence_id integer, visit_detail_id integer,
        measurement_source_value varchar(50), measurement_source_concept_id integer,
        unit_source_value varchar(50), unit_source_concept_id integer,
        value_source_value varchar(50), measurement_event_id integer,
        meas_event_field_concept_id integer""",
    "death": """person_id integer!, death_date date!, death_datetime timestamp,
        death_type_concept_id integer, cause_concept_id integer, cause_source_value varchar(50),
        cause_source_concept_id integer""",
    "episode": """episode_id integer!, person_id integer!, episode_concept_id integer!,
        episode_start_date date!, episode_start_datetime timestamp, episode_end_date date,
        episode_end_datetime timestamp, episode_parent_id integer, episode_number integer,
        episode_object_concept_id integer!, episode_type_concept_id integer!,
        episode_source_value varchar(50), episode_source_concept_id integer""",
    "episode_event": """episode_id integer!, event_id integer!,
        episode_event_field_concept_id integer!""",
}
#: Primary keys (death and episode_event have none in the CDM).
PRIMARY_KEYS = {"person": "person_id", "observation_period": "observation_period_id",
                "drug_exposure": "drug_exposure_id",
                "procedure_occurrence": "procedure_occurrence_id",
                "measurement": "measurement_id", "episode": "episode_id"}


@dataclass(frozen=True)
class OmopColumn:
    name: str
    sql_type: str  # PostgreSQL
    required: bool

    @property
    def arrow_type(self) -> pa.DataType:
        base = self.sql_type.split("(")[0]
        return {"integer": pa.int64(), "numeric": pa.float64(), "date": pa.date32(),
                "timestamp": pa.timestamp("us")}.get(base, pa.string())

    @property
    def max_length(self) -> int | None:
        if self.sql_type.startswith("varchar("):
            return int(self.sql_type[len("varchar("):-1])
        return None


def _parse(spec: str) -> list[OmopColumn]:
    out = []
    for item in spec.split(","):
        name, sql_type = item.split()
        out.append(OmopColumn(name, sql_type.rstrip("!"), sql_type.endswith("!")))
    return out


TABLES: dict[str, list[OmopColumn]] = {name: _parse(spec) for name, spec in _DDL.items()}


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type, nullable=not c.required)
                      for c in TABLES[table]])


def create_table_sql(table: str, quote: str = '"') -> str:
    """``CREATE TABLE`` for one table, NOT NULL on the CDM's required fields."""
    cols = [f"{quote}{c.name}{quote} {c.sql_type}{' NOT NULL' if c.required else ''}"
            for c in TABLES[table]]
    key = PRIMARY_KEYS.get(table)
    if key:
        cols.append(f"PRIMARY KEY ({quote}{key}{quote})")
    return f"CREATE TABLE {quote}{table}{quote} (\n  " + ",\n  ".join(cols) + "\n)"
