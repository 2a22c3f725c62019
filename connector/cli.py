"""The ``cohort`` command: one thin subcommand per stage over ``connector.pipeline``.

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


@app.command()
def synth(
    patients: int = typer.Option(79, "--patients", "-n", help="Patients in the study cohort."),
    sites: int = typer.Option(2, "--sites", help="Number of sites."),
    seed: int = typer.Option(2023, "--seed", help="Random seed (same seed, same files)."),
    out: Path = typer.Option(Path("synthetic"), "--out", "-o", help="Output folder."),
    noise: bool = typer.Option(True, "--noise/--no-noise",
                               help="Add the noise of a real extract (duplicates, "
                                    "excluded patients, entered-in-error records...)."),
) -> None:
    """Write a synthetic multi-site FHIR R4 cohort and its ground truth.

    Writes OUT/<site>/<ResourceType>.ndjson per site and OUT/ground_truth.json.
    Calibrated to the published figures of Van Oekelen et al., Blood 2023.
    """
    from connector.synth import synthesize

    truth = synthesize(n_patients=patients, n_sites=sites, seed=seed, out_dir=out, noise=noise)
    n_in = sum(1 for p in truth["patients"] if p["in_cohort"])
    typer.echo(f"wrote {len(truth['patients'])} patients ({n_in} in the cohort) to {out}")


@app.command()
def run(
    source: str = SourceOpt,
    site: str | None = SiteOpt,
    db: str = DbOpt,
    out: Path = OutOpt,
    quiet: bool = QuietOpt,
    scope: Scope | None = ScopeOpt,
    bulk: bool = BulkOpt, group: str | None = GroupOpt, since: str | None = SinceOpt,
    bulk_level: BulkLevel | None = BulkLevelOpt, bulk_timeout: float | None = BulkTimeoutOpt,
    work_dir: Path | None = WorkDirOpt,
    loader: str | None = LoaderOpt,
) -> None:
    """Run every stage: extract, map, derive, analyze, and write the report folder."""
    options = _run_options(scope, loader, bulk, group, since, bulk_level, bulk_timeout,
                           work_dir)
    _preflight(source, site, bulk=options.bulk is not None, out=out)
    resolved = _resolve(source, site, options)
    progress = _progress(quiet)
    engine = _open(db)
    sites = list(resolved.sites)
    with _locked_sites(engine, sites):
        # Only the sites this run holds the locks of: another run may be loading the rest.
        _run_extract(engine, resolved, progress)
        _run_map(engine, sites, progress)
        _run_derive(engine, sites, progress)
        _run_analyze(engine, out, progress, sites=sites)


@app.command()
def extract(source: str = SourceOpt, site: str | None = SiteOpt, db: str = DbOpt,
            quiet: bool = QuietOpt, scope: Scope | None = ScopeOpt,
            bulk: bool = BulkOpt, group: str | None = GroupOpt, since: str | None = SinceOpt,
            bulk_level: BulkLevel | None = BulkLevelOpt,
            bulk_timeout: float | None = BulkTimeoutOpt,
            work_dir: Path | None = WorkDirOpt, loader: str | None = LoaderOpt) -> None:
    """Extract FHIR resources from the source into the raw store (with provenance)."""
    options = _run_options(scope, loader, bulk, group, since, bulk_level, bulk_timeout,
                           work_dir)
    _preflight(source, site, bulk=options.bulk is not None)
    resolved = _resolve(source, site, options)
    engine = _open(db)
    with _locked_sites(engine, list(resolved.sites)):
        _run_extract(engine, resolved, _progress(quiet))


@app.command("map")
def map_cmd(
    site: str | None = SiteOpt,
    db: str = DbOpt,
    unmapped: Path | None = typer.Option(
        None, "--unmapped", help="Also write the codes seen but not mapped to this CSV file."),
    quiet: bool = QuietOpt,
) -> None:
    """Map raw resources to normalized tables using the code sets in mappings/."""
    engine = _open(db)
    from connector.mapping.run import raw_sites

    sites = [site] if site else raw_sites(engine)
    with _locked_sites(engine, sites):
        _run_map(engine, sites, _progress(quiet))
    if unmapped is not None:
        from connector.mapping import write_unmapped

        n = write_unmapped(engine, unmapped)
        typer.echo(f"unmapped: {n} codes written to {unmapped}")


@app.command()
def derive(site: str | None = SiteOpt, db: str = DbOpt, quiet: bool = QuietOpt) -> None:
    """Derive the cohort: index CAR-T, progression, lines of therapy, responses."""
    engine = _open(db)
    sites = [site] if site else _normalized_sites(engine)
    with _locked_sites(engine, sites):
        _run_derive(engine, sites, _progress(quiet))


@app.command()
def analyze(
    db: str = DbOpt, out: Path = OutOpt, quiet: bool = QuietOpt,
    site: list[str] = typer.Option(
        None, "--site", callback=_site_names,
        help="Report only this site (repeatable). Default: every site of the database, "
             "whose locks it takes (exit 4 while a run of any of them is going)."),
) -> None:
    """Analyse outcomes and write the report folder (results.json, report.html, CSVs, plots)."""
    _preflight(out=out)
    engine = _open(db)
    sites = list(site) if site else _all_sites(engine)
    with _locked_sites(engine, sites):
        _run_analyze(engine, out, _progress(quiet), sites=list(site) if site else None)


@app.command()
def merge(
    site_dbs: list[str] = typer.Argument(
        ..., metavar="SITE_DB...",
        help="Site databases: SQLite files (or sqlite:///FILE) or postgresql://… URLs "
             "(one schema per site with ?options=-csearch_path%3DSCHEMA)."),
    into: str = typer.Option(..., "--into", envvar="COHORT_CENTRAL_DB",
                             help="The database to merge into: postgresql://… (central) or "
                                  "sqlite:///FILE (a share file to send)."),
    site: list[str] = typer.Option(
        None, "--site", callback=_site_names, help="Merge only this site (repeatable)."),
    date_shift_days: int = DateShiftOpt,
    allow_unkeyed: bool = AllowUnkeyedOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Merge site databases into one cohort database, pseudonymized, one site at a time.

    Copies the normalized and derived tables (never raw resources) with every id
    replaced by a keyed pseudonym and free text removed. A site sent again
    replaces its own rows only, in one transaction. The key secret comes from
    the file named by COHORT_KEY_SECRET_FILE, never from the command line.
    """
    from connector.keys import SecretError, load_secret
    from connector.lock import LockHeld
    from connector.merge import MergeRefused, db_url_of, merge_sites

    try:
        secret = load_secret()
        sources = [_open(db_url_of(spec)) for spec in site_dbs]
    except (SecretError, MergeRefused) as exc:
        _fail(str(exc), EXIT_USAGE)
    target = _open(into)
    try:
        done = merge_sites(target, sources, sites=site or None, secret=secret,
                           date_shift_days=date_shift_days, allow_unkeyed=allow_unkeyed,
                           progress=_progress(quiet))
    except MergeRefused as exc:
        _fail(f"merge refused, nothing written: {exc}", EXIT_USAGE)
    except LockHeld as exc:
        _fail(f"{exc}; nothing merged (exit {EXIT_LOCKED}: try again later)", EXIT_LOCKED)
    for d in done:
        rows = ", ".join(f"{n} {t}" for t, n in d.rows.items())
        typer.echo(f"merge: site {d.site} from {d.source}: {rows}"
                   f" (keyed: {'yes' if d.keyed else 'NO'}, date shift ±{d.date_shift_days} d)")


