"""The data dictionary: what every exported column means, its type and unit.

One entry per (table, column) of the parquet/csv export. ``data_dictionary.csv`` is
written from these entries and the tables' Arrow schemas, so the type column is the
type in the files. A column without an entry is an error (``missing_entries``): a
column nobody described should not ship. Vocabularies are those of docs/design.md.
"""

from __future__ import annotations

import pyarrow as pa

MONTHS = "months (days / 30.4375)"
SITE = ("", "site name (as given to the connector)")
KEY = ("", "pseudonymous patient key: HMAC-SHA256 of site and FHIR Patient id with the "
            "site secret, 32 hex digits; the same patient has the same key in every table")
RESOURCE = ("", "keyed hash of site, resource type and FHIR resource id (not linkable to "
                "the patient key)")
STATUS = ("", "FHIR status of the source resource")
CODE_SYSTEM = ("", "code system URI of the source code (RxNorm, HCPCS, ICD-10-PCS, ...)")
CODE = ("", "the source code as sent")

TABLES: dict[str, str] = {
    "patient": "normalized: one row per patient seen at the site",
    "medication_exposure": "normalized: one administration or course of one ingredient",
    "procedure_event": "normalized: a procedure in study terms (CAR-T infusion, apheresis, "
                       "transplant, radiation)",
    "lab_result": "normalized: one lab value in its analyte's canonical unit",
    "condition_record": "normalized: one baseline finding (high-risk cytogenetics, "
                        "extramedullary disease) as a Condition recorded it",
    "cohort_patient": "derived: every patient with whether and why they are in the cohort",
    "therapy_line": "derived: one line of therapy after progression on BCMA CAR-T",
    "patient_baseline": "derived: Table 1 covariates of one cohort patient at progression "
                        "after CAR-T (empty = not recorded, never guessed)",
    "analysis_patient": "analysis-ready: one row per cohort patient, outcomes computed",
    "analysis_line": "analysis-ready: one row per line of cohort patients, outcomes computed",
}

_DERIVED_PATIENT: dict[str, tuple[str, str]] = {
    "site": SITE, "patient_key": KEY,
    "index_product": ("", "ingredient of the index BCMA CAR-T (first BCMA CAR-T infusion)"),
    "index_date": ("date", "date of the index CAR-T infusion"),
    "progression_date": ("date", "progression after CAR-T (start of OS)"),
    "progression_basis": ("", "how progression was found: imwg_labs, disease_status or "
                              "new_line_fallback"),
    "death_date": ("date", "date of death; empty when alive or unknown"),
    "deceased": ("", "true when death is known: a death date, or deceasedBoolean without "
                     "one (then OS is censored at last contact)"),
    "last_contact_date": ("date", "last dated contact (OS censoring date)"),
    "birth_year": ("year", "year of birth"),
    "sex": ("", "FHIR administrative gender"),
}

_LINE: dict[str, tuple[str, str]] = {
    "site": SITE, "patient_key": KEY,
    "line": ("", "line number after progression on CAR-T (1 = first)"),
    "start_date": ("date", "first day of the line"),
    "end_date": ("date", "last exposure of the line; empty when ongoing"),
    "drugs": ("", "';'-separated lower-case ingredients given in the line, sorted"),
    "therapy_class": ("", "tce (bispecific or CAR-T in the line) or non_tce"),
    "subclass": ("", "first that applies: car_t, bcma_bispecific, gprc5d_bispecific, "
                     "fcrh5_bispecific, autologous_transplant, bcma_adc, xpo1_inhibitor, "
                     "bcl2_inhibitor, anti_cd38, anti_slamf7, chemotherapy, imid_pi, other"),
    "best_response": ("", "best IMWG response: sCR, CR, VGPR, PR, MR, SD, PD, NE (fewer "
                          "than two assessments)"),
    "response_note": ("", "why a response is capped, e.g. 'CR not determinable: no "
                          "immunofixation' (generated text)"),
    "pfs_event_date": ("date", "first confirmed PD or death in the line; empty if none"),
    "pfs_censor_date": ("date", "last assessment, when there is no PFS event"),
    "ttnt_event_date": ("date", "time to next treatment event: the next line's start, or "
                                "death after the last line; empty if none"),
    "ttnt_censor_date": ("date", "last contact, when there is no TTNT event"),
}

