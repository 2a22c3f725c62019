"""Checks on one input resource before it is stored: is its ``resourceType`` a FHIR type.

A resource type the study does not read (an Encounter, a Condition) is counted and
skipped; a ``resourceType`` that is no FHIR R4 resource type at all (``Patinet``,
``medicationAdministration``) is a mistake in the input, and goes to quarantine with
its reason, so that a misspelled export is seen rather than silently skipped.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: R4 resource types that R4B (the models of ``fhir.resources`` used here) renamed or
#: removed; still valid in an R4 export.
R4_ONLY = frozenset({
    "EffectEvidenceSynthesis", "RiskEvidenceSynthesis", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect",
    "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
})
_ABSTRACT = frozenset({"Resource", "DomainResource"})
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


@lru_cache(maxsize=1024)
def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a concrete FHIR R4 (or R4B) resource type, case as written."""
    if name in R4_ONLY:
        return True
    if name in _ABSTRACT or not _TYPE_NAME.fullmatch(name):
        return False
    # imported here: most loads never meet a type outside the study's (the models are big)
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    try:
        model = get_fhir_model_class(name)
    except (ValueError, ImportError):
        return False
    return isinstance(model, type) and issubclass(model, Resource)


def unknown_type_reason(name: str) -> str:
    """The quarantine reason for a ``resourceType`` that is no FHIR resource type. The
    name is repeated only when it looks like a type name (input text stays out of it)."""
    shown = name if _TYPE_NAME.fullmatch(name) else "(not a type name)"
    return f"unknown resourceType {shown!r}: not a FHIR R4 resource type"
