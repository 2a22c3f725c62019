"""A shape-verdict cache in front of the R4B models: known structure, exact leaf checks.

Validating a resource with ``fhir.resources`` costs ~90 µs, mostly fhir_core's
per-element Python validators, yet hospital resources come in a few dozen
structures. Whether a model accepts a parsed resource depends on two things:

* its *shape* — the tree of keys and value kinds (dict, list, str, int, float,
  bool, null), list lengths included, with the values of ``resourceType`` /
  ``resource_type`` (they choose or check the model class). fhir_core's model
  validators (``reject_null_complex_elements``, the required-element and
  one-of-many checks, ``FHIRPrimitiveExtension``'s "one field required") and
  ``extra="forbid"`` read only that;
* each primitive *leaf* passing its field's own validator (pattern, length,
  date parsing, ...), which depends only on the leaf's value.

So once the model accepted one resource of a shape, another resource of the
same shape is valid exactly when each of its leaves passes the validator of the
field it sits in. Those validators are pydantic ``TypeAdapter``s of the very
annotations the model's fields carry, so the checks are the model's own. Anything
not understood (a key that is not a field alias, a scalar where the model wants
an element, a mixed list, deep nesting) makes the shape "unmodelled": its
resources always take the full path, as do unknown shapes and failed leaves,
so every reason still comes from ``fhir.resources``.
"""

from __future__ import annotations

import typing
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import cache
from typing import Any

from fhir_core.constraints import FHIR_TYPES_MAPS
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import TypeAdapter
from pydantic._internal._validators import import_string

#: Distinct shapes remembered per process (a flat key of ~1 KB and a check list each).
MAX_SHAPES = 4096
#: Deeper resources are not cached (nesting this deep is hostile or broken anyway).
MAX_DEPTH = 24
#: Strings remembered per field before that memory starts afresh.
MAX_PASSED = 256
#: Keys fhir_core's ``__init__`` pops and compares with the model's resource type.
TYPE_KEYS = ("resourceType", "resource_type")

#: Markers of the flat shape key (objects, so no key or value can be taken for one).
_DICT, _LIST, _END, _VALUE = object(), object(), object(), object()

#: A field's validator and the strings it already passed.
Check = tuple[Callable[[Any], Any], set[str]]


class _Unmodelled(Exception):
    """The resource has a structure this module does not reason about."""


class _TooDeep(Exception):
    """Nesting beyond ``MAX_DEPTH``."""


def shape_of(node: dict, leaves: list) -> tuple:
    """The shape key of a parsed resource; its non-null leaves are appended in walk order.

    The key is flat: ``{`` key value ... ``}``, ``[`` value ... ``]``, a scalar's type,
    or ``=`` and the value of a ``resourceType`` / ``resource_type``. A list of scalars
    (not all null) is one leaf: its field's annotation validates it whole.
    """
    tokens: list[Hashable] = []
    _dict_shape(node, tokens, leaves, 0)
    return tuple(tokens)


