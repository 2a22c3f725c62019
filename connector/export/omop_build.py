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
the same ids. The large tables (drug_exposure, procedure_occurrence, measurement) are
built and written chunk by chunk as they are read, so memory does not grow with them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from connector.export.omop_concepts import ConceptMap
from connector.export.omop_ddl import TABLES, arrow_schema

EHR = ("type", "ehr")
Chunks = Iterable[list[dict[str, Any]]]


def _person_key(row: dict[str, Any], column: str = "patient_source_id") -> tuple[str, str]:
    return str(row["site"]), str(row[column])


def to_arrow(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    """CDM rows as an Arrow table of the table's schema; text cut at its varchar(n)."""
    columns = TABLES[name]
    arrays = []
    for col in columns:
        values = [r.get(col.name) for r in rows]
        if col.max_length is not None:
            values = [v if v is None else str(v)[: col.max_length] for v in values]
        arrays.append(pa.array(values, type=col.arrow_type))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(name))


@dataclass
class OmopBuild:
    """Builds the CDM rows table by table, counting concept-0 rows and what is left out.

    Call ``persons`` first (ids), then the event tables (each a generator of Arrow
    batches, one per chunk read), then ``deaths``, ``episodes`` and ``periods``; rows of
    the small tables wait in ``rows`` until ``drain``.
    """

    concepts: ConceptMap
    rows: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in TABLES})
    zero: Counter = field(default_factory=Counter)  # (table, column, source value) -> rows
    zero_rows: Counter = field(default_factory=Counter)  # table -> rows with any concept 0
    left_out: Counter = field(default_factory=Counter)
    ids: dict[tuple[str, str], int] = field(default_factory=dict)  # (site, key) -> person_id
    _next: Counter = field(default_factory=Counter)
    _span: dict[int, list[dt.date]] = field(default_factory=dict)  # person -> [first, last]
    _drugs: dict[int, list[tuple]] = field(default_factory=lambda: defaultdict(list))
    _procs: dict[int, list[tuple]] = field(default_factory=lambda: defaultdict(list))

    # ------------------------------------------------------------------ plumbing

    def add(self, table: str, row: dict[str, Any], concepts: dict[str, str]) -> None:
        """Keep a row; ``concepts`` names each concept column's source value."""
        zero = [column for column in concepts if row.get(column) == 0]
        for column in zero:
            self.zero[(table, column, concepts[column])] += 1
        if zero:
            self.zero_rows[table] += 1
        self.rows[table].append(row)

    def new_id(self, table: str) -> int:
        self._next[table] += 1
        return self._next[table]

    def drain(self, table: str) -> pa.RecordBatch:
        """The rows kept for ``table`` as one batch, and forget them."""
        rows, self.rows[table] = self.rows[table], []
        return to_arrow(table, rows).combine_chunks().to_batches()[0] if rows else \
            pa.RecordBatch.from_pylist([], schema=arrow_schema(table))

    def seen(self, pid: int, *dates: dt.date | None) -> None:
        """Widen the person's observed span."""
        for date in dates:
            if date is None:
                continue
            span = self._span.setdefault(pid, [date, date])
            span[0], span[1] = min(span[0], date), max(span[1], date)

    def _stream(self, table: str, chunks: Chunks, convert: Any) -> Iterator[pa.RecordBatch]:
        for chunk in chunks:
            for row in chunk:
                convert(row)
            if self.rows[table]:
                yield self.drain(table)

    def _person(self, row: dict[str, Any], what: str) -> int | None:
        pid = self.ids.get(_person_key(row))
        if pid is None:
            self.left_out[f"{what} of a person left out"] += 1
        return pid

    # -------------------------------------------------------------------- tables

    def persons(self, patients: list[dict[str, Any]]) -> None:
        c = self.concepts
        for row in sorted(patients, key=lambda r: (r["site"], r["source_id"])):
            if row.get("birth_year") is None:
                self.left_out["person without year of birth (required by the CDM)"] += 1
                continue
            pid = self.new_id("person")
            self.ids[_person_key(row, "source_id")] = pid
            sex = (row.get("sex") or "unknown").lower()
            self.add("person", {
                "person_id": pid, "gender_concept_id": c.id("gender", sex),
                "year_of_birth": int(row["birth_year"]), "race_concept_id": 0,
                "ethnicity_concept_id": 0, "person_source_value": row["source_id"],
                "gender_source_value": row.get("sex") or ""},
                {"gender_concept_id": sex, "race_concept_id": "(not recorded)",
                 "ethnicity_concept_id": "(not recorded)"})

    def drugs(self, chunks: Chunks) -> Iterator[pa.RecordBatch]:
        return self._stream("drug_exposure", chunks, self._drug)

    def _drug(self, row: dict[str, Any]) -> None:
        pid = self._person(row, "drug_exposure")
        if pid is None:
            return
        eid = self.new_id("drug_exposure")
        end = row.get("end_date") or row["start_date"]
        self.add("drug_exposure", {
            "drug_exposure_id": eid, "person_id": pid,
            "drug_concept_id": self.concepts.id("drug", row["ingredient"]),
            "drug_exposure_start_date": row["start_date"], "drug_exposure_end_date": end,
            "verbatim_end_date": row.get("end_date"),
            "drug_type_concept_id": self.concepts.id(*EHR),
            "drug_source_value": row.get("code") or row["ingredient"]},
            {"drug_concept_id": row["ingredient"]})
        self._drugs[pid].append((eid, row["ingredient"], row["start_date"]))
        self.seen(pid, row["start_date"], end)

    def procedures(self, chunks: Chunks) -> Iterator[pa.RecordBatch]:
        return self._stream("procedure_occurrence", chunks, self._procedure)

    def _procedure(self, row: dict[str, Any]) -> None:
        pid = self._person(row, "procedure")
        if pid is None:
            return
        oid = self.new_id("procedure_occurrence")
        self.add("procedure_occurrence", {
            "procedure_occurrence_id": oid, "person_id": pid,
            "procedure_concept_id": self.concepts.id("procedure", row["category"]),
            "procedure_date": row["performed_date"], "procedure_end_date": row.get("end_date"),
            "procedure_type_concept_id": self.concepts.id(*EHR),
            "procedure_source_value": row.get("code") or row["category"]},
            {"procedure_concept_id": row["category"]})
        self._procs[pid].append((oid, row["category"], row["performed_date"]))
        self.seen(pid, row["performed_date"], row.get("end_date"))

    def measurements(self, chunks: Chunks) -> Iterator[pa.RecordBatch]:
        return self._stream("measurement", chunks, self._measurement)

    def _measurement(self, row: dict[str, Any]) -> None:
        pid = self._person(row, "measurement")
        if pid is None:
            return
        c = self.concepts
        unit, coded = row.get("unit"), row.get("value_code")
        named = {"measurement_concept_id": row["analyte"]}
        if unit:
            named["unit_concept_id"] = unit
        if coded:
            named["value_as_concept_id"] = coded
        self.add("measurement", {
            "measurement_id": self.new_id("measurement"), "person_id": pid,
            "measurement_concept_id": c.id("measurement", row["analyte"]),
            "measurement_date": row["effective_date"],
            "measurement_type_concept_id": c.id(*EHR), "value_as_number": row.get("value"),
            "unit_concept_id": c.id("unit", unit) if unit else None,
            "value_as_concept_id": c.id("value", coded) if coded else None,
            "measurement_source_value": c.code("measurement", row["analyte"]) or row["analyte"],
            "unit_source_value": unit, "value_source_value": coded}, named)
        self.seen(pid, row["effective_date"])

    def deaths(self, patients: list[dict[str, Any]], cohort: list[dict[str, Any]]) -> None:
        dates = {_person_key(r, "source_id"): r["death_date"] for r in cohort
                 if r.get("death_date")}
        dates.update({_person_key(r, "source_id"): r["death_date"] for r in patients
                      if r.get("death_date")})
        for key, date in sorted(dates.items()):
            pid = self.ids.get(key)
            if pid is None:
                continue
            self.add("death", {"person_id": pid, "death_date": date,
                               "death_type_concept_id": self.concepts.id(*EHR)}, {})
            self.seen(pid, date)

    def episodes(self, cohort: list[dict[str, Any]], lines: list[dict[str, Any]]) -> None:
        """A disease episode per cohort patient, a treatment-regimen episode per line."""
        lines_of: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for line in lines:
            lines_of[_person_key(line, "source_id")].append(line)
        for row in sorted(cohort, key=lambda r: (r["site"], r["source_id"])):
            key = _person_key(row, "source_id")
            pid = self.ids.get(key)
            if not row.get("in_cohort") or pid is None or row.get("progression_date") is None:
                continue
            disease_id = self._disease(pid, row)
            for line in sorted(lines_of[key], key=lambda r: r["line"]):
                self._regimen(pid, disease_id, line)

    def _disease(self, pid: int, row: dict[str, Any]) -> int:
        c = self.concepts
        episode_id = self.new_id("episode")
        self.add("episode", {
            "episode_id": episode_id, "person_id": pid,
            "episode_concept_id": c.id("episode", "disease_progression"),
            "episode_start_date": row["progression_date"],
            "episode_object_concept_id": c.id("episode_object", "multiple_myeloma"),
            "episode_type_concept_id": c.id(*EHR),
            "episode_source_value": f"progression after BCMA CAR-T: "
                                    f"{row.get('progression_basis') or ''}"},
            {"episode_concept_id": "disease_progression",
             "episode_object_concept_id": "multiple_myeloma"})
        self.seen(pid, row.get("index_date"), row["progression_date"],
                  row.get("last_contact_date"))
        return episode_id

    def _regimen(self, pid: int, disease_id: int, line: dict[str, Any]) -> None:
        c = self.concepts
        episode_id = self.new_id("episode")
        self.add("episode", {
            "episode_id": episode_id, "person_id": pid,
            "episode_concept_id": c.id("episode", "treatment_regimen"),
            "episode_start_date": line["start_date"], "episode_end_date": line.get("end_date"),
            "episode_parent_id": disease_id, "episode_number": int(line["line"]),
            "episode_object_concept_id": 0, "episode_type_concept_id": c.id(*EHR),
            "episode_source_value": line["drugs"]},
            {"episode_concept_id": "treatment_regimen",
             "episode_object_concept_id": f"regimen: {line['drugs']}"})
        first, last = line["start_date"], line.get("end_date") or line["start_date"]
        drugs = set(line["drugs"].split(";"))
        for eid, ingredient, start in self._drugs.get(pid, []):
            if ingredient in drugs and first <= start <= last:
                self._event(episode_id, eid, "drug_exposure")
        for oid, _category, date in self._procs.get(pid, []):
            if first <= date <= last:
                self._event(episode_id, oid, "procedure_occurrence")

    def _event(self, episode_id: int, event_id: int, table: str) -> None:
        self.add("episode_event", {
            "episode_id": episode_id, "event_id": event_id,
            "episode_event_field_concept_id": self.concepts.id("episode_event_field", table)},
            {"episode_event_field_concept_id": f"{table} field"})

    def periods(self) -> None:
        """One observation period per person: the first to the last date seen."""
        for pid, (first, last) in sorted(self._span.items()):
            self.add("observation_period", {
                "observation_period_id": pid, "person_id": pid,
                "observation_period_start_date": first, "observation_period_end_date": last,
                "period_type_concept_id": self.concepts.id(*EHR)}, {})
