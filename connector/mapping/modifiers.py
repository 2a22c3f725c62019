"""Modifier extensions: data the tool must understand before it may use a resource.

A ``modifierExtension`` changes the meaning of the element that carries it (FHIR R4
§2.4.1: "not done", "entered in error", "the patient refused"), and an application that
does not know one must not process the resource as if it were absent. So a resource the
study would map, whose body (at any level: the resource, a dosage, a contained
Medication) holds a modifier extension not listed in ``mappings/modifier_extensions.csv``,
is quarantined with the extension's URL as its reason instead of becoming a normal event.
"""

from __future__ import annotations

import re
from typing import Any

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[!-~]{1,200}")


def unknown_modifier(resource: dict, allowed: frozenset[str], body: str | None = None
                     ) -> str | None:
    """The quarantine reason for the first modifier extension not in ``allowed``, or None.

    ``body``, the resource's stored text when known, lets almost every resource skip the
    walk: a resource without the word ``modifierExtension`` has none."""
    if body is not None and "modifierExtension" not in body:
        return None
    stack: list[Any] = [resource]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "modifierExtension":
                    problem = _check(value, allowed)
                    if problem:
                        return problem
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _check(extensions: Any, allowed: frozenset[str]) -> str | None:
    if not isinstance(extensions, list):
        return "modifierExtension is not a list"
    for ext in extensions:
        url = ext.get("url") if isinstance(ext, dict) else None
        if not isinstance(url, str) or not _URL.fullmatch(url):
            return "modifierExtension without a usable url"
        if url not in allowed:
            return f"unknown modifierExtension (not in mappings/modifier_extensions.csv): {url}"
    return None
