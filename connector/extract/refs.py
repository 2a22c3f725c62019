"""Same-server references: which Patient a resource is about, which Medication it names.

A REST run collects them from the pages it stores (the patients a screen found, the
Medications to fetch next); a Bulk run reads them from the stored administrations.
Only references that stay on the server are followed: relative ones, and absolute
ones under the run's base URL.
"""

from __future__ import annotations

import re
from typing import Any

_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_MEDICATION_REF = re.compile(r"(?:^|/)Medication/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def _ref_id(reference: Any, pattern: re.Pattern[str], base_url: str) -> str | None:
    """The id in a same-server reference (relative, or absolute under our base URL)."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str) or ref.startswith("#"):
        return None
    if "://" in ref and not ref.startswith(base_url.rstrip("/") + "/"):
        return None
    m = pattern.search(ref)
    return m.group(1) if m else None


def subject_patient(resource: dict, base_url: str) -> str | None:
    """The Patient id of ``subject`` (or ``patient``), when it is on this server."""
    return _ref_id(resource.get("subject") or resource.get("patient"), _PATIENT_REF, base_url)


def medication_id(resource: dict, base_url: str) -> str | None:
    """The Medication id of ``medicationReference``, when it is on this server."""
    return _ref_id(resource.get("medicationReference"), _MEDICATION_REF, base_url)