ENTRIES: dict[str, dict[str, tuple[str, str]]] = {
    "patient": {
        "site": SITE, "patient_key": KEY, "birth_year": ("year", "year of birth"),
        "sex": ("", "FHIR administrative gender"),
        "death_date": ("date", "deceasedDateTime of the Patient resource"),
        "deceased": ("", "true when the Patient resource says deceased (with or without "
                         "a date)"),
        "last_record_date": ("date", "latest date of any resource of the patient, mapped "
                                     "or not (part of the last contact)"),
    },
    "medication_exposure": {
        "site": SITE, "patient_key": KEY,
        "source_type": ("", "FHIR resource type (MedicationAdministration, "
                            "MedicationStatement, ...)"),
        "resource_key": RESOURCE,
        "ingredient": ("", "lower-case generic ingredient name, e.g. teclistamab"),
        "drug_class": ("", "drug class (mappings/drug_classes.csv), e.g. bcma_bispecific"),
        "start_date": ("date", "first day of the exposure"),
        "end_date": ("date", "last day of the exposure; empty when a single day or unknown"),
        "status": STATUS, "code_system": CODE_SYSTEM, "code": CODE,
    },
    "procedure_event": {
        "site": SITE, "patient_key": KEY,
        "source_type": ("", "FHIR resource type (Procedure, ...)"), "resource_key": RESOURCE,
        "category": ("", "car_t_administration, car_t_harvest, apheresis, auto_transplant, "
                         "allo_transplant or radiation"),
        "product": ("", "CAR-T ingredient when the code names it, else empty"),
        "performed_date": ("date", "date performed"),
        "end_date": ("date", "end of the procedure when it spans days"),
        "status": STATUS, "code_system": CODE_SYSTEM, "code": CODE,
    },
    "lab_result": {
        "site": SITE, "patient_key": KEY, "resource_key": RESOURCE,
        "analyte": ("", "analyte (mappings/labs.csv), e.g. serum_m_protein"),
        "effective_date": ("date", "date of the specimen or result"),
        "value": ("see unit", "value in the analyte's canonical unit"),
        "unit": ("", "canonical unit (g/dL, mg/24h, mg/L, %, ratio, ...)"),
        "value_code": ("", "coded result: immunofixation negative/positive, disease status "
                           "SNOMED code"),
    },
    "condition_record": {
        "site": SITE, "patient_key": KEY,
        "source_type": ("", "FHIR resource type (Condition)"), "resource_key": RESOURCE,
        "finding": ("", "del_17p, t_4_14, t_14_16, gain_1q or extramedullary "
                        "(mappings/conditions.csv)"),
        "status": ("", "present, absent (verificationStatus refuted) or uncertain"),
        "onset_date": ("date", "onset of the Condition, else the date it was recorded"),
        "code_system": ("", "code system URI of the source code (ICD-10-CM, SNOMED CT, ...), "
                            "or 'text' when the finding was recognized in the Condition's "
                            "text (the text itself is not exported)"),
        "code": ("", "the source code as sent; empty when code_system is 'text'"),
    },
    "cohort_patient": {
        **_DERIVED_PATIENT,
        "in_cohort": ("", "true when the patient is in the study cohort"),
        "exclusion_reason": ("", "why not in the cohort: no_car_t, non_bcma_car_t, "
                                 "no_progression, ..."),
    },
    "therapy_line": _LINE,
    "patient_baseline": {
        "site": SITE, "patient_key": KEY,
        "prior_lines": ("", "regimens the site's records show before the index CAR-T's "
                            "apheresis (lines given elsewhere are not seen)"),
        **{finding: ("", f"{label} at progression after CAR-T: present, absent (refuted) or "
                         "empty (not recorded)") for finding, label in (
            ("del_17p", "del(17p)"), ("t_4_14", "t(4;14)"), ("t_14_16", "t(14;16)"),
            ("gain_1q", "1q gain or amplification"),
            ("extramedullary", "extramedullary disease"))},
        "riss_stage": ("", "R-ISS stage I, II or III (the last recorded by progression, window "
                           "in mappings/rules.toml); "
                           "empty when not recorded"),
        "ldh": ("U/L", "LDH nearest progression (window in mappings/rules.toml)"),
        "ldh_elevated": ("", "LDH above the upper limit of normal in mappings/rules.toml"),
        "lab_interval_days": ("days", "median days between successive M-protein or free "
                                      "light chain results from progression on; empty with "
                                      "fewer than two"),
    },
    "analysis_patient": {
        **_DERIVED_PATIENT,
        "age_at_index": ("years", "index year minus birth year"),
        "cart_to_progression_months": (MONTHS, "index CAR-T to progression"),
        "os_months": (MONTHS, "overall survival: progression after CAR-T to death or last "
                              "contact; empty when not computable"),
        "os_event": ("", "true: died (os_months ends at death); false: censored at last "
                         "contact"),
        "ttnt_months": (MONTHS, "time to next treatment after CAR-T: index infusion to the "
                                "start of the first later line or death, whichever first; "
                                "censored at last contact"),
        "ttnt_event": ("", "true: a later line started or the patient died"),
        "n_lines": ("", "number of lines after progression"),
        "ever_tce": ("", "at least one line of class tce (naive grouping: immortal-time "
                         "biased, see docs/analysis.md)"),
        "first_tce_months": (MONTHS, "progression to the start of the first tce line"),
        "first_line_therapy_class": ("", "therapy_class of line 1"),
        "first_line_subclass": ("", "subclass of line 1"),
        "first_line_best_response": ("", "best_response of line 1"),
        "first_line_responder": ("", "line 1 best response >= PR"),
    },
    "analysis_line": {
        **_LINE,
        "is_first": ("", "the patient's lowest-numbered line"),
        "start_months": (MONTHS, "progression after CAR-T to the start of this line"),
        "tce_kind": ("", "car_t or bispecific for tce lines of those subclasses, else empty"),
        "evaluable": ("", "best response other than NE (the ORR denominator)"),
        "responder": ("", "best response >= PR (false for NE; see evaluable)"),
        "vgpr_or_better": ("", "best response >= VGPR"),
        "cr_or_better": ("", "best response >= CR"),
        "cr_determinable": ("", "evaluable and not a VGPR capped for lack of immunofixation "
                                "or marrow (the >= CR denominator)"),
        "pfs_months": (MONTHS, "line start to pfs_event_date, else to pfs_censor_date; empty "
                               "when neither or negative"),
        "pfs_event": ("", "true: progression or death; false: censored"),
        "ttnt_months": (MONTHS, "time to next treatment: line start to the start of the next "
                                "line or death, whichever first; censored at last contact"),
        "ttnt_event": ("", "true: a next line started or the patient died"),
    },
}


