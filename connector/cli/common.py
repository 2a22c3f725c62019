"""Shared parts of the ``cohort`` command: the app, its options and the helpers every
subcommand uses (preflight, locks, exit codes, the stage calls).

Exit codes (stable, for schedulers): 0 success; 1 the run failed; 2 bad usage
or configuration; 3 the source could not be reached or refused us; 4 another
run holds the lock for this site and database.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from connector.progress import Progress, log_handler

if TYPE_CHECKING:
    from connector.extract.source import RunOptions, Source

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SOURCE, EXIT_LOCKED = 0, 1, 2, 3, 4

app = typer.Typer(
    name="cohort",
    help=(
        "Build a research cohort of myeloma patients who relapsed after BCMA CAR-T, "
        "from FHIR R4 data, and report their outcomes on later therapy.\n\n"
        "Stages: extract (FHIR → raw store) → map (→ normalized tables) → "
        "derive (→ cohort and lines of therapy) → analyze (→ report folder). "
        "`cohort run` does all of them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SourceOpt = typer.Option(
    ..., "--source", "-s",
    help="A folder of NDJSON/Bundle files (searched recursively), a FHIR base URL "
         "(http://…/fhir), or a site config file (*.toml).")


def _site_names(value: str | list[str] | None) -> str | list[str] | None:
    """Refuse a ``--site`` that could escape a folder (``..``, ``a/b``) before anything runs."""
    from connector.sitename import BadSiteName, check_site_name

    for name in [value] if isinstance(value, str) else (value or []):
        try:
            check_site_name(name, what="--site")
        except BadSiteName as exc:
            raise typer.BadParameter(str(exc).removeprefix("--site "), param_hint="'--site'"
                                     ) from None
    return value


SiteOpt = typer.Option(None, "--site", callback=_site_names,
                       help="Site name for the data (default: from the folder layout or the "
                            "config file).")
DbOpt = typer.Option("sqlite:///cohort.db", "--db", envvar="COHORT_DB",
                     help="Database URL: sqlite:///FILE or postgresql://…")
OutOpt = typer.Option(Path("report"), "--out", "-o", help="Report folder.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")
# Pseudonymization options shared by everything that leaves the site (merge, export).
DateShiftOpt = typer.Option(
    0, "--date-shift-days", envvar="COHORT_DATE_SHIFT_DAYS",
    help="Shift every date of a patient by a secret offset within ±N days (intervals "
         "kept). Needs COHORT_KEY_SECRET_FILE.")
AllowUnkeyedOpt = typer.Option(
    False, "--allow-unkeyed",
    help="Accept patient keys made without a secret (synthetic or test data only).")
class Scope(StrEnum):
    """What a run fetches (``--scope``); the help lists these."""

    cohort = "cohort"
    all = "all"
    patients = "patients"


class BulkLevel(StrEnum):
    """Which Bulk Data $export a run asks for (``--bulk-level``)."""

    system = "system"
    patient = "patient"
    group = "group"


def _plain(value: Enum | None) -> str | None:
    """A choice as the plain text the stages take (they compare and print strings)."""
    return value.value if isinstance(value, Enum) else value


ScopeOpt = typer.Option(None, "--scope", callback=_plain,
                        help="FHIR server sources: 'cohort' (patients with a CAR-T record; "
                        "the default), 'all' (every resource of the study's types) or "
                        "'patients' (patient_ids_file of the site config). "
                        "Folders: 'all' (the default) or, with --loader duckdb, 'cohort'.")
BulkOpt = typer.Option(False, "--bulk", help="FHIR server sources only: use Bulk Data $export "
                       "(resumable; incremental from the previous export's transactionTime).")
GroupOpt = typer.Option(None, "--group", metavar="ID",
                        help="Bulk: export Group/ID (implies --bulk).")
SinceOpt = typer.Option(None, "--since", help="Bulk: _since as a date or instant (default: the "
                        "previous export's transactionTime); 'full' for a full export.")
BulkLevelOpt = typer.Option(None, "--bulk-level", callback=_plain,
                            help="Bulk: system, patient or group (default: group with "
                            "--group, else system if offered, else patient).")
BulkTimeoutOpt = typer.Option(None, "--bulk-timeout", metavar="SECONDS",
                              help="Bulk: how long to wait for the server's export (default 24 h).")
LoaderOpt = typer.Option(None, "--loader",
                         help="Folder and Bulk sources: 'python' (the default; every line "
                         "parsed in Python) or 'duckdb' (DuckDB reads the NDJSON and drops "
                         "Observations no lab code maps before Python sees them, keeping "
                         "only their counts per code; see docs/bulk.md). Default: the "
                         "COHORT_LOADER environment variable, else python.")
WorkDirOpt = typer.Option(None, "--work-dir", help="Bulk: download folder (default: .bulk "
                          "beside a SQLite database, else in the current directory).")


def _progress(quiet: bool) -> Progress:
    return Progress(enabled=not quiet and sys.stderr.isatty())


def _setup_logging(verbose: bool) -> None:
    """Log lines through rich's handler on the bars' console on a terminal (so a line
    written while a bar runs lands above it, whole), plain lines otherwise."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=[log_handler(rich=sys.stderr.isatty())])
    # Migration chatter is noise to a data team; show it only with --verbose.
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _version(value: bool) -> None:
    if value:
        import connector

        typer.echo(f"cohort {connector.__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    _setup_logging(verbose)


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(code)



# ----------------------------------------------------------------- helpers


def _preflight(source: str | None = None, site: str | None = None, *, bulk: bool = False,
               out: Path | None = None) -> None:
    """Check the source and the output before anything is created; exit 2 if one is wrong."""
    from connector.preflight import PreflightError, check_out_folder, check_source

    try:
        if source is not None:
            check_source(source, site, bulk=bulk)
        if out is not None:
            check_out_folder(out)
    except PreflightError as exc:
        _fail(str(exc), EXIT_USAGE)


def _resolve(source: str, site: str | None, options: RunOptions) -> Source:
    """``--source`` and the run's options as one typed source, whose sites the run writes
    (and locks, maps, derives and reports); exit 2 when they cannot make a run."""
    from connector.extract.source import resolve_source
    from connector.fhir.errors import SiteConfigError

    try:
        return resolve_source(source, site, options)
    except (FileNotFoundError, SiteConfigError) as exc:
        _fail(str(exc), EXIT_USAGE)
        raise  # not reached: _fail exits


@contextmanager
def _locked_sites(engine, sites: list[str]) -> Iterator[None]:  # noqa: ANN001
    """Hold the lock of each of ``sites``; exit 4 if another run holds one, or if another
    process keeps the SQLite database's write lock past the busy timeout."""
    from connector.lock import LockHeld, site_locks

    try:
        with site_locks(engine, sites):
            yield
    except LockHeld as exc:
        _fail(f"{exc}; not starting (exit {EXIT_LOCKED}: try again when it has finished)",
              EXIT_LOCKED)
    except Exception as exc:
        _fail_if_busy(exc)
        raise


def _fail_if_busy(exc: BaseException) -> None:
    """Exit 4 with a message when ``exc`` is SQLite's "database is locked"."""
    from connector.db.engine import database_busy, sqlite_busy_seconds

    if database_busy(exc):
        _fail(f"the database is busy: another process held its write lock for more than "
              f"{sqlite_busy_seconds():g} s (COHORT_SQLITE_BUSY_SECONDS); stopped here, what "
              f"was committed stays and the next run resumes (exit {EXIT_LOCKED}: try again "
              "when it has finished)", EXIT_LOCKED)


def _normalized_sites(engine) -> list[str]:  # noqa: ANN001
    from sqlalchemy import select

    from connector.db.models import Patient

    with engine.connect() as conn:
        return sorted(conn.execute(select(Patient.site).distinct()).scalars())


def _all_sites(engine) -> list[str]:  # noqa: ANN001
    """Every site with rows in the raw store, the normalized or the derived tables."""
    from sqlalchemy import select

    from connector.db.models import CohortPatient
    from connector.mapping.run import raw_sites

    with engine.connect() as conn:
        derived = set(conn.execute(select(CohortPatient.site).distinct()).scalars())
    return sorted(set(raw_sites(engine)) | set(_normalized_sites(engine)) | derived)


def _open(db: str):  # noqa: ANN202
    from connector.pipeline import open_db

    try:
        return open_db(db)
    except Exception as exc:  # noqa: BLE001
        _fail_if_busy(exc)
        _fail(f"cannot open database: {type(exc).__name__}: {exc}", EXIT_USAGE)


def _run_options(scope: str | None, loader: str | None, bulk: bool, group: str | None,
                 since: str | None, level: str | None, timeout: float | None,
                 work_dir: Path | None) -> RunOptions:
    """The extraction's options, typed (``--group`` implies ``--bulk``)."""
    from connector.extract.source import BulkOptions, RunOptions

    given = {"group": group, "since": since, "bulk_level": level, "bulk_timeout": timeout,
             "work_dir": str(work_dir) if work_dir else None}
    given = {k: v for k, v in given.items() if v is not None}
    if not (bulk or group):
        if given:
            _fail(f"--{next(iter(given)).replace('_', '-')} applies to Bulk Data export; add "
                  "--bulk", EXIT_USAGE)
        return RunOptions(scope=scope or None, loader=loader or None)
    return RunOptions(scope=scope or None, loader=loader or None,
                      bulk=BulkOptions(group=group, since=since, level=level, timeout=timeout,
                                       work_dir=work_dir))


def _run_extract(engine, source: Source, progress: Progress) -> None:  # noqa: ANN001
    from connector import pipeline
    from connector.fhir.errors import FhirSourceError, SiteConfigError

    try:
        summary = pipeline.extract(engine, source, progress=progress)
    except (FileNotFoundError, SiteConfigError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except FhirSourceError as exc:
        _fail(str(exc), EXIT_SOURCE)
    typer.echo(f"extract: {summary.read} read, {summary.counts.stored} stored, "
               f"{summary.quarantined} quarantined ({', '.join(summary.sites)})")


def _run_map(engine, sites: list[str], progress: Progress) -> None:  # noqa: ANN001
    from connector import pipeline

    summary = pipeline.map_(engine, sites=sites, progress=progress)
    typer.echo(f"map: {summary}")


def _run_derive(engine, sites: list[str], progress: Progress) -> None:  # noqa: ANN001
    from connector import pipeline

    summary = pipeline.derive(engine, sites=sites, progress=progress)
    typer.echo(f"derive: {summary}")


def _run_analyze(engine, out: Path, progress: Progress,  # noqa: ANN001
                 sites: list[str] | None = None) -> None:
    from connector import pipeline

    results = pipeline.analyze(engine, out, sites=sites, progress=progress)
    typer.echo(f"analyze: {results.get('n_patients')} patients, "
               f"{results.get('n_lines')} lines; report in {out}/")
