"""Matching codes and names against the code sets.

Every coding of a CodeableConcept is tried; codes win over names, and names
(``text``, then each coding's ``display``) are the fallback for local codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.codes.codesets import CodeSets, ProcedureCode, normalize_code
from connector.codes.rulesfile import study_terms
from connector.codes.text import name_tokens, normalize_unit, phrase_tokens
from connector.mapping.fhir import Coding, codings, concept_text

#: Procedure categories whose product a CAR-T name in the text may supply.
CAR_T_CATEGORIES = frozenset({"car_t_administration", "car_t_harvest"})


@dataclass(frozen=True)
class DrugMatch:
    ingredient: str
    drug_class: str
    coding: Coding  # what matched, for provenance


@dataclass(frozen=True)
class ProcedureMatch:
    category: str
    product: str
    coding: Coding


def _code_key(cs: CodeSets, coding: Coding) -> tuple[str, str] | None:
    namespace = cs.namespace(coding.system)
    if namespace is None or not coding.code:
        return None
    return namespace, normalize_code(namespace, coding.code)


def _texts(concept: object) -> list[tuple[str, Coding]]:
    """Names to try, each with the coding to record when it matches."""
    out: list[tuple[str, Coding]] = []
    text = concept_text(concept)
    if text:
        out.append((text, Coding(None, None, text)))
    for coding in codings(concept):
        if coding.display:
            out.append((coding.display, coding))
    return out


def match_drug(cs: CodeSets, concepts: list[object]) -> list[DrugMatch]:
    """Study ingredients named by any of ``concepts`` (a code, else a name)."""
    found: dict[str, DrugMatch] = {}
    for concept in concepts:
        for coding in codings(concept):
            key = _code_key(cs, coding)
            ingredient = cs.drug_codes.get(key) if key else None
            if ingredient and ingredient not in found:
                found[ingredient] = DrugMatch(ingredient, cs.drug_class[ingredient], coding)
    if found:
        return list(found.values())
    for concept in concepts:
        for text, coding in _texts(concept):
            for ingredient in cs.drug_names.find(name_tokens(text)):
                assert isinstance(ingredient, str)
                if ingredient not in found:
                    found[ingredient] = DrugMatch(ingredient, cs.drug_class[ingredient], coding)
    return list(found.values())


IGNORED = ProcedureMatch("ignore", "", Coding(None, None, None))


def match_procedure(cs: CodeSets, concept: object) -> ProcedureMatch | None:
    """Category and product of a procedure code; ``IGNORED`` for known non-events."""
    matches: list[tuple[ProcedureCode, Coding]] = []
    for coding in codings(concept):
        key = _code_key(cs, coding)
        entry = cs.procedures.get(key) if key else None
        if entry:
            matches.append((entry, coding))
    if not matches:
        for text, coding in _texts(concept):
            for entry in cs.procedure_names.find(name_tokens(text)):
                assert isinstance(entry, ProcedureCode)
                matches.append((entry, coding))
    events = [(e, c) for e, c in matches if e.category != "ignore"]
    if not events:
        return IGNORED if matches else None
    category, coding = events[0][0].category, events[0][1]
    product = next((e.product for e, _ in events if e.category == category and e.product), "")
    if not product and category in CAR_T_CATEGORIES:
        product = _car_t_product_by_name(cs, concept)
    return ProcedureMatch(category, product, coding)


def _car_t_product_by_name(cs: CodeSets, concept: object) -> str:
    car_t_classes = study_terms().car_t_classes  # rules.toml [car_t]
    for text, _ in _texts(concept):
        for ingredient in cs.drug_names.find(name_tokens(text)):
            if cs.drug_class.get(str(ingredient)) in car_t_classes:
                return str(ingredient)
    return ""


def match_lab(cs: CodeSets, concept: object) -> tuple[str, Coding] | None:
    """The analyte of an Observation code (by code only: lab names are too ambiguous)."""
    for coding in codings(concept):
        key = _code_key(cs, coding)
        analyte = cs.labs.get(key) if key else None
        if analyte:
            return analyte, coding
    return None


def match_coded_value(cs: CodeSets, analyte: str, concept: object) -> str | None:
    """The study value of a coded result (``negative``, a SNOMED code...), by code or text."""
    for coding in codings(concept):
        key = _code_key(cs, coding)
        if key:
            value = cs.coded_values.get((analyte, *key))
            if value:
                return value
    for text, _ in _texts(concept):
        value = match_coded_text(cs, analyte, text)
        if value:
            return value
    return None


def match_coded_text(cs: CodeSets, analyte: str, text: str) -> str | None:
    return cs.coded_values.get((analyte, "text", " ".join(phrase_tokens(text))))


def unit_rule(cs: CodeSets, analyte: str, unit: str) -> tuple[float, str] | None:
    """``(factor, canonical unit)`` for a unit spelling, or None when unknown."""
    rule = cs.units.get((analyte, normalize_unit(unit)))
    return (rule.factor, rule.canonical_unit) if rule else None
