"""What a FHIR server says it can do (its CapabilityStatement), for the checks a run needs.

A run reads the statement once, before its first search, and fails with one message
that lists everything missing (a resource type, a search parameter) rather than on
the first search the server refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from connector.fhir.errors import CapabilityError

#: Last path segments (lower case) of extension URLs that servers use to state the largest
#: page they serve. FHIR R4 defines no element for it, so only a statement that names it
#: this plainly is read; anything else leaves the choice to a probe (pagesize.py).
MAX_PAGE_EXTENSIONS = frozenset({"maxpagesize", "max-page-size", "maximumpagesize",
                                 "maximum-page-size", "maxcount", "max-count"})
#: A maximum stated in the documentation of the ``_count`` search parameter
#: ("_count: at most 500", "maximum page size 250", "limited to 100").
_MAX_IN_TEXT = re.compile(r"\b(?:max(?:imum)?|at most|up to|limited to|cap(?:ped)? at)\b"
                          r"\D{0,24}?(\d{1,7})\b", re.IGNORECASE)


@dataclass
class TypeCapability:
    interactions: set[str]
    params: set[str]


class Capabilities:
    """What a server's CapabilityStatement says it can do, for the checks a run needs."""

    def __init__(self, statement: dict) -> None:
        self.statement = statement
        self.fhir_version = str(statement.get("fhirVersion") or "")
        software = statement.get("software") if isinstance(statement.get("software"), dict) else {}
        self.software = " ".join(str(software.get(k, "")) for k in ("name", "version")).strip()
        rests = [r for r in statement.get("rest") or [] if isinstance(r, dict)]
        rest = next((r for r in rests if r.get("mode") == "server"), rests[0] if rests else {})
        self.types: dict[str, TypeCapability] = {}
        for res in rest.get("resource") or []:
            if not isinstance(res, dict) or not res.get("type"):
                continue
            self.types[res["type"]] = TypeCapability(
                interactions={i.get("code") for i in res.get("interaction") or []
                              if isinstance(i, dict)},
                params={p.get("name") for p in res.get("searchParam") or [] if isinstance(p, dict)})
        self.common_params = {p.get("name") for p in rest.get("searchParam") or []
                              if isinstance(p, dict)}
        self._rest = rest

    def max_page_size(self) -> tuple[int, str] | None:
        """The largest page the statement says the server serves, and where it says so;
        None when it does not say (the usual case: R4 has no element for it).

        Read from an extension named for it (``MAX_PAGE_EXTENSIONS``) on the statement or
        its server ``rest`` part, or from a maximum in the documentation of a ``_count``
        search parameter. Several statements: the smallest wins (the safe one)."""
        found: list[tuple[int, str]] = []
        for holder, where in ((self.statement, "CapabilityStatement"), (self._rest, "rest")):
            for ext in _extensions(holder):
                name = str(ext.get("url") or "").rstrip("/").rsplit("/", 1)[-1].lower()
                value = next((ext[k] for k in ("valuePositiveInt", "valueUnsignedInt",
                                               "valueInteger") if k in ext), None)
                if name in MAX_PAGE_EXTENSIONS and isinstance(value, int) and value > 0:
                    found.append((value, f"{where} extension {name}"))
        for param, where in self._count_params():
            match = _MAX_IN_TEXT.search(str(param.get("documentation") or ""))
            if match and int(match.group(1)) > 0:
                found.append((int(match.group(1)), f"documentation of _count ({where})"))
        return min(found) if found else None

    def _count_params(self) -> Iterator[tuple[dict, str]]:
        for param in self._rest.get("searchParam") or []:
            if isinstance(param, dict) and param.get("name") == "_count":
                yield param, "rest"
        for res in self._rest.get("resource") or []:
            for param in (res.get("searchParam") or []) if isinstance(res, dict) else []:
                if isinstance(param, dict) and param.get("name") == "_count":
                    yield param, str(res.get("type"))

    def searchable(self, rtype: str) -> bool:
        caps = self.types.get(rtype)
        if caps is None:
            return False
        return not caps.interactions or "search-type" in caps.interactions

    def has_param(self, rtype: str, name: str) -> bool:
        """Whether ``name`` is listed for ``rtype``; ``_``-parameters count unless unlisted types.

        Servers often leave the parameters common to all resources (``_id``,
        ``_lastUpdated``) out of the statement, so those are assumed.
        """
        caps = self.types.get(rtype)
        if caps is None:
            return False
        base = name.split(":")[0].split(".")[0]
        return base in caps.params or base in self.common_params or base.startswith("_")

    def history_type(self, rtype: str) -> bool:
        caps = self.types.get(rtype)
        return caps is not None and (not caps.interactions or "history-type" in caps.interactions)

    def require(self, base_url: str, needs: dict[str, list[tuple[tuple[str, ...], str]]]) -> None:
        """Raise one CapabilityError listing everything missing.

        ``needs`` maps a resource type to (parameter alternatives, why) pairs, e.g.
        ``{"Procedure": [(("code",), "to find CAR-T patients")]}``.
        """
        problems: list[str] = []
        if self.fhir_version and not self.fhir_version.startswith("4."):
            problems.append(f"it speaks FHIR {self.fhir_version}, this connector reads R4 (4.0)")
        for rtype, params in needs.items():
            if not self.searchable(rtype):
                problems.append(f"{rtype}: no search" if rtype in self.types
                                else f"{rtype}: resource type not supported")
                continue
            for alternatives, why in params:
                if not any(self.has_param(rtype, p) for p in alternatives):
                    names = " or ".join(f"'{p}'" for p in alternatives)
                    problems.append(f"{rtype}: no search parameter {names} ({why})")
        if problems:
            raise CapabilityError(
                f"the FHIR server at {base_url} cannot serve this extraction: "
                + "; ".join(problems) + ". Check resource_types, scope and [quirks] in the "
                "site config (scope = \"all\" needs no screening parameters).")


def _extensions(holder: Any) -> Iterator[dict]:
    if isinstance(holder, dict):
        for ext in holder.get("extension") or []:
            if isinstance(ext, dict):
                yield ext
