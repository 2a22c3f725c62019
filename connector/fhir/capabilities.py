"""What a FHIR server says it can do (its CapabilityStatement), for the checks a run needs.

A run reads the statement once, before its first search, and fails with one message
that lists everything missing (a resource type, a search parameter) rather than on
the first search the server refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.fhir.errors import CapabilityError


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