def type_name(arrow_type: pa.DataType) -> str:
    """A type name every reader understands: string, integer, double, boolean, date."""
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    return "string"


def missing_entries(schemas: dict[str, pa.Schema]) -> list[str]:
    """``table.column`` of every exported column without a dictionary entry."""
    return [f"{name}.{field.name}" for name, schema in schemas.items() for field in schema
            if field.name not in ENTRIES.get(name, {})]


def dictionary_table(schemas: dict[str, pa.Schema]) -> pa.Table:
    """One row per exported column: table, column, type, unit, description."""
    missing = missing_entries(schemas)
    if missing:
        raise KeyError(f"columns without a data dictionary entry (add them to "
                       f"connector/export/dictionary.py): {', '.join(missing)}")
    rows: dict[str, list[str]] = {k: [] for k in ("table", "table_description", "column",
                                                  "type", "unit", "description")}
    for name, schema in schemas.items():
        for field in schema:
            unit, text = ENTRIES[name][field.name]
            rows["table"].append(name)
            rows["table_description"].append(TABLES[name])
            rows["column"].append(field.name)
            rows["type"].append(type_name(field.type))
            rows["unit"].append(unit)
            rows["description"].append(text)
    return pa.table({k: pa.array(v, type=pa.string()) for k, v in rows.items()})