def _dict_shape(node: dict, tokens: list, leaves: list, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _TooDeep
    add = tokens.append
    add(_DICT)
    for key, value in node.items():
        add(key)
        kind = value.__class__
        if kind is dict:
            _dict_shape(value, tokens, leaves, depth + 1)
        elif kind is list:
            _list_shape(value, tokens, leaves, depth + 1)
        elif kind is str and (key == "resourceType" or key == "resource_type"):
            add(_VALUE)
            add(value)
        else:
            add(kind)
            if value is not None:
                leaves.append(value)
    add(_END)


def _list_shape(node: list, tokens: list, leaves: list, depth: int) -> None:
    add = tokens.append
    add(_LIST)
    if all(item.__class__ is not dict and item.__class__ is not list for item in node):
        tokens.extend([item.__class__ for item in node])
        if any(item is not None for item in node):
            leaves.append(node)
    else:
        for item in node:
            kind = item.__class__
            if kind is dict:
                _dict_shape(item, tokens, leaves, depth + 1)
            elif kind is list:
                _list_shape(item, tokens, leaves, depth + 1)
            else:
                add(kind)
                if item is not None:
                    leaves.append(item)
    add(_END)


# -- what the model applies to each leaf ------------------------------------------


def _fhir_types(annotation: Any) -> list[type]:
    """The fhir_core element types (``CodeableConceptType``, ...) inside an annotation."""
    if isinstance(annotation, type) and issubclass(annotation, FhirBase):
        return [annotation]
    found: list[type] = []
    for arg in typing.get_args(annotation):
        found.extend(_fhir_types(arg))
    return found


@cache
def _aliases(model: type) -> dict[str, str]:
    """Input key → field name, for keys equal to a field's alias (the only keys FHIR JSON uses)."""
    return {info.alias: name for name, info in model.model_fields.items() if info.alias}


@cache
def _field_check(model: type, name: str) -> Check:
    """The validator of one primitive field, built from the field's own annotation, and
    the strings it passed (validators are pure, and codes, systems, units, references
    and dates repeat: a set lookup instead of a pattern and a date parse)."""
    info = model.model_fields[name]
    annotation = info.annotation
    if info.metadata:
        annotation = typing.Annotated[annotation, *info.metadata]
    return TypeAdapter(annotation).validator.validate_python, set()


def _element_model(model: type, name: str, value: dict) -> type:
    """The model fhir_core validates a dict in field ``name`` with (as ``FhirBase._validate``)."""
    kinds = _fhir_types(model.model_fields[name].annotation)
    if len(kinds) != 1:
        raise _Unmodelled
    kind = kinds[0]
    klass = kind.get_model_klass()
    if issubclass(kind, FhirElementOrResourceBase) and "resourceType" in value:
        chosen = value["resourceType"]
        if not isinstance(chosen, str):
            raise _Unmodelled
        klass = import_string(FHIR_TYPES_MAPS[kind._prefix + chosen + "Type"])
    return klass


def leaf_checks(model: type, node: dict) -> tuple[Check, ...]:
    """For a resource the model accepted, the check of each leaf in ``shape_of`` order."""
    checks: list[Check] = []
    _dict_checks(model, node, checks)
    return tuple(checks)


def _dict_checks(model: type, node: dict, checks: list[Check]) -> None:
    aliases = _aliases(model)
    fields = model.model_fields
    for key, value in node.items():
        if key in TYPE_KEYS:
            if key in aliases or key in fields or not (value is None or isinstance(value, str)):
                raise _Unmodelled
            continue
        name = aliases.get(key)
        if name is None or (name != key and (name in node or key in fields)):
            # Not an alias, given twice (as alias and field name), or also another field's name.
            raise _Unmodelled
        kind = type(value)
        if kind is dict:
            _dict_checks(_element_model(model, name, value), value, checks)
        elif kind is list:
            _list_checks(model, name, value, checks)
        elif value is not None:
            checks.append(_primitive_check(model, name))


def _list_checks(model: type, name: str, node: list, checks: list[Check]) -> None:
    if not any(type(item) in (dict, list) for item in node):
        if any(item is not None for item in node):
            checks.append(_primitive_check(model, name))
        return
    for item in node:
        if type(item) is dict:
            _dict_checks(_element_model(model, name, item), item, checks)
        elif item is not None:
            raise _Unmodelled  # a list within a list, or scalars among elements


def _primitive_check(model: type, name: str) -> Check:
    if _fhir_types(model.model_fields[name].annotation):
        raise _Unmodelled  # a scalar where the model wants an element
    return _field_check(model, name)


# -- the cache -------------------------------------------------------------------


class ShapeCache:
    """Accepted shapes (per resource type) with their leaf checks, least recently used out.

    Only acceptances are remembered: a shape rejected once may be rejected for a
    leaf value, and a later resource of that shape is then learned when valid.
    ``None`` as checks marks a shape accepted but unmodelled (always the full path).
    """

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self.max_shapes = max_shapes
        self._shapes: OrderedDict[tuple, tuple[Check, ...] | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._shapes)

    def accepts(self, resource_type: str, resource: dict) -> tuple | bool:
        """True when the resource is known valid; else the key to ``learn`` it under
        (an empty tuple when it cannot be cached)."""
        leaves: list = []
        try:
            key = (resource_type, shape_of(resource, leaves))
        except (_TooDeep, RecursionError):
            return ()
        if key not in self._shapes:
            return key
        self._shapes.move_to_end(key)
        checks = self._shapes[key]
        if checks is None or len(checks) != len(leaves):
            return ()
        try:
            for (validate, passed), leaf in zip(checks, leaves, strict=True):
                if leaf.__class__ is str:  # only str: 1 == 1.0 == True in a set
                    if leaf in passed:
                        continue
                    validate(leaf)
                    if len(passed) >= MAX_PASSED:
                        passed.clear()
                    passed.add(leaf)
                else:
                    validate(leaf)
        except Exception:  # noqa: BLE001  (any doubt: the full path decides and explains)
            return ()
        return True

    def learn(self, key: tuple, model: type, resource: dict) -> None:
        """Remember ``resource``'s shape as accepted by ``model`` (the caller made sure)."""
        if not key:
            return
        try:
            checks: tuple[Check, ...] | None = leaf_checks(model, resource)
        except Exception:  # noqa: BLE001  (anything not understood: always the full path)
            checks = None
        self._shapes[key] = checks
        if len(self._shapes) > self.max_shapes:
            self._shapes.popitem(last=False)
