"""Normalized and derived rows (pseudonymized) → OMOP CDM 5.4 rows.

- person ← patient (the CDM requires a year of birth: patients without one are left out,
  counted); gender concept by sex.
- observation_period ← every dated row of the person, first to last (last contact, death).
- drug_exposure ← medication_exposure (end = end date, else the start); drug by ingredient.
- procedure_occurrence ← procedure_event; procedure by category.
- measurement ← lab_result (value in the canonical unit; coded results in
  value_source_value); concepts by analyte, unit and coded value.
- death ← patient (else cohort_patient) death date.
- episode ← per cohort patient, the disease episode from progression after CAR-T and
  one treatment-regimen episode per line (episode_number = line, parent = the disease
  episode).
- episode_event ← a line's drug exposures (its ingredients, started within the line)
  and its procedures within the line, with the CDM field concepts.

``*_source_value`` is always filled: the source code when the row has one, else the
study value (ingredient, category, analyte); ``person_source_value`` is the patient
key (never a source id). Ids are assigned in a fixed order, so the same database gives
the same ids.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from connector.export.omop_concepts import ConceptMap
from connector.export.omop_ddl import TABLES, arrow_schema

EHR = ("type", "ehr")


@dataclass
class OmopBuild:
    """The CDM rows by table, the rows with concept 0, and what was left out and why."""

    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in TABLES})
    zero: Counter = field(default_factory=Counter)  # (table, column, source value) -> rows
    zero_rows: Counter = field(default_factory=Counter)  # table -> rows with any concept 0
    left_out: Counter = field(default_factory=Counter)

    def add(self, table: str, row: dict[str, Any], concepts: dict[str, str]) -> None:
        """Append a row; ``concepts`` names each concept column's source value."""
        zero = [column for column in concepts if row.get(column) == 0]
        for column in zero:
            self.zero[(table, column, concepts[column])] += 1
        if zero:
            self.zero_rows[table] += 1
        self.rows[table].append(row)

    def tables(self) -> dict[str, pa.Table]:
        return {name: _to_arrow(name, rows) for name, rows in self.rows.items()}


