"""One site's raw resources → normalized rows, quarantine entries and unmapped codes.

Each resource goes through the same steps, cheapest first: find its study code
(most resources stop here and only feed the unmapped report), check its status,
its subject, its dates and values, then validate it against R4B. Any failure
after the code matched is a quarantine with a reason; nothing raises out.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import orjson

from connector.codes.codesets import CodeSets
from connector.codes.labtext import special_value
from connector.codes.text import phrase_tokens
from connector.keys import patient_key
from connector.mapping.conditions import CONDITION_TYPES, map_condition
from connector.mapping.contact import LastRecords
from connector.mapping.fhir import (
    Coding,
    Excluded,
    Reject,
    bad_string,
    codings,
    concept_text,
    event_dates,
    parse_date,
    reference_target,
    subject_patient,
)
from connector.mapping.match import (
    IGNORED,
    DrugMatch,
    match_coded_text,
    match_coded_value,
    match_drug,
    match_procedure,
    unit_rule,
)
from connector.mapping.modifiers import unknown_modifier
from connector.mapping.orders import ORDER_TYPES, map_order
from connector.mapping.validate import r4b_problem

EVENT_TYPES = ("MedicationAdministration", *ORDER_TYPES, "Procedure", "Observation",
               *CONDITION_TYPES)
GENDERS = frozenset({"male", "female", "other", "unknown"})
_BIRTH_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_COMPARATORS = frozenset({"<", "<=", ">=", ">"})

log = logging.getLogger(__name__)

Row = dict[str, Any]
UnmappedKey = tuple[str, str, str, str]  # resource_type, system, code, normalized text


@dataclass(frozen=True)
class RawRow:
    """The columns of ``raw_resource`` the map stage reads."""

    resource_type: str
    resource_id: str
    version_id: str | None
    content_hash: str
    source: str
    body: str


@dataclass
class SiteResult:
    """What the map stage wrote for one site: its counts, and the rows when collected.

    The row lists are filled only by a collecting ``SiteMapper`` (the default);
    the map stage streams rows to the database instead and keeps only ``counts``.
    """

    site: str
    counts: Counter = field(default_factory=Counter)  # table → rows kept
    patients: list[Row] = field(default_factory=list)
    exposures: list[Row] = field(default_factory=list)
    procedures: list[Row] = field(default_factory=list)
    labs: list[Row] = field(default_factory=list)
    conditions: list[Row] = field(default_factory=list)
    quarantine: list[Row] = field(default_factory=list)
    unmapped: Counter = field(default_factory=Counter)  # UnmappedKey → resources
    unmapped_display: dict[UnmappedKey, str] = field(default_factory=dict)
    unmapped_resources: int = 0
    stale_trimmed: int = 0  # see connector.mapping.run.stale_trimmed
    excluded: Counter = field(default_factory=Counter)  # resource type → resources
    ignored: int = 0  # known codes that are not study events
    duplicates: int = 0
    reasons: Counter = field(default_factory=Counter)


#: Validates many stored bodies at once: items are (resource type, body, max string chars).
#: The answers may come back lazily (an iterator over worker results), in item order.
BatchValidator = Callable[[list[tuple[str, str, int]]], Iterable[str | None]]
PENDING_BATCH = 4000
#: Rows (of all tables) a streaming mapper holds before ``drain`` should be called.
DRAIN_ROWS = 2000
LAB_CODE_CACHE = 20000


def may_hold_bad_string(body: str | None, max_chars: int) -> bool:
    """Whether a stored body could hold an oversized or NUL string.

    A decoded JSON string is never longer than its encoded text, and a NUL can
    only arrive as the escape ``\\u0000`` (raw control characters are invalid
    JSON), so a short body without that escape needs no scan.
    """
    return body is None or len(body) > max_chars or "\\u0000" in body


def structure_problem(resource_type: str, res: dict, max_chars: int,
                      body: str | None = None) -> str | None:
    """Why a resource cannot be stored (a bad string, invalid R4B), or None.

    ``body`` is the stored text of ``res`` when known; it lets the string scan be skipped.
    """
    try:
        if may_hold_bad_string(body, max_chars):
            problem = bad_string(res, max_chars)
            if problem:
                return problem
        return r4b_problem(resource_type, res, body)
    except RecursionError:
        return "resource nested too deeply"


def validate_stored(item: tuple[str, str, int]) -> str | None:
    """``structure_problem`` of a stored body; the unit of work of a validation process."""
    resource_type, body, max_chars = item
    try:
        return structure_problem(resource_type, orjson.loads(body), max_chars, body)
    except Exception as exc:  # noqa: BLE001  (reported as a reason, never raised)
        return f"unexpected error while validating: {type(exc).__name__}"


class _Candidates:
    """Rows keyed by their table's natural key; the first by sort order wins.

    Only the keys and the winners' sort orders stay for the whole site; rows wait
    in ``buffer`` until drained. When a later resource beats a row already
    drained (written), its key goes to ``retract`` so the writer deletes it first.
    """

    def __init__(self) -> None:
        self.held: dict[tuple, tuple] = {}  # natural key → sort order of the winner
        self.buffer: dict[tuple, Row] = {}
        self.retract: list[tuple] = []
        self.duplicates = 0

    def add(self, key: tuple, order: tuple, row: Row) -> None:
        held = self.held.get(key)
        if held is not None:
            self.duplicates += 1
            if held <= order:
                return
            if key not in self.buffer:
                self.retract.append(key)
        self.held[key] = order
        self.buffer[key] = row

    def drain(self) -> tuple[list[tuple], list[Row]]:
        """Keys to delete, then rows to insert, since the last drain."""
        retract, rows = self.retract, list(self.buffer.values())
        self.retract, self.buffer = [], {}
        return retract, rows

    def sorted_rows(self) -> list[Row]:
        """Every winner in sort order (for a collecting mapper, which never drains)."""
        return [self.buffer[key] for key in sorted(self.buffer, key=self.held.__getitem__)]


@dataclass
class Drained:
    """Rows produced since the last drain, and natural keys of written rows that lost."""

    patients: list[Row] = field(default_factory=list)
    exposures: list[Row] = field(default_factory=list)
    procedures: list[Row] = field(default_factory=list)
    labs: list[Row] = field(default_factory=list)
    conditions: list[Row] = field(default_factory=list)
    quarantine: list[Row] = field(default_factory=list)
    retract: dict[str, list[tuple]] = field(default_factory=dict)  # table → keys


class SiteMapper:
    """Maps the raw resources of one site; feed Patients and Medications first."""

    def __init__(self, codesets: CodeSets, site: str, *, secret: bytes | None,
                 today: dt.date, unmapped_only: bool = False,
                 validate_many: BatchValidator | None = None,
                 collect: bool = True) -> None:
        self.cs = codesets
        self.site = site
        self.secret = secret
        self.unmapped_only = unmapped_only
        self.collect = collect
        self.max_date = today + dt.timedelta(days=codesets.max_future_days)
        self.result = SiteResult(site=site)
        self.patients: dict[str, int | None] = {}  # source id → birth year
        self._patient_rows: list[Row] = []
        self._quarantine_rows: list[Row] = []
        self.bad_patients: set[str] = set()
        self.medications: dict[str, tuple[RawRow, dict]] = {}
        self._medication_problem: dict[str, str | None] = {}
        self._quarantined: set[tuple[str, str]] = set()
        self._exposures = _Candidates()
        self._procedures = _Candidates()
        self._labs = _Candidates()
        self._conditions = _Candidates()
        self._validate_many = validate_many
        # Resources that passed the cheap checks, waiting for batch validation.
        self._pending: list[tuple[RawRow, dict, list[tuple[_Candidates, tuple, tuple, Row]]]] = []
        # A batch sent to the validation workers, answered while the next one is mapped.
        self._inflight: tuple[list, Iterable[str | None]] | None = None
        # (system, code) as sent → analyte or None; bounded so odd extracts cannot grow it.
        self._lab_codes: dict[tuple[str, str], str | None] = {}
        self._drug_matches: dict[bytes, list[DrugMatch]] = {}
        self.last_records = LastRecords(self.max_date, codesets.min_event_date)
        self._handlers = {
            "Patient": self._patient,
            "Medication": self._medication,
            "MedicationAdministration": self._medication_administration,
            "Procedure": self._procedure,
            "Observation": self._observation,
            **{t: partial(map_order, self) for t in ORDER_TYPES},
            "Condition": partial(map_condition, self),
        }

    # -- entry points -------------------------------------------------------

    def add(self, row: RawRow) -> None:
        """Map one raw resource (any study type)."""
        try:
            resource = orjson.loads(row.body)
        except orjson.JSONDecodeError:
            self._quarantine(row, "stored body is not JSON")
            return
        if not isinstance(resource, dict):
            self._quarantine(row, "stored body is not a JSON object")
            return
        handler = self._handlers.get(row.resource_type)
        if handler is None:
            return
        if row.resource_type not in ("Patient", "Medication") and not unknown_modifier(
                resource, self.cs.allowed_modifiers(row.resource_type), row.body):
            # a resource with a modifier the tool does not know says nothing reliable,
            # not even that the patient was seen that day
            self.last_records.note(resource)
        try:
            handler(row, resource)
        except Reject as exc:
            self._quarantine(row, exc.reason)
        except Excluded:
            self.result.excluded[row.resource_type] += 1
        except RecursionError:
            self._quarantine(row, "resource nested too deeply")
        except Exception as exc:  # noqa: BLE001  (one odd resource must not stop the site)
            log.warning("unexpected %s while mapping a %s", type(exc).__name__,
                        row.resource_type, exc_info=log.isEnabledFor(logging.DEBUG))
            self._quarantine(row, f"unexpected error while mapping: {type(exc).__name__}")
        # Outside the try: a failing validation pool must stop the run, not blame one row.
        if len(self._pending) >= PENDING_BATCH:
            self._flush()

    def finish(self) -> SiteResult:
        """Validate what is still queued and complete the counts (and rows, when collecting)."""
        self._flush()
        self._resolve()
        result = self.result
        result.counts.update({
            "patient": len(self.patients), "medication_exposure": len(self._exposures.held),
            "procedure_event": len(self._procedures.held), "lab_result": len(self._labs.held),
            "condition_record": len(self._conditions.held),
            "quarantine": len(self._quarantined)})
        if self.collect:
            result.patients = sorted(self._patient_rows, key=lambda r: r["source_id"])
            self.last_records.apply(result.patients)
            result.exposures = self._exposures.sorted_rows()
            result.procedures = self._procedures.sorted_rows()
            result.labs = self._labs.sorted_rows()
            result.conditions = self._conditions.sorted_rows()
            result.quarantine = self._quarantine_rows
        result.duplicates = (self._exposures.duplicates + self._procedures.duplicates
                             + self._labs.duplicates + self._conditions.duplicates)
        return result

    def buffered(self) -> int:
        """Rows waiting to be drained."""
        return (len(self._patient_rows) + len(self._quarantine_rows) + len(self._labs.buffer)
                + len(self._exposures.buffer) + len(self._procedures.buffer)
                + len(self._conditions.buffer))

    def drain(self) -> Drained:
        """Hand over the rows produced so far (a streaming mapper's writer calls this)."""
        out = Drained(patients=self._patient_rows, quarantine=self._quarantine_rows)
        self._patient_rows, self._quarantine_rows = [], []
        for table, candidates, rows in (
                ("medication_exposure", self._exposures, out.exposures),
                ("procedure_event", self._procedures, out.procedures),
                ("lab_result", self._labs, out.labs),
                ("condition_record", self._conditions, out.conditions)):
            retract, drained = candidates.drain()
            rows.extend(drained)
            if retract:
                out.retract[table] = retract
        return out

    # -- Patient and Medication ---------------------------------------------

    def _patient(self, row: RawRow, res: dict) -> None:
        if self.unmapped_only:
            return
        try:
            birth_year = self._birth_year(res)
            gender = res.get("gender")
            if gender is not None and gender not in GENDERS:
                raise Reject("unknown gender value")
            death_date, deceased = self._death(res, birth_year)
            self._modifiers(row, res)
            self._structure(row.resource_type, res, row.body)
        except Reject:
            self.bad_patients.add(row.resource_id)
            raise
        self.patients[row.resource_id] = birth_year
        self._patient_rows.append({
            "site": self.site, "source_id": row.resource_id,
            "patient_key": patient_key(self.site, row.resource_id, self.secret),
            "birth_year": birth_year, "sex": gender, "death_date": death_date,
            "deceased": deceased, "version_id": row.version_id,
        })

    def _birth_year(self, res: dict) -> int | None:
        if "birthDate" not in res:
            return None
        value = res["birthDate"]
        if not isinstance(value, str) or not _BIRTH_DATE.match(value):
            raise Reject("invalid birthDate")
        try:
            born = parse_date(value, "birthDate")
        except Reject:
            raise Reject("invalid birthDate: no such calendar date") from None
        if born.year < self.cs.min_birth_year or born > self.max_date:
            raise Reject("implausible birthDate")
        return born.year

    def _death(self, res: dict, birth_year: int | None) -> tuple[dt.date | None, bool]:
        if "deceasedDateTime" in res:
            died = parse_date(res["deceasedDateTime"], "deceasedDateTime")
            if birth_year is not None and died.year < birth_year:
                raise Reject("deceasedDateTime before birthDate")
            if died > self.max_date:
                raise Reject("implausible deceasedDateTime")
            return died, True
        if "deceasedBoolean" in res:
            flag = res["deceasedBoolean"]
            if not isinstance(flag, bool):
                raise Reject("deceasedBoolean is not a boolean")
            return None, flag
        return None, False

    def _medication(self, row: RawRow, res: dict) -> None:
        """Index a Medication; it is checked only when a kept administration uses it."""
        self.medications[row.resource_id] = (row, res)

    # -- events -------------------------------------------------------------

    def _medication_administration(self, row: RawRow, res: dict) -> None:
        concepts, external = self._medication_concepts(res)
        matches = self._match_drug(concepts)
        if not matches:
            self._unmapped(row.resource_type, concepts)
            return
        if self.unmapped_only:
            return
        status = self._status(row.resource_type, res)
        patient = self._subject(res)
        start, end = event_dates(res, "effective")
        self._check_date(start, patient, "effective")
        if external is not None:
            self._check_medication(external)
        self._defer_exposures(row, res, patient, start, end, status, matches)

    def _defer_exposures(self, row: RawRow, res: dict, patient: str, start: dt.date,
                         end: dt.date | None, status: str, matches: list[DrugMatch]) -> None:
        """Queue one exposure per matched ingredient (administrations and orders alike)."""
        res_row = (start, row.resource_type, row.resource_id)
        self._defer(row, res, [(
            self._exposures, (patient, m.ingredient, start), res_row,
            {"site": self.site, "patient_source_id": patient,
             "source_type": row.resource_type, "source_id": row.resource_id,
             "version_id": row.version_id, "ingredient": m.ingredient,
             "drug_class": m.drug_class, "start_date": start, "end_date": end,
             "status": status, **_provenance(m.coding)}) for m in matches])

    def _match_drug(self, concepts: list[object]) -> list[DrugMatch]:
        """``match_drug``, remembered per distinct set of concepts: a site gives the same
        few hundred drugs thousands of times, and name matching is the costly part."""
        try:
            key = orjson.dumps(concepts)
        except (TypeError, orjson.JSONEncodeError):
            return match_drug(self.cs, concepts)
        found = self._drug_matches.get(key)
        if found is None:
            found = match_drug(self.cs, concepts)
            if len(self._drug_matches) < LAB_CODE_CACHE:
                self._drug_matches[key] = found
        return list(found)

    def _medication_concepts(self, res: dict) -> tuple[list[object], str | None]:
        """The concepts naming the drug, and the id of a separate Medication if one is used."""
        if "medicationCodeableConcept" in res:
            concept = res["medicationCodeableConcept"]
            if not isinstance(concept, dict):
                raise Reject("medicationCodeableConcept is not a CodeableConcept")
            return [concept], None
        ref = res.get("medicationReference")
        if ref is None:
            raise Reject("missing medication")
        if not isinstance(ref, dict):
            raise Reject("medicationReference is not a Reference")
        text = ref.get("reference")
        if not isinstance(text, str) or not text:
            if isinstance(ref.get("display"), str):
                return [{"text": ref["display"]}], None
            raise Reject("medicationReference has no reference")
        if text.startswith("#"):
            medication = _contained(res, text[1:])
            if medication is None:
                raise Reject("medicationReference: contained Medication not found")
            return _medication_codes(medication), None
        target = reference_target(ref)
        if target is None or target[0] != "Medication":
            raise Reject("medicationReference is not a Medication reference")
        held = self.medications.get(target[1])
        if held is None:
            raise Reject("medicationReference: Medication not found")
        return _medication_codes(held[1]), target[1]

    def _check_medication(self, medication_id: str) -> None:
        """Validate a separate Medication once; quarantine it and its users when invalid."""
        if medication_id not in self._medication_problem:
            row, res = self.medications[medication_id]
            problem = (unknown_modifier(res, self.cs.allowed_modifiers("Medication"), row.body)
                       or structure_problem("Medication", res, self.cs.max_string_chars,
                                            row.body))
            self._medication_problem[medication_id] = problem
            if problem:
                self._quarantine(row, problem)
        if self._medication_problem[medication_id]:
            raise Reject("medicationReference: Medication is invalid")

    def _procedure(self, row: RawRow, res: dict) -> None:
        code = self._code(res)
        match = match_procedure(self.cs, code)
        if match is None:
            self._unmapped(row.resource_type, [code])
            return
        if match is IGNORED:
            self.result.ignored += 1
            return
        if self.unmapped_only:
            return
        status = self._status(row.resource_type, res)
        patient = self._subject(res)
        start, end = event_dates(res, "performed")
        self._check_date(start, patient, "performed")
        self._defer(row, res, [(
            self._procedures, (patient, match.category, start, match.product),
            (start, row.resource_type, row.resource_id),
            {"site": self.site, "patient_source_id": patient, "source_type": row.resource_type,
             "source_id": row.resource_id, "version_id": row.version_id,
             "category": match.category, "product": match.product, "performed_date": start,
             "end_date": end, "status": status, **_provenance(match.coding)})])

    def _observation(self, row: RawRow, res: dict) -> None:
        code = self._code(res)
        hit = self._lab_hit(code)
        if hit is None:
            self._unmapped(row.resource_type, [code])
            return
        if self.unmapped_only:
            return
        analyte = hit[0]
        self._status(row.resource_type, res)
        patient = self._subject(res)
        effective, _ = event_dates(res, "effective")
        self._check_date(effective, patient, "effective")
        value = self._lab_value(analyte, res)
        self._defer(row, res, [(
            self._labs, (patient, analyte, effective),
            (effective, row.resource_type, row.resource_id),
            {"site": self.site, "patient_source_id": patient, "source_id": row.resource_id,
             "version_id": row.version_id, "analyte": analyte, "effective_date": effective,
             **value})])

    def _lab_hit(self, concept: dict) -> tuple[str, Coding] | None:
        """``match_lab`` on the raw codings, with system lookups memoized.

        Most Observations of a lab-heavy extract are not study labs, so this is
        the hot path: no objects are built until a code matches.
        """
        items = concept.get("coding")
        if not isinstance(items, list):
            return None
        for item in items:
            if not isinstance(item, dict):
                continue
            code = item.get("code")
            if not isinstance(code, str) or not code:
                continue
            system = item.get("system")
            if not isinstance(system, str):
                continue
            pair = (system, code)
            if pair in self._lab_codes:
                analyte = self._lab_codes[pair]
            else:
                analyte = self._lab_analyte(system, code)
                if len(self._lab_codes) < LAB_CODE_CACHE:
                    self._lab_codes[pair] = analyte
            if analyte:
                display = item.get("display")
                return analyte, Coding(system.split("|", 1)[0], code,
                                       display if isinstance(display, str) else None)
        return None

    def _lab_analyte(self, system: str, code: str) -> str | None:
        return self.cs.lab_analyte(system, code)

    # -- checks shared by the event types -------------------------------------

    @staticmethod
    def _code(res: dict) -> object:
        code = res.get("code")
        if code is None:
            raise Reject("missing code")
        if not isinstance(code, dict):
            raise Reject("code is not a CodeableConcept")
        return code

    def _status(self, resource_type: str, res: dict) -> str:
        status = res.get("status")
        if status is None:
            raise Reject("missing status")
        happened = self.cs.statuses.get(resource_type, {}).get(status) if isinstance(
            status, str) else None
        if happened is None:
            raise Reject(f"unknown status value for {resource_type}")
        if not happened:
            raise Excluded
        return status

    def _subject(self, res: dict) -> str:
        patient = subject_patient(res)
        if patient in self.patients:
            return patient
        if patient in self.bad_patients:
            raise Reject("subject Patient was quarantined")
        raise Reject("reference to unknown patient")

    def _check_date(self, day: dt.date, patient: str, what: str) -> None:
        if day < self.cs.min_event_date or day > self.max_date:
            raise Reject(f"implausible {what} date")
        birth_year = self.patients[patient]
        if birth_year is not None and day.year < birth_year:
            raise Reject(f"{what} date before the patient's birth")

    def _structure(self, resource_type: str, res: dict, body: str | None = None) -> None:
        problem = structure_problem(resource_type, res, self.cs.max_string_chars, body)
        if problem:
            raise Reject(problem)

    def _defer(self, row: RawRow, res: dict,
               additions: list[tuple[_Candidates, tuple, tuple, Row]]) -> None:
        """Queue rows whose resource passed the cheap checks for batch validation."""
        self._modifiers(row, res)
        self._pending.append((row, res, additions))

    def _modifiers(self, row: RawRow, res: dict) -> None:
        problem = unknown_modifier(res, self.cs.allowed_modifiers(row.resource_type), row.body)
        if problem:
            raise Reject(problem)

    def _flush(self) -> None:
        """Validate the queued resources (in worker processes when given) and keep the valid.

        A batch sent to workers is answered at the next flush, so the workers
        validate while this process maps the following resources.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        limit = self.cs.max_string_chars
        if self._validate_many is None:
            self._keep_valid(pending, [structure_problem(row.resource_type, res, limit, row.body)
                                       for row, res, _ in pending])
            return
        # Workers get the stored text (cheap to pickle), not the parsed dicts.
        sent = [(row, None, additions) for row, _, additions in pending]
        answers = self._validate_many([(row.resource_type, row.body, limit)
                                       for row, _, _ in pending])
        self._resolve()
        self._inflight = (sent, answers)

    def _resolve(self) -> None:
        """Wait for the batch in the workers, if any, and keep its valid resources."""
        if self._inflight is not None:
            sent, answers = self._inflight
            self._inflight = None
            self._keep_valid(sent, list(answers))

    def _keep_valid(self, pending: list, problems: list[str | None]) -> None:
        for (row, _, additions), problem in zip(pending, problems, strict=True):
            if problem:
                self._quarantine(row, problem)
                continue
            for candidates, key, order, values in additions:
                candidates.add(key, order, values)

    # -- lab values -----------------------------------------------------------

    def _lab_value(self, analyte: str, res: dict) -> Row:
        if self.cs.analytes[analyte].kind == "coded":
            return self._coded_value(analyte, res)
        return self._quantity_value(analyte, res)

    def _quantity_value(self, analyte: str, res: dict) -> Row:
        spec = self.cs.analytes[analyte]
        special = special_value(self.cs.lab_text, analyte, spec.canonical_unit, res)
        if special is not None:
            return special
        if "valueQuantity" in res:
            quantity = res["valueQuantity"]
            if not isinstance(quantity, dict):
                raise Reject("valueQuantity is not a Quantity")
            raw_value = quantity.get("value")
            units = [u for u in (quantity.get("code"), quantity.get("unit"))
                     if isinstance(u, str) and u.strip()]
            comparator = quantity.get("comparator")
        elif "valueInteger" in res:
            raw_value, units, comparator = res["valueInteger"], [], None
        else:
            _no_value(res, f"expected valueQuantity for {analyte}")
        if raw_value is None:
            raise Reject("missing value")
        if isinstance(raw_value, bool) or not isinstance(raw_value, int | float):
            raise Reject("valueQuantity.value is not a number")
        if comparator is not None and comparator not in _COMPARATORS:
            raise Reject("unknown valueQuantity.comparator")
        factor, unit = self._unit(analyte, units)
        value = float(f"{raw_value * factor:.10g}")
        if (spec.min is not None and value < spec.min) or (
                spec.max is not None and value > spec.max):
            raise Reject(f"implausible value for {analyte}: {value:g} {unit} outside "
                         f"{spec.min:g}–{spec.max:g}")
        return {"value": value, "unit": unit, "value_code": None,
                "original_value": f"{comparator or ''}{raw_value}",
                "original_unit": units[-1] if units else None}

    def _unit(self, analyte: str, units: list[str]) -> tuple[float, str]:
        spec = self.cs.analytes[analyte]
        if not units:
            if spec.unit_required:
                raise Reject(f"missing unit for {analyte}")
            return 1.0, spec.canonical_unit
        for unit in units:
            rule = unit_rule(self.cs, analyte, unit)
            if rule:
                return rule
        raise Reject(f"unknown unit {units[0][:30]!r} for {analyte}")

    def _coded_value(self, analyte: str, res: dict) -> Row:
        if "valueCodeableConcept" in res:
            concept = res["valueCodeableConcept"]
            if not isinstance(concept, dict):
                raise Reject("valueCodeableConcept is not a CodeableConcept")
            code = match_coded_value(self.cs, analyte, concept)
            found = codings(concept)
            original = next((c.code for c in found if c.code), None) or concept_text(concept)
        elif "valueString" in res:
            text = res["valueString"]
            if not isinstance(text, str):
                raise Reject("valueString is not a string")
            code, original = match_coded_text(self.cs, analyte, text), text
        else:
            _no_value(res, f"expected a coded value for {analyte}")
        if code is None:
            raise Reject(f"unknown coded value for {analyte}")
        return {"value": None, "unit": None, "value_code": code,
                "original_value": original, "original_unit": None}

    # -- bookkeeping ------------------------------------------------------------

    def _unmapped(self, resource_type: str, concepts: list[object]) -> None:
        result = self.result
        result.unmapped_resources += 1
        if not self.unmapped_only:
            return  # the code report is computed by its own pass (connector.mapping.unmapped)
        seen: set[UnmappedKey] = set()
        for concept in concepts:
            found = codings(concept)
            for coding in found:
                key = (resource_type, coding.system or "", coding.code or "",
                       "" if coding.code else " ".join(phrase_tokens(coding.display or "")))
                self._note_unmapped(key, coding.display or "", seen)
            text = concept_text(concept)
            if text and not any(c.code for c in found):
                key = (resource_type, "", "", " ".join(phrase_tokens(text)))
                self._note_unmapped(key, text, seen)

    def _note_unmapped(self, key: UnmappedKey, display: str, seen: set[UnmappedKey]) -> None:
        if key in seen:
            return
        seen.add(key)
        self.result.unmapped[key] += 1
        held = self.result.unmapped_display.get(key)
        if display and (held is None or display < held):
            self.result.unmapped_display[key] = display[:200]

    def _quarantine(self, row: RawRow, reason: str) -> None:
        if self.unmapped_only:
            return
        reason = reason[:500]
        if (row.content_hash, reason) in self._quarantined:
            return
        self._quarantined.add((row.content_hash, reason))
        self.result.reasons[reason.split(":", 1)[0]] += 1
        self._quarantine_rows.append({
            "site": self.site, "stage": "map", "resource_type": row.resource_type,
            "resource_id": row.resource_id, "reason": reason, "source": row.source,
            "content_hash": row.content_hash, "raw": row.body})


def _no_value(res: dict, wrong_type: str) -> NoReturn:
    """Raise the right signal for an Observation without a usable value."""
    if any(k.startswith("value") for k in res):
        raise Reject(wrong_type)
    if "dataAbsentReason" in res:
        raise Excluded
    raise Reject("missing value")


def _contained(res: dict, local_id: str) -> dict | None:
    contained = res.get("contained")
    if not isinstance(contained, list):
        return None
    for item in contained:
        if (isinstance(item, dict) and item.get("resourceType") == "Medication"
                and item.get("id") == local_id):
            return item
    return None


def _medication_codes(medication: dict) -> list[object]:
    """A Medication's code, then its ingredients' codes (for compounded or local items)."""
    concepts: list[object] = []
    if isinstance(medication.get("code"), dict):
        concepts.append(medication["code"])
    ingredients = medication.get("ingredient")
    if isinstance(ingredients, list):
        for item in ingredients:
            if isinstance(item, dict) and isinstance(item.get("itemCodeableConcept"), dict):
                concepts.append(item["itemCodeableConcept"])
    return concepts


def _provenance(coding: Coding) -> Row:
    return {"code_system": coding.system, "code": coding.code,
            "display": coding.display[:500] if coding.display else None}
