"""What leaves the site and what is watched: merge, export, share, pool, status."""

from __future__ import annotations

from pathlib import Path

import typer

from connector.cli import stages  # noqa: F401  (registered first: first in the help)
from connector.cli.common import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_USAGE,
    AllowUnkeyedOpt,
    DateShiftOpt,
    DbOpt,
    OutOpt,
    QuietOpt,
    _fail,
    _open,
    _preflight,
    _progress,
    _site_names,
    app,
)


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
