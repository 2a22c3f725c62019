"""The Bulk Data ``$export`` vocabulary: what is asked (``ExportRequest``), what the server
answers (``Manifest``), how patiently to wait (``PollPolicy``) and how a job can fail.

Plain data with the checks and parsing each needs; the HTTP exchanges are
``connector.fhir.bulk.BulkClient``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from connector.fhir.errors import FhirSourceError
from connector.fhir.results import to_instant

LEVELS = ("system", "patient", "group")
NDJSON = "application/fhir+ndjson"


class BulkExportError(FhirSourceError):
    """The export job failed on the server (the message carries its OperationOutcome)."""


class BulkJobGone(BulkExportError):
    """The server no longer knows the job or its files (404/410: expired, deleted, restarted)."""


class BulkTimeout(BulkExportError):
    """The export did not finish within the run's time limit (the job is kept to resume)."""


# ----------------------------------------------------------------- requests


@dataclass(frozen=True)
class ExportRequest:
    """What to ask the server for. ``types`` empty = everything the server offers."""

    level: str = "system"  # system | patient | group
    group_id: str | None = None
    types: tuple[str, ...] = ()
    since: str | None = None  # a FHIR instant
    type_filters: tuple[str, ...] = ()  # e.g. "Observation?category=laboratory"
    method: str = "GET"  # GET (query) or POST (Parameters body)
    partial_manifests: bool = False  # send allowPartialManifests=true

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"export level must be one of {', '.join(LEVELS)}")
        if (self.level == "group") != bool(self.group_id):
            raise ValueError("a group-level export needs a group id (and only it has one)")
        if self.method not in ("GET", "POST"):
            raise ValueError("kick-off method must be GET or POST")

    @property
    def path(self) -> str:
        if self.level == "patient":
            return "Patient/$export"
        if self.level == "group":
            return f"Group/{self.group_id}/$export"
        return "$export"

    def params(self) -> list[tuple[str, str]]:
        """Kick-off parameters in order; ``_typeFilter`` repeated, one query each."""
        out = [("_outputFormat", NDJSON)]
        if self.types:
            out.append(("_type", ",".join(self.types)))
        if self.since:
            out.append(("_since", self.since))
        out += [("_typeFilter", q) for q in self.type_filters]
        if self.partial_manifests:
            out.append(("allowPartialManifests", "true"))
        return out

    def parameters_resource(self) -> dict[str, Any]:
        """The same parameters as a FHIR ``Parameters`` body, for a POST kick-off."""
        kinds = {"_since": "valueInstant", "allowPartialManifests": "valueBoolean"}
        parameter: list[dict[str, Any]] = []
        for name, value in self.params():
            kind = kinds.get(name, "valueString")
            parameter.append({"name": name, kind: value == "true" if kind == "valueBoolean"
                              else value})
        return {"resourceType": "Parameters", "parameter": parameter}

    def without(self, name: str) -> ExportRequest:
        """This request without a parameter a server refused (``allowPartialManifests``,
        ``_typeFilter`` or ``_type``)."""
        from dataclasses import replace

        if name == "allowPartialManifests":
            return replace(self, partial_manifests=False)
        if name == "_typeFilter":
            return replace(self, type_filters=())
        if name == "_type":
            return replace(self, types=(), type_filters=())
        raise ValueError(name)


# ----------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ManifestFile:
    kind: str  # output | error | deleted
    type: str
    url: str
    count: int | None = None


@dataclass
class Manifest:
    """A (possibly partial) export manifest."""

    transaction_time: str
    requires_access_token: bool
    files: list[ManifestFile]
    next_url: str | None
    raw: dict = field(repr=False)

    @classmethod
    def parse(cls, body: Any, base: str) -> Manifest:
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise BulkExportError("the export's status answer is not a manifest (no 'output')")
        when = to_instant(str(body.get("transactionTime") or "")) or ""
        files: list[ManifestFile] = []
        # STU4 renames "error" to "outcome"; read both
        for kind, key in (("output", "output"), ("deleted", "deleted"), ("error", "error"),
                          ("error", "outcome")):
            for item in body.get(key) or []:
                if not isinstance(item, dict) or not item.get("url"):
                    continue
                count = item.get("count")
                files.append(ManifestFile(
                    kind=kind, type=str(item.get("type") or ""),
                    url=urljoin(base, str(item["url"])),
                    count=count if isinstance(count, int) and count >= 0 else None))
        next_url = next((urljoin(base, str(link["url"])) for link in body.get("link") or []
                         if isinstance(link, dict) and link.get("relation") == "next"
                         and link.get("url")), None)
        token = body.get("requiresAccessToken")
        return cls(transaction_time=when, requires_access_token=token is not False,
                   files=files, next_url=next_url, raw=body)


@dataclass
class PollResult:
    """One look at the status URL."""

    done: bool
    manifest: Manifest | None = None  # the manifest (done), or a partial one (202 with a body)
    progress: str | None = None  # X-Progress
    retry_after: float | None = None  # seconds, when the server said


@dataclass
class PollPolicy:
    """How patiently to poll, in seconds."""

    timeout: float = 24 * 3600.0  # total, from the first poll of this run
    max_wait: float = 120.0  # cap on any single wait, Retry-After included
    min_wait: float = 0.5  # never poll faster than this, whatever Retry-After says
    initial: float = 1.0  # first wait without Retry-After; doubles up to max_wait


@dataclass
class Downloaded:
    path: Path
    bytes: int
    gzip: bool
