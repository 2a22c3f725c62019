"""The parts of a Bulk export run that need no run state.

What makes two requests "the same export" (``request_key``: for resuming and for the
``_since`` watermark), where a job's files go on disk, the spinner shown while the
server prepares the export, and the Medications fetched by id that a Patient or Group
export cannot contain.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.engine import Engine

from connector.codes.labfilter import default_trim
from connector.db.models import BulkFile
from connector.extract.records import merge_counts, referenced_medications, stored_ids
from connector.extract.store import RawStore, StoreCounts
from connector.fhir.bulk import BulkClient, ExportRequest, PollPolicy
from connector.fhir.client import FhirClient
from connector.fhir.config import SiteConfig
from connector.fhir.errors import SiteConfigError
from connector.progress import Progress

log = logging.getLogger(__name__)

MEDICATION_BATCH = 50
#: Resource types outside the Patient compartment: not asked of Patient/Group exports.
NON_COMPARTMENT = frozenset({"Medication"})


@dataclass
class BulkSettings:
    """Everything about one bulk run that the site config does not hold."""

    level: str | None = None  # system | patient | group; None = choose (see module doc)
    group_id: str | None = None
    since: str | None = None  # explicit _since; "full" = a full export whatever the watermark
    type_filters: tuple[str, ...] = ()
    method: str = "GET"
    partial_manifests: bool = False
    work_dir: Path | None = None
    keep_files: bool = False
    hydrate: bool = True
    poll: PollPolicy = field(default_factory=PollPolicy)
    #: "duckdb": full exports' resource files go through connector/extract/duck.py
    loader: str = "python"


def export_request(bulk: BulkClient, config: SiteConfig, settings: BulkSettings
                   ) -> ExportRequest:
    """What to ask the server for (without ``_since``): the level (given, implied by
    ``--group``, else system if the server offers it, else patient), the study's types
    in that level's reach, and the Observation categories the site needs."""
    s = settings
    level = s.level or ("group" if s.group_id else None)
    if level == "group" and not s.group_id:
        raise SiteConfigError("a Group export needs the group's id (--group ID)")
    if s.group_id and level != "group":
        raise SiteConfigError(f"--group applies to a Group export, not a {level}-level one")
    if level is None:
        levels = bulk.export_levels()
        if levels is None or "system" in levels:
            level = "system"
        elif "patient" in levels:
            level = "patient"
        else:
            bulk.check_level("system")
    else:
        bulk.check_level(level)
    assert level is not None
    types = tuple(t for t in config.resource_types
                  if level == "system" or t not in NON_COMPARTMENT)
    filters = list(s.type_filters)
    for category in config.quirks.observation_categories:
        if "Observation" in types:
            filters.append(f"Observation?category={category}")
    request = ExportRequest(level=level, group_id=s.group_id, types=types,
                            type_filters=tuple(filters), method=s.method,
                            partial_manifests=s.partial_manifests)
    return request


def request_key(request: ExportRequest) -> str:
    """What identifies "the same export" for resuming and for the ``_since`` watermark."""
    scope = request.level + (f"/{request.group_id}" if request.group_id else "")
    key = f"$export {scope} _type={','.join(sorted(request.types)) or '*'}"
    if request.type_filters:
        digest = hashlib.sha256("|".join(sorted(request.type_filters)).encode()).hexdigest()
        key += f" _typeFilter={digest[:10]}"
    if not request.types or "Observation" in request.types:
        # Observations are stored trimmed by the lab code sets in force: when they change,
        # the next export is a full one (connector/codes/labfilter.py)
        trim = default_trim()
        key += f" bodies={trim.digest if trim else 'all'}"
    return key


def default_work_dir(engine: Engine) -> Path:
    """``.bulk`` beside a SQLite database file, else in the current directory."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if database and database != ":memory:" and not database.startswith("file:"):
        return Path(database).resolve().parent / ".bulk"
    return Path.cwd() / ".bulk"


def with_since(request: ExportRequest, since: str | None) -> ExportRequest:
    """``request`` asking for the changes since ``since`` (None: a full export)."""
    return replace(request, since=since)


def file_name(f: BulkFile) -> str:
    return f"{f.id:05d}_{f.kind}_{safe_name(f.resource_type or 'file')}.ndjson"


def complete_file(dest: Path) -> Path | None:
    """A file a killed run downloaded whole (renamed from .part) but did not load."""
    for candidate in (dest, dest.with_name(dest.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:64] or "site"


@contextmanager
def poll_display(progress: Progress) -> Iterator[Callable[[str | None], None]]:
    """A spinner line showing the server's X-Progress while the export runs."""
    if not progress.enabled:
        yield lambda _text: None
        return
    from rich.progress import Progress as RichProgress
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    with RichProgress(SpinnerColumn(), TextColumn("[bold]export[/] {task.description}"),
                      TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("waiting for the server")

        def show(text: str | None) -> None:
            bar.update(task, description=text or "in progress")

        yield show


def hydrate_medications(engine: Engine, client: FhirClient, config: SiteConfig,
                        counts: StoreCounts) -> int:
    """Fetch by id the Medications that stored administrations reference and lack (Patient
    and Group exports cover the Patient compartment only); how many were fetched."""
    site, hydrated = config.name, 0
    if "Medication" not in config.resource_types:
        return 0
    wanted = referenced_medications(engine, site, config.base_url)
    missing = sorted(wanted - stored_ids(engine, site, "Medication"))
    if not missing:
        return 0
    caps = client.capabilities()
    if not caps.searchable("Medication"):
        log.warning("%d referenced Medication resources are missing and the server "
                    "offers no Medication search", len(missing))
        return 0
    for start in range(0, len(missing), MEDICATION_BATCH):
        batch = missing[start:start + MEDICATION_BATCH]
        for page in client.search("Medication", [("_id", ",".join(batch))]):
            page_counts = StoreCounts()
            with engine.begin() as conn:
                store = RawStore(conn)
                store.counts = page_counts
                store.base = config.base_url
                for resource in page.resources:
                    store.add(resource, site=site, source="Medication?_id")
                store.flush()
            merge_counts(counts, page_counts)
            hydrated += len(page.resources)
    log.info("fetched %d of %d referenced Medication resources the export lacked",
             hydrated, len(missing))
    return hydrated
