"""The types a site config's values must have, checked before a run uses any of them.

TOML gives strings, integers, floats, booleans and lists; an operator who writes
``page_size = "abc"`` or ``concurrency = 2.5`` should hear which key is wrong and
what it must be, not see a traceback from deep inside the client. The check is a
strict pydantic model made from the config's own dataclasses (``strict_model``), so
a setting added to ``connector.fhir.config`` is typed without a second list of
settings: no silent rounding of 2.5 to 2, no "5" read as 5. A float setting accepts
an integer (``rate_limit = 5``).

Only types are checked here; ranges and combinations (``page_size`` at least 1,
``auth.type`` needing its secret) stay in ``SiteConfig.validate``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from connector.fhir.errors import SiteConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


def strict_model(record: type, *, types: dict[str, Any] | None = None,
                 skip: frozenset[str] = frozenset()) -> type[BaseModel]:
    """A strict model with the settings of the dataclass ``record``: the same names and
    types, a nested dataclass as its own model, a setting without a default required.

    ``types`` gives a setting the type TOML writes it in when the dataclass holds it
    otherwise (a tuple is a list in TOML); ``skip`` names fields no file sets.
    """
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in skip:
            continue
        kind = (types or {}).get(f.name, hints[f.name])
        if dataclasses.is_dataclass(kind):
            kind = strict_model(kind)
        required = f.default is dataclasses.MISSING and \
            f.default_factory is dataclasses.MISSING
        fields[f.name] = (kind, ... if required else None)
    return create_model(f"{record.__name__}Model", __base__=_Strict, **fields)


#: What each kind of value must be, in the words of a config file's reader.
_EXPECTED = {"int": "a whole number", "float": "a number", "bool": "true or false",
             "str": "a string in quotes", "list": "a list", "dict": "a table",
             "none": "absent", "literal": "one of the allowed values"}


def check_types(data: dict[str, Any], where: str, model: type[BaseModel]) -> None:
    """Raise SiteConfigError naming every key of ``data`` whose value has the wrong type.

    The message names the key (``page_size``, ``retry.budget``), what it must be and
    the type it has, never the value itself: a value in the wrong key may be a secret.
    """
    try:
        model.model_validate(data)
    except ValidationError as exc:
        needs: dict[str, list[str]] = {}
        got: dict[str, str] = {}
        for error in exc.errors():
            key, need, kind = _problem(error)
            needs.setdefault(key, [])
            if need not in needs[key]:
                needs[key].append(need)
            got[key] = kind
        problems = [f"{key} must be {' or '.join(need)}, not {got[key]}"
                    if got[key] else f"{key}: {need[0]}" for key, need in needs.items()]
        raise SiteConfigError(f"{where}: " + "; ".join(problems)) from None


def _problem(error: Any) -> tuple[str, str, str]:
    """(key, what it must be, the type it has) of one pydantic error; the type is empty
    when the error is not about a type (a missing or unknown key)."""
    loc = [str(p) for p in error.get("loc", ())]
    # a union (int | None, bool | str) reports each member under the member's name
    while loc and (loc[-1] in _MEMBERS or loc[-1].startswith("list[")):
        loc.pop()
    key = _key(loc)
    kind = error.get("type", "")
    if kind == "missing":
        return key, "is required", ""
    if kind == "extra_forbidden":
        return key, "unknown setting", ""
    name = type(error.get("input")).__name__
    return key, _need(kind), _TOML_NAMES.get(name, name)


_MEMBERS = {"int", "float", "bool", "str", "list", "none", "dict"}


def _key(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "config"


def _need(kind: str) -> str:
    for prefix, words in _EXPECTED.items():
        if kind.startswith(prefix):
            return words
    return "of another type"


_TOML_NAMES = {"str": "a string", "int": "a whole number", "float": "a decimal number",
               "bool": "a boolean", "list": "a list", "dict": "a table",
               "datetime": "a date-time", "date": "a date", "time": "a time"}