def _to_arrow(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    columns = TABLES[name]
    arrays = []
    for col in columns:
        values = [r.get(col.name) for r in rows]
        if col.max_length is not None:
            values = [v if v is None else str(v)[: col.max_length] for v in values]
        arrays.append(pa.array(values, type=col.arrow_type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(name))


def _person_key(row: dict[str, Any], column: str = "patient_source_id") -> tuple[str, str]:
    return str(row["site"]), str(row[column])


def build_omop(data: dict[str, Iterable[dict[str, Any]]], concepts: ConceptMap) -> OmopBuild:
    """CDM rows from the pseudonymized tables in ``data`` (rows as merge writes them)."""
    out = OmopBuild()
    tables = {name: list(rows) for name, rows in data.items()}
    person_ids = _persons(tables["patient"], concepts, out)
    span: dict[int, list[dt.date]] = defaultdict(list)
    exposures = _drugs(tables["medication_exposure"], person_ids, concepts, out, span)
    procedures = _procedures(tables["procedure_event"], person_ids, concepts, out, span)
    _measurements(tables["lab_result"], person_ids, concepts, out, span)
    _deaths(tables["patient"], tables["cohort_patient"], person_ids, concepts, out, span)
    _episodes(tables["cohort_patient"], tables["therapy_line"], person_ids, concepts, out,
              exposures, procedures, span)
    for pid, dates in sorted(span.items()):
        out.rows["observation_period"].append({
            "observation_period_id": pid, "person_id": pid,
            "observation_period_start_date": min(dates),
            "observation_period_end_date": max(dates),
            "period_type_concept_id": concepts.id(*EHR)})
    return out


def _persons(patients: list[dict[str, Any]], concepts: ConceptMap,
             out: OmopBuild) -> dict[tuple[str, str], int]:
    ids: dict[tuple[str, str], int] = {}
    for row in sorted(patients, key=lambda r: (r["site"], r["source_id"])):
        if row.get("birth_year") is None:
            out.left_out["person without year of birth (required by the CDM)"] += 1
            continue
        pid = len(ids) + 1
        ids[_person_key(row, "source_id")] = pid
        sex = (row.get("sex") or "unknown").lower()
        out.add("person", {
            "person_id": pid, "gender_concept_id": concepts.id("gender", sex),
            "year_of_birth": int(row["birth_year"]), "race_concept_id": 0,
            "ethnicity_concept_id": 0, "person_source_value": row["source_id"],
            "gender_source_value": row.get("sex") or ""},
            {"gender_concept_id": sex, "race_concept_id": "(not recorded)",
             "ethnicity_concept_id": "(not recorded)"})
    return ids


def _drugs(rows: list[dict[str, Any]], ids: dict[tuple[str, str], int], concepts: ConceptMap,
           out: OmopBuild, span: dict[int, list[dt.date]]) -> dict[int, list[tuple]]:
    """drug_exposure rows; returns person → [(exposure id, ingredient, start)]."""
    by_person: dict[int, list[tuple]] = defaultdict(list)
    for row in rows:
        pid = ids.get(_person_key(row))
        if pid is None:
            out.left_out["drug_exposure of a person left out"] += 1
            continue
        eid = len(out.rows["drug_exposure"]) + 1
        end = row.get("end_date") or row["start_date"]
        out.add("drug_exposure", {
            "drug_exposure_id": eid, "person_id": pid,
            "drug_concept_id": concepts.id("drug", row["ingredient"]),
            "drug_exposure_start_date": row["start_date"], "drug_exposure_end_date": end,
            "verbatim_end_date": row.get("end_date"),
            "drug_type_concept_id": concepts.id(*EHR),
            "drug_source_value": row.get("code") or row["ingredient"]},
            {"drug_concept_id": row["ingredient"]})
        by_person[pid].append((eid, row["ingredient"], row["start_date"]))
        span[pid] += [row["start_date"], end]
    return by_person


def _procedures(rows: list[dict[str, Any]], ids: dict[tuple[str, str], int],
                concepts: ConceptMap, out: OmopBuild,
                span: dict[int, list[dt.date]]) -> dict[int, list[tuple]]:
    by_person: dict[int, list[tuple]] = defaultdict(list)
    for row in rows:
        pid = ids.get(_person_key(row))
        if pid is None:
            out.left_out["procedure of a person left out"] += 1
            continue
        oid = len(out.rows["procedure_occurrence"]) + 1
        out.add("procedure_occurrence", {
            "procedure_occurrence_id": oid, "person_id": pid,
            "procedure_concept_id": concepts.id("procedure", row["category"]),
            "procedure_date": row["performed_date"], "procedure_end_date": row.get("end_date"),
            "procedure_type_concept_id": concepts.id(*EHR),
            "procedure_source_value": row.get("code") or row["category"]},
            {"procedure_concept_id": row["category"]})
        by_person[pid].append((oid, row["category"], row["performed_date"]))
        span[pid] += [d for d in (row["performed_date"], row.get("end_date")) if d]
    return by_person


def _measurements(rows: list[dict[str, Any]], ids: dict[tuple[str, str], int],
                  concepts: ConceptMap, out: OmopBuild,
                  span: dict[int, list[dt.date]]) -> None:
    for row in rows:
        pid = ids.get(_person_key(row))
        if pid is None:
            out.left_out["measurement of a person left out"] += 1
            continue
        unit, coded = row.get("unit"), row.get("value_code")
        record = {
            "measurement_id": len(out.rows["measurement"]) + 1, "person_id": pid,
            "measurement_concept_id": concepts.id("measurement", row["analyte"]),
            "measurement_date": row["effective_date"],
            "measurement_type_concept_id": concepts.id(*EHR),
            "value_as_number": row.get("value"),
            "unit_concept_id": concepts.id("unit", unit) if unit else None,
            "value_as_concept_id": concepts.id("value", coded) if coded else None,
            "measurement_source_value": concepts.code("measurement", row["analyte"])
            or row["analyte"],
            "unit_source_value": unit, "value_source_value": coded}
        named = {"measurement_concept_id": row["analyte"]}
        if unit:
            named["unit_concept_id"] = unit
        if coded:
            named["value_as_concept_id"] = coded
        out.add("measurement", record, named)
        span[pid].append(row["effective_date"])


def _deaths(patients: list[dict[str, Any]], cohort: list[dict[str, Any]],
            ids: dict[tuple[str, str], int], concepts: ConceptMap, out: OmopBuild,
            span: dict[int, list[dt.date]]) -> None:
    dates = {_person_key(r, "source_id"): r["death_date"] for r in cohort if r.get("death_date")}
    dates.update({_person_key(r, "source_id"): r["death_date"] for r in patients
                  if r.get("death_date")})
    for key, date in sorted(dates.items()):
        pid = ids.get(key)
        if pid is None:
            continue
        out.add("death", {"person_id": pid, "death_date": date,
                          "death_type_concept_id": concepts.id(*EHR)}, {})
        span[pid].append(date)


def _episodes(cohort: list[dict[str, Any]], lines: list[dict[str, Any]],
              ids: dict[tuple[str, str], int], concepts: ConceptMap, out: OmopBuild,
              exposures: dict[int, list[tuple]], procedures: dict[int, list[tuple]],
              span: dict[int, list[dt.date]]) -> None:
    lines_of: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        lines_of[_person_key(line, "source_id")].append(line)
    field_drug = concepts.id("episode_event_field", "drug_exposure")
    field_proc = concepts.id("episode_event_field", "procedure_occurrence")
    for row in sorted(cohort, key=lambda r: (r["site"], r["source_id"])):
        key = _person_key(row, "source_id")
        pid = ids.get(key)
        if not row.get("in_cohort") or pid is None or row.get("progression_date") is None:
            continue
        disease_id = len(out.rows["episode"]) + 1
        out.add("episode", {
            "episode_id": disease_id, "person_id": pid,
            "episode_concept_id": concepts.id("episode", "disease_progression"),
            "episode_start_date": row["progression_date"],
            "episode_object_concept_id": concepts.id("episode_object", "multiple_myeloma"),
            "episode_type_concept_id": concepts.id(*EHR),
            "episode_source_value": f"progression after BCMA CAR-T: "
                                    f"{row.get('progression_basis') or ''}"},
            {"episode_concept_id": "disease_progression",
             "episode_object_concept_id": "multiple_myeloma"})
        span[pid] += [d for d in (row.get("index_date"), row["progression_date"],
                                  row.get("last_contact_date")) if d]
        for line in sorted(lines_of[key], key=lambda r: r["line"]):
            regimen_id = len(out.rows["episode"]) + 1
            out.add("episode", {
                "episode_id": regimen_id, "person_id": pid,
                "episode_concept_id": concepts.id("episode", "treatment_regimen"),
                "episode_start_date": line["start_date"], "episode_end_date": line.get("end_date"),
                "episode_parent_id": disease_id, "episode_number": int(line["line"]),
                "episode_object_concept_id": 0, "episode_type_concept_id": concepts.id(*EHR),
                "episode_source_value": line["drugs"]},
                {"episode_concept_id": "treatment_regimen",
                 "episode_object_concept_id": f"regimen: {line['drugs']}"})
            last = line.get("end_date") or line["start_date"]
            drugs = set(line["drugs"].split(";"))
            for eid, ingredient, start in exposures.get(pid, []):
                if ingredient in drugs and line["start_date"] <= start <= last:
                    _event(out, regimen_id, eid, field_drug, "drug_exposure")
            for oid, _category, date in procedures.get(pid, []):
                if line["start_date"] <= date <= last:
                    _event(out, regimen_id, oid, field_proc, "procedure_occurrence")


def _event(out: OmopBuild, episode_id: int, event_id: int, field_concept: int,
           table: str) -> None:
    out.add("episode_event", {"episode_id": episode_id, "event_id": event_id,
                              "episode_event_field_concept_id": field_concept},
            {"episode_event_field_concept_id": f"{table} field"})