@app.command("export")
def export_cmd(
    fmt: str = typer.Option(..., "--format", "-f", metavar="parquet|csv|omop",
                            help="parquet (typed; for R arrow, DuckDB, pandas), csv, or omop "
                                 "(OMOP CDM 5.4 tables with oncology episodes)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for the files (created). "
                                    "With --into, only the OMOP reports go here."),
    into: str | None = typer.Option(None, "--into", help="omop only: load the CDM tables into "
                                    "this PostgreSQL schema (postgresql://…?options="
                                    "-csearch_path%3DSCHEMA) instead of CSV files."),
    db: str = DbOpt,
    site: list[str] = typer.Option(
        None, "--site", callback=_site_names, help="Export only this site (repeatable)."),
    date_shift_days: int = DateShiftOpt,
    allow_unkeyed: bool = AllowUnkeyedOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Export the cohort for researchers: tables with a data dictionary, or OMOP CDM 5.4.

    parquet/csv: the normalized tables, the derived tables, the analysis-ready tables
    (analysis_patient, analysis_line: os/pfs/ttnt months and events, response flags),
    data_dictionary.csv and manifest.json. omop: person, observation_period,
    drug_exposure, procedure_occurrence, measurement, death, episode, episode_event as
    CSV or into PostgreSQL, concepts from mappings/omop_concepts.csv, and
    omop_concept_zero.csv naming every value written with concept id 0. Pseudonymized
    as by `cohort merge`: patient keys, never source ids; no free text. See docs/export.md.
    """
    if fmt not in ("parquet", "csv", "omop"):
        _fail(f"--format must be parquet, csv or omop, not {fmt!r}", EXIT_USAGE)
    if into is not None and fmt != "omop":
        _fail("--into applies to --format omop only", EXIT_USAGE)
    if out is None and into is None:
        _fail("give --out DIR" + (" or --into postgresql://…" if fmt == "omop" else ""),
              EXIT_USAGE)
    if out is not None:
        _preflight(out=out)
    engine = _open(db)
    options = {"sites": site or None, "date_shift_days": date_shift_days,
               "allow_unkeyed": allow_unkeyed, "progress": _progress(quiet)}
    if fmt == "omop":
        from connector.export import export_omop

        target = _open(into) if into else None
        summary = _export(lambda secret: export_omop(engine, out=out, into=target,
                                                     secret=secret, **options))
    else:
        from connector.export import export_files

        summary = _export(lambda secret: export_files(engine, out, fmt, secret=secret,
                                                      **options))
    rows = ", ".join(f"{n} {t}" for t, n in summary.rows.items())
    where = f"{out}/" if into is None else "the PostgreSQL schema"
    typer.echo(f"export: {summary.format} to {where}: {rows}"
               f" (sites {', '.join(summary.sites)}; keyed: {'yes' if summary.keyed else 'NO'})")
    if summary.zero_rows:
        zero = ", ".join(f"{n} {t}" for t, n in summary.zero_rows.items())
        typer.echo(f"export: rows with concept id 0: {zero}"
                   + (f" (values in {out}/omop_concept_zero.csv)" if out else ""))
    for reason, n in summary.left_out.items():
        typer.echo(f"export: left out {n}: {reason}")


def _export(call):  # noqa: ANN001, ANN202
    """Run an export, turning a refusal (the site may not leave as asked) into exit 2."""
    from connector.export.omop_concepts import ConceptFileError
    from connector.keys import SecretError, load_secret
    from connector.merge import MergeRefused

    try:
        return call(load_secret())
    except (SecretError, MergeRefused, ConceptFileError, ValueError) as exc:
        _fail(f"export refused, nothing written: {exc}", EXIT_USAGE)


@app.command()
def share(
    out: Path = typer.Option(..., "--out", "-o", help="The share file to write "
                             "(e.g. site_a.agg.json)."),
    db: str = DbOpt,
    site: list[str] = typer.Option(
        None, "--site", callback=_site_names, help="Only this site (repeatable)."),
    min_cell: int = typer.Option(5, "--min-cell", min=0,
                                 help="Small-cell threshold: counts from 1 to N-1 are not "
                                      "published (event tables coarsened, counts withheld); "
                                      "0 or 1 publishes every count."),
) -> None:
    """Write a site's results as aggregates only, for federated pooling (`cohort pool`).

    Event/risk tables per group (first-line, all-lines and TCE-kind PFS; OS by ever
    TCE) in whole days from each patient's own start, and response counts. No patient
    rows, keys or dates; small cells withheld. See docs/federated.md.
    """
    from connector.federated import share_from_db

    try:
        content = share_from_db(_open(db), out, sites=site or None, min_cell=min_cell)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    touched = sorted({f"{name} {s}/{g}" for name, block in content["survival"].items()
                      for s, groups in block["sites"].items() for g, t in groups.items()
                      if t["coarsened"]})
    typer.echo(f"share: {', '.join(content['sites'])} to {out} (min cell {min_cell}; "
               f"{len(touched)} tables coarsened or suppressed)")


@app.command("pool")
def pool_cmd(
    shares: list[Path] = typer.Argument(..., metavar="SHARE_FILE...",
                                        help="Share files written by `cohort share`."),
    out: Path = OutOpt,
) -> None:
    """Pool sites' share files: KM curves and medians, log-rank, Cox, response rates.

    Equal to the patient-level analysis of the merged sites when no cell was
    suppressed; what differs otherwise is in pooled_report.md and docs/federated.md.
    """
    from connector.federated import PoolRefused, load_share, pool, write_pooled

    _preflight(out=out)
    try:
        pooled = pool([load_share(path) for path in shares])
    except PoolRefused as exc:
        _fail(f"pool refused: {exc}", EXIT_USAGE)
    files = write_pooled(pooled, out)
    results = pooled.results
    typer.echo(f"pool: {results['n_sites']} sites, {results['n_patients']['value']} patients; "
               f"{len(files)} files in {out}/")


@app.command()
def status(
    db: str = DbOpt,
    site: list[str] = typer.Option(
        None, "--site", callback=_site_names, help="Only this site (repeatable)."),
    runs: int = typer.Option(5, "--runs", help="How many recent runs to show per site."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    fail_on_error: bool = typer.Option(
        False, "--fail-on-error",
        help="Exit 1 when a site's newest run failed or was interrupted (for monitoring)."),
) -> None:
    """Show each site's recent runs, counts, watermarks, failures and whether one is running."""
    import json

    from connector.status import collect_status, format_status, status_dict

    if db.startswith("sqlite:///") and not Path(db.removeprefix("sqlite:///")).exists():
        _fail(f"no database at {db}", EXIT_USAGE)
    statuses = collect_status(_open(db), sites=site or None, last=max(runs, 1))
    if as_json:
        typer.echo(json.dumps(status_dict(statuses), indent=2))
    else:
        typer.echo(format_status(statuses))
    if fail_on_error and not all(s.healthy for s in statuses):
        raise typer.Exit(EXIT_FAILED)


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


if __name__ == "__main__":
    app()
