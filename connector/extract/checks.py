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


# ------------------------------------------------------------------ references

#: The references the map stage resolves to a resource of the same site: the patient an
#: event is about and the Medication an administration or order names.
LOCAL_REFERENCES = ("subject", "patient", "medicationReference")
#: In a resource's canonical JSON (no spaces): a reference with a URL scheme.
ABSOLUTE_REFERENCE = re.compile(rb'"reference":"[A-Za-z][A-Za-z0-9+.\-]*://')
_ABSOLUTE = re.compile(
    r"^(?P<base>[A-Za-z][A-Za-z0-9+.\-]*://.+?)/(?P<type>[A-Z][A-Za-z]+)/"
    r"(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?/?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def base_key(url: str) -> tuple[str, str, str] | None:
    """A base URL as compared: scheme and host in lower case, no default port, no
    trailing slash (``HTTP://Host:80/fhir/`` is ``http://host/fhir``)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if not scheme or not host:
        return None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return scheme, netloc, parts.path.rstrip("/")


def reference_base(text: str) -> str | None:
    """The server base of an absolute reference (``http://x/fhir/Patient/1`` →
    ``http://x/fhir``), or None for a relative or unreadable one."""
    match = _ABSOLUTE.match(text)
    return match.group("base") if match else None


def foreign_reference(resource: dict, base: str | None) -> str | None:
    """Why ``resource`` points at another server, or None.

    An absolute ``subject``/``patient``/``medicationReference`` whose base is not
    ``base`` (the URL the resource was read from: the site's server, or the base of
    its Bundle entry's ``fullUrl``) names a resource of another server: taking its id
    as a local one would attach data to the wrong patient or drug. The reason names the
    field only (the URL holds an id)."""
    own = base_key(base) if base else None
    for name in LOCAL_REFERENCES:
        ref = resource.get(name)
        text = ref.get("reference") if isinstance(ref, dict) else None
        if not isinstance(text, str) or "://" not in text:
            continue
        ref_base = reference_base(text)
        if own is None or ref_base is None or base_key(ref_base) != own:
            where = "this source's base URL" if own else "a source without a base URL"
            return f"{name} refers to another server (an absolute reference, not under {where})"
    return None
