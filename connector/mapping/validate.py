"""Strict structural validation of kept resources with the ``fhir.resources`` R4B models.

Only resources that matter to the study are validated (pydantic validation is
~90 µs a resource, about fifty times the cost of parsing), and a resource whose
structure was accepted before only has its values checked (connector/mapping/shapes.py,
~15 µs; the verdicts are the models'). One leniency: a
dateTime with a time but no zone (``2022-03-01T10:00:00``) is invalid FHIR yet
common in hospital extracts, and the study only reads its date, so it is
accepted rather than losing the event.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from typing import Any

import orjson
from pydantic import ValidationError

from connector.mapping.shapes import ShapeCache

_MODULES = {
    "Patient": "patient",
    "Observation": "observation",
    "Procedure": "procedure",
    "MedicationAdministration": "medicationadministration",
    "MedicationRequest": "medicationrequest",
    "MedicationDispense": "medicationdispense",
    "MedicationStatement": "medicationstatement",
    "Medication": "medication",
    "Condition": "condition",
}
#: This process's accepted shapes (each validation worker has its own).
SHAPES = ShapeCache()
_ZONELESS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")


@cache
def _model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{_MODULES[resource_type]}")
    return getattr(module, resource_type)


def _is_zoneless_datetime(error: dict) -> bool:
    value = error.get("input")
    return (error.get("type") == "value_error" and isinstance(value, str)
            and bool(_ZONELESS.match(value)) and "DateTime" in str(error.get("msg", "")))


def _describe(resource_type: str, error: dict) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ())) or "(resource)"
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    # pydantic messages name the rule, not the value; cut anyway to stay short.
    return f"invalid R4B {resource_type}: {loc}: {msg[:160]}"


def _patched(resource: dict, errors: list[dict]) -> dict:
    """A copy with a zone added to each zoneless dateTime, so the rest can be checked."""
    copy = orjson.loads(orjson.dumps(resource))
    for error in errors:
        node: Any = copy
        loc = list(error["loc"])
        for part in loc[:-1]:
            node = node[part]
        node[loc[-1]] = node[loc[-1]] + "Z"
    return copy


def r4b_problem(resource_type: str, resource: dict, body: str | None = None,
                shapes: ShapeCache | None = None) -> str | None:
    """Why ``resource`` is not valid R4B, or None when it is.

    A resource whose shape the models accepted before and whose every leaf passes
    its field's own check is valid without running the models (connector/mapping/shapes.py);
    any other resource takes ``full_problem``, which gives every reason. ``shapes``
    is this process's cache unless given (a test compares a fresh one with the models).
    """
    shapes = SHAPES if shapes is None else shapes
    known = shapes.accepts(resource_type, resource)
    if known is True:
        return None
    model = _model(resource_type)
    problem, by_dict = full_problem(resource_type, resource, body)
    # A shape is learned only from the dict path's acceptance: the cache stands in for it.
    if problem is None and known and (by_dict or _dict_accepts(model, resource)):
        shapes.learn(known, model, resource)
    return problem


def _dict_accepts(model: Any, resource: dict) -> bool:
    try:
        model.model_validate(resource)
    except Exception:  # noqa: BLE001  (not confirmed: the shape is simply not learned)
        return False
    return True


def full_problem(resource_type: str, resource: dict,
                 body: str | None = None) -> tuple[str | None, bool]:
    """The ``fhir.resources`` verdict, and whether the parsed dict (not the text) was accepted.

    ``body``, the resource's JSON text when known, is validated first: pydantic reads
    it faster than the parsed dict (docs/benchmarks.md), and nearly every kept resource
    is valid. Any error sends the dict through the full path below, so verdicts do not depend on it.
    """
    model = _model(resource_type)
    if body is not None:
        try:
            model.model_validate_json(body)
            return None, False
        except ValidationError:
            pass
    try:
        model.model_validate(resource)
        return None, True
    except ValidationError as exc:
        errors = exc.errors()
    lenient = [e for e in errors if _is_zoneless_datetime(e)]
    strict = [e for e in errors if not _is_zoneless_datetime(e)]
    if strict:
        return _describe(resource_type, strict[0]), False
    try:
        model.model_validate(_patched(resource, lenient))
    except ValidationError as exc:
        return _describe(resource_type, exc.errors()[0]), False
    except (KeyError, IndexError, TypeError):
        return _describe(resource_type, lenient[0]), False
    return None, True
