"""Condition resources → baseline findings (issue 16: the covariates of Table 1).

A Condition counts when its code (mappings/conditions.csv: ICD-10-CM for
extramedullary plasmacytoma) or, failing a code, the words of its code's text
or displays name a finding: high-risk cytogenetics (del(17p), t(4;14),
t(14;16), 1q gain/amplification) or extramedullary disease. Cytogenetic
abnormalities have no ICD-10-CM code and no SNOMED CT code was confirmed, so
they match by text; the file says which rows are text matches.

``verificationStatus`` decides what the record says: ``refuted`` is a
finding looked for and ruled out ("absent"); ``confirmed`` or no status is
"present"; ``unconfirmed``, ``provisional`` and ``differential`` are kept as
"uncertain" (counted, never read as present); ``entered-in-error`` is not an
event. The date is the onset, else the date recorded; a Condition with neither
is quarantined. A patient without any record of a finding is "not recorded".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connector.codes.codesets import normalize_code
from connector.codes.text import phrase_tokens
from connector.mapping.fhir import Excluded, Reject, codings, concept_text, parse_date

if TYPE_CHECKING:
    import datetime as dt

    from connector.codes.codesets import CodeSets
    from connector.mapping.resources import RawRow, SiteMapper

CONDITION_TYPES = ("Condition",)
#: FHIR R4 condition-ver-status codes → what the record says about the finding.
VERIFICATION = {"confirmed": "present", "refuted": "absent", "unconfirmed": "uncertain",
                "provisional": "uncertain", "differential": "uncertain"}
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def match_findings(cs: CodeSets, concept: object) -> list[tuple[str, str | None, str | None,
                                                                 str | None]]:
    """(finding, system, code, display) for every finding the concept names.

    Codes win; text (the concept's text, then each display) is read only when no
    coding is a known code.
    """
    found: list[tuple[str, str | None, str | None, str | None]] = []
    items = codings(concept)
    for c in items:
        ns = cs.namespace(c.system)
        if ns is None or not c.code:
            continue
        finding = cs.conditions.get((ns, normalize_code(ns, c.code)))
        if finding and finding not in [f[0] for f in found]:
            found.append((finding, ns, c.code, c.display))
    if found:
        return found
    texts = [concept_text(concept), *(c.display for c in items)]
    for text in texts:
        if not text:
            continue
        for finding in cs.condition_names.find(phrase_tokens(text)):
            if finding not in [f[0] for f in found]:
                found.append((str(finding), "text", None, text[:200]))
    return found


def verification(res: dict) -> str:
    """present | absent | uncertain from verificationStatus; entered-in-error is excluded."""
    concept = res.get("verificationStatus")
    if concept is None:
        return "present"
    for c in codings(concept):
        if c.code == "entered-in-error":
            raise Excluded
        if c.code in VERIFICATION:
            return VERIFICATION[c.code]
    raise Reject("unknown verificationStatus")


def condition_date(res: dict) -> dt.date:
    """Onset (dateTime, or a period's start), else the date the Condition was recorded."""
    if "onsetDateTime" in res:
        return parse_date(res["onsetDateTime"], "onsetDateTime")
    period = res.get("onsetPeriod")
    if isinstance(period, dict) and "start" in period:
        return parse_date(period["start"], "onsetPeriod.start")
    if "recordedDate" in res:
        return parse_date(res["recordedDate"], "recordedDate")
    raise Reject("missing onset and recorded date")


def map_condition(mapper: SiteMapper, row: RawRow, res: dict) -> None:
    """One Condition → a condition_record row per finding it names."""
    code = res.get("code")
    found = match_findings(mapper.cs, code)
    if not found:
        mapper.unmapped(row.resource_type, [code])
        return
    status = verification(res)
    patient = mapper.subject(res)
    day = condition_date(res)
    mapper.check_date(day, patient, "condition")
    order = (day, row.resource_type, row.resource_id)
    mapper.defer(row, res, [(
        "condition_record", (patient, finding, day, status), order,
        {"site": mapper.site, "patient_source_id": patient, "source_type": row.resource_type,
         "source_id": row.resource_id, "version_id": row.version_id, "finding": finding,
         "status": status, "onset_date": day, "code_system": system, "code": value,
         "display": display}) for finding, system, value, display in found])
