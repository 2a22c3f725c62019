"""What ``--source`` names, resolved once: a folder, a FHIR server (REST) or its Bulk export.

The CLI argument (a folder, a base URL or a site config file) and the run's options
become one typed ``Source`` here, before anything is created: its ``sites`` are what
the run locks, maps, derives and reports, and ``extract`` loads it into the raw
store. The options travel as ``RunOptions`` (a dataclass), not as loose keywords;
``run_extract`` keeps the keyword form for the Python API and the tests.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.engine import Engine

from connector.extract.folder import find_files, site_of
from connector.extract.run import ExtractSummary, extract_folder
from connector.fhir.config import (
    SiteConfig,
    config_for_url,
    load_site_config,
    site_name_for_url,
    with_options,
)
from connector.fhir.errors import SiteConfigError
from connector.progress import Progress

if TYPE_CHECKING:
    from connector.extract.bulk_jobs import BulkSettings
    from connector.fhir.client import FhirClient

LOADERS = ("python", "duckdb")


@dataclass(frozen=True)
class BulkOptions:
    """How to ask for a Bulk Data ``$export`` (``--bulk`` and the options beside it)."""

    group: str | None = None  # export Group/[id]
    since: str | None = None  # _since: a date or instant; "full" for a full export
    level: str | None = None  # system | patient | group; None: chosen from the server
    timeout: float | None = None  # seconds to wait for the server in this run
    poll_max_wait: float | None = None  # cap on one wait (default retry.retry_after_cap)
    work_dir: str | Path | None = None  # download folder (default .bulk beside SQLite)
    type_filters: tuple[str, ...] = ()
    kickoff_method: str | None = None  # GET (default) or POST
    partial_manifests: bool = False
    keep_files: bool = False
    poll_policy: Any = None  # a connector.fhir.bulk.PollPolicy (tests: fast polling)


@dataclass(frozen=True)
class RunOptions:
    """A run's options: the CLI's, plus the site config settings an API caller overrides."""

    scope: str | None = None  # server: cohort | all | patients; folder: all | cohort
    loader: str | None = None  # python | duckdb; None: COHORT_LOADER, else python
    bulk: BulkOptions | None = None  # None: REST (a server) or a folder
    screen_terms: Any = None  # replaces the CAR-T screening terms read from mappings/
    #: site config settings for this run (``page_size``, ``rate_limit``, ``auth``, a
    #: ``[quirks]`` key...), applied by ``connector.fhir.config.with_options``
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_keywords(cls, options: Mapping[str, Any]) -> RunOptions:
        """The keyword form (``run_extract(..., bulk=True, page_size=7)``) as RunOptions."""
        rest = dict(options)
        scope, loader = rest.pop("scope", None), rest.pop("loader", None)
        screen_terms = rest.pop("screen_terms", None)
        bulk_keys = {"group": "group", "since": "since", "bulk_level": "level",
                     "bulk_timeout": "timeout", "poll_max_wait": "poll_max_wait",
                     "work_dir": "work_dir", "kickoff_method": "kickoff_method",
                     "partial_manifests": "partial_manifests", "keep_files": "keep_files",
                     "poll_policy": "poll_policy"}
        bulk = None
        if rest.pop("bulk", False):  # else a Bulk key is an unknown setting, said as such
            given = {bulk_keys[k]: rest.pop(k) for k in list(rest) if k in bulk_keys}
            type_filters = tuple(rest.pop("type_filter", None) or ())
            bulk = BulkOptions(type_filters=type_filters, **given)
        return cls(scope=scope, loader=loader, bulk=bulk, screen_terms=screen_terms,
                   settings=rest)


class Source(Protocol):
    """One resolved ``--source``: the sites it writes, and how to extract it."""

    @property
    def sites(self) -> tuple[str, ...]: ...

    def extract(self, engine: Engine, progress: Progress | None = None) -> ExtractSummary: ...


@dataclass(frozen=True)
class FolderSource:
    """A folder (or file) of NDJSON/Bundle files; its first folder level is the site."""

    root: Path
    site: str | None
    loader: str
    scope: str
    sites: tuple[str, ...]

    def extract(self, engine: Engine, progress: Progress | None = None) -> ExtractSummary:
        return extract_folder(engine, self.root, site=self.site, progress=progress,
                              loader=self.loader, scope=self.scope)


@dataclass(frozen=True)
class RestSource:
    """A FHIR server read with searches (connector/extract/remote.py)."""

    config: SiteConfig
    screen_terms: Any = None

    @property
    def sites(self) -> tuple[str, ...]:
        return (self.config.name,)

    def extract(self, engine: Engine, progress: Progress | None = None) -> ExtractSummary:
        from connector.extract.remote import RemoteExtraction  # the client stack, when needed

        return _with_client(self.config, lambda client: RemoteExtraction(
            engine, self.config, client, progress, self.screen_terms).run())


@dataclass(frozen=True)
class BulkSource:
    """A FHIR server's Bulk Data ``$export`` (connector/extract/bulk.py)."""

    config: SiteConfig
    settings: BulkSettings

    @property
    def sites(self) -> tuple[str, ...]:
        return (self.config.name,)

    def extract(self, engine: Engine, progress: Progress | None = None) -> ExtractSummary:
        from connector.extract.bulk import BulkExtraction

        return _with_client(self.config, lambda client: BulkExtraction(
            engine, self.config, client, self.settings, progress).run())


def source_kind(source: str) -> str:
    """``url``, ``config`` or ``folder``, from the form of ``--source``: the one place
    the argument is classified."""
    if source.startswith(("http://", "https://")):
        return "url"
    if source.endswith(".toml"):
        return "config"
    return "folder"


