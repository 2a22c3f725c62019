"""Reading the parts of a FHIR R4 resource the study needs, defensively.

These helpers work on the parsed JSON (``dict``) rather than on pydantic models:
a resource is only validated once we know it matters, and dates must be read
as written (the local date of ``2022-03-01T23:30:00-05:00`` is 1 March, which a
timezone-aware parser would turn into 2 March UTC).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_DATE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class Reject(Exception):  # noqa: N818  (a control-flow signal, not an error)
    """The resource matters to the study but cannot be used: quarantine it with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Excluded(Exception):  # noqa: N818  (a control-flow signal, not an error)
    """The resource says the event did not happen (a status, a data-absent reason)."""


@dataclass(frozen=True)
class Coding:
    """One coding as sent (system kept for provenance, version suffix dropped)."""

    system: str | None
    code: str | None
    display: str | None


def parse_date(value: Any, what: str) -> dt.date:
    """The calendar date written at the start of a FHIR date/dateTime.

    Partial dates take the first day of the month or year; time and zone are
    ignored, which keeps the date the site recorded.
    """
    if not isinstance(value, str):
        raise Reject(f"unparseable {what}: not a string")
    day = _calendar_date(value)
    if isinstance(day, str):
        raise Reject(f"unparseable {what}{day}")
    return day


@lru_cache(maxsize=8192)
def _calendar_date(value: str) -> dt.date | str:
    """``parse_date``'s work, remembered: every resource's dates are read twice (its event,
    the patient's last contact) and a panel of labs shares one time stamp. A str is the
    end of the reason when there is no date."""
    match = _DATE.match(value.strip())
    if not match:
        return ""
    year, month, day = match.group(1), match.group(2), match.group(3)
    try:
        return dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return ": no such calendar date"


def event_dates(resource: dict, prefix: str) -> tuple[dt.date, dt.date | None]:
    """Start and end date from ``<prefix>DateTime``, ``<prefix>Period`` or ``<prefix>Instant``."""
    what = f"{prefix} date"
    if f"{prefix}DateTime" in resource:
        return parse_date(resource[f"{prefix}DateTime"], what), None
    if f"{prefix}Instant" in resource:
        return parse_date(resource[f"{prefix}Instant"], what), None
    period = resource.get(f"{prefix}Period")
    if period is not None:
        if not isinstance(period, dict):
            raise Reject(f"unparseable {what}: {prefix}Period is not an object")
        start = parse_date(period["start"], what) if "start" in period else None
        end = parse_date(period["end"], what) if "end" in period else None
        if start is None and end is None:
            raise Reject(f"missing {what}")
        if start is not None and end is not None and end < start:
            raise Reject(f"{prefix}Period ends before it starts")
        return (start or end), end  # type: ignore[return-value]
    raise Reject(f"missing {what}")


def codings(concept: Any) -> list[Coding]:
    """The codings of a CodeableConcept, skipping malformed entries."""
    if not isinstance(concept, dict):
        return []
    items = concept.get("coding")
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        system, code, display = item.get("system"), item.get("code"), item.get("display")
        out.append(Coding(
            system=system.split("|", 1)[0] if isinstance(system, str) else None,
            code=code if isinstance(code, str) else None,
            display=display if isinstance(display, str) else None,
        ))
    return out


def concept_text(concept: Any) -> str | None:
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return concept["text"]
    return None


def reference_target(ref: Any) -> tuple[str, str] | None:
    """``(type, id)`` of a literal reference: relative, absolute or versioned."""
    if not isinstance(ref, dict):
        return None
    text = ref.get("reference")
    if not isinstance(text, str) or not text or text.startswith(("#", "urn:")):
        return None
    parts = text.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-1] or not parts[-2]:
        return None
    return parts[-2], parts[-1]


def subject_patient(resource: dict, field: str = "subject") -> str:
    """The id of the Patient a resource is about, or a Reject saying why not."""
    ref = resource.get(field)
    if ref is None:
        raise Reject(f"missing {field}")
    if not isinstance(ref, dict):
        raise Reject(f"{field} is not a Reference")
    text = ref.get("reference")
    if not isinstance(text, str) or not text:
        raise Reject(f"{field} has no literal reference")
    target = reference_target(ref)
    if target is None:
        raise Reject(f"{field} reference cannot be resolved")
    rtype, rid = target
    if rtype != "Patient":
        raise Reject(f"{field} is not a Patient reference ({rtype[:40]})")
    return rid


def bad_string(obj: Any, limit: int) -> str | None:
    """Why a string in ``obj`` cannot be stored, or None.

    Strings longer than ``limit`` (narrative ``text.div`` exempt) and strings
    holding a NUL character (PostgreSQL text cannot store it) are refused.
    Iterative, so a deeply nested resource cannot exhaust the Python stack.
    """
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if len(node) > limit:
                return f"oversized string at {path or '(root)'}"
            if "\x00" in node:
                return f"NUL character in string at {path or '(root)'}"
        elif isinstance(node, dict):
            for key, value in node.items():
                if key == "div" and path.endswith("text"):
                    continue
                stack.append((value, f"{path}.{key}" if path else key))
        elif isinstance(node, list):
            stack.extend((item, path) for item in node)
    return None


def provenance(coding: Coding) -> dict[str, Any]:
    """The columns that say which coding an event row was mapped from."""
    return {"code_system": coding.system, "code": coding.code,
            "display": coding.display[:500] if coding.display else None}


def code_of(res: dict) -> dict:
    """The ``code`` CodeableConcept of an event resource (missing or malformed: Reject)."""
    code = res.get("code")
    if code is None:
        raise Reject("missing code")
    if not isinstance(code, dict):
        raise Reject("code is not a CodeableConcept")
    return code