def resolve_source(source: str, site: str | None = None,
                   options: RunOptions | None = None) -> Source:
    """The typed source of ``--source``; SiteConfigError (or FileNotFoundError for a
    folder) when it and the options cannot make a run."""
    options = options or RunOptions()
    kind = source_kind(source)
    if kind == "folder":
        if options.bulk is not None:
            raise SiteConfigError("--bulk needs a FHIR server: --source URL or a site config")
        loader = _loader(options.loader)
        return _folder(Path(source), site, loader, _folder_scope(options.scope, loader))
    if options.bulk is not None:
        loader = _loader(options.loader)
        if options.scope is not None:
            raise SiteConfigError("--scope applies to REST extraction; a bulk export takes "
                                  "the whole server, the Patient compartment or a Group "
                                  "(--group ID)")
        config = site_config(source, kind, site, options.settings)
        return BulkSource(config, _bulk_settings(config, options.bulk, loader))
    if options.loader is not None and _loader(options.loader) != "python":
        raise SiteConfigError("--loader duckdb applies to folder and Bulk export sources")
    settings = dict(options.settings)
    if options.scope is not None:
        settings["scope"] = options.scope
    return RestSource(site_config(source, kind, site, settings), options.screen_terms)


def site_config(source: str, kind: str, site: str | None,
                settings: Mapping[str, Any]) -> SiteConfig:
    """The site config of a server source (``kind`` url or config) with this run's
    settings; ``site`` names the site (for a file, it overrides the file's name)."""
    settings = dict(settings)
    if kind == "url":
        config = config_for_url(source, site)
    else:
        config = load_site_config(source)
        if site:
            settings["name"] = site
    return with_options(config, settings)


def run_extract(engine: Engine, source: str, *, site: str | None = None,
                progress: Progress | None = None, **options: Any) -> ExtractSummary:
    """Extract from ``source`` into the raw store of ``engine`` (the keyword API:
    ``options`` as ``RunOptions.from_keywords`` reads them)."""
    return resolve_source(source, site, RunOptions.from_keywords(options)).extract(
        engine, progress)


def sites_for_source(source: str | None, site: str | None) -> list[str]:
    """The sites a run of ``source`` would write, even when it cannot run (to name its
    lock): ``--site`` wins; an invalid config file is still read for its ``name``."""
    if site:
        return [site]
    if not source:
        return ["*"]
    try:
        return list(resolve_source(source, None).sites)
    except (SiteConfigError, FileNotFoundError):
        pass
    kind = source_kind(source)
    if kind == "url":
        return [site_name_for_url(source.rstrip("/"))]
    if kind == "config":
        return [_toml_site(Path(source))]
    root = Path(source)
    return [root.name or "default"]


# ------------------------------------------------------------------ helpers


def _folder(root: Path, site: str | None, loader: str, scope: str) -> FolderSource:
    if not root.exists():
        raise FileNotFoundError(f"source folder not found: {root}")
    files = find_files(root)
    if not files:
        raise FileNotFoundError(f"no NDJSON or JSON files under {root}")
    sites = tuple(sorted({site_of(path, root, site) for path in files}))
    return FolderSource(root, site, loader, scope, sites)


def _with_client(config: SiteConfig,
                 run: Callable[[FhirClient], ExtractSummary]) -> ExtractSummary:
    """``run`` with a client of the site's server, closed whatever happens."""
    from connector.fhir.client import FhirClient

    client = FhirClient.for_site(config)
    try:
        return run(client)
    finally:
        client.close()


def _loader(value: object) -> str:
    """``python`` (the default) or ``duckdb``; ``COHORT_LOADER`` sets the default."""
    name = str(value or os.environ.get("COHORT_LOADER") or "python").strip().lower()
    if name not in LOADERS:
        raise SiteConfigError(f"--loader must be one of {', '.join(LOADERS)}")
    return name


def _folder_scope(value: object, loader: str) -> str:
    """A folder's scope: ``all`` (every patient, the default) or ``cohort`` (the DuckDB
    loader only: patients with a CAR-T record, screened in SQL)."""
    scope = str(value or "all").strip().lower()
    if scope not in ("all", "cohort"):
        raise SiteConfigError("--scope for a folder must be 'all' or 'cohort'")
    if scope == "cohort" and loader != "duckdb":
        raise SiteConfigError("--scope cohort for a folder needs --loader duckdb")
    return scope


def _bulk_settings(config: SiteConfig, options: BulkOptions, loader: str) -> BulkSettings:
    """The export's settings: poll policy from the site's retry settings unless given."""
    from connector.extract.bulk_jobs import BulkSettings
    from connector.fhir.bulk import PollPolicy

    policy = options.poll_policy or PollPolicy(max_wait=config.retry.retry_after_cap)
    if options.timeout is not None:
        policy.timeout = float(options.timeout)
    if options.poll_max_wait is not None:
        policy.max_wait = float(options.poll_max_wait)
    method = (options.kickoff_method or "GET").upper()
    if method not in ("GET", "POST"):
        raise SiteConfigError("kickoff_method must be GET or POST")
    level = options.level.lower() if options.level else None
    if level is not None and level not in ("system", "patient", "group"):
        raise SiteConfigError("--bulk-level must be system, patient or group")
    return BulkSettings(level=level, group_id=options.group, since=options.since,
                        type_filters=options.type_filters, method=method,
                        partial_manifests=options.partial_manifests,
                        work_dir=Path(options.work_dir) if options.work_dir else None,
                        keep_files=options.keep_files, poll=policy, loader=loader)


def _toml_site(path: Path) -> str:
    """The ``name`` of a config file the extraction cannot use, by a plain TOML read."""
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return f"config:{path.stem}"
    value = config.get("name") or config.get("site")
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) and value else f"config:{path.stem}"
