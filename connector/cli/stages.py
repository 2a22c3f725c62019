"""The stage commands: synth, run, extract, map, derive, analyze (``connector.pipeline``)."""

from __future__ import annotations

from pathlib import Path

import typer

from connector.cli.common import (
    BulkLevel,
    BulkLevelOpt,
    BulkOpt,
    BulkTimeoutOpt,
    DbOpt,
    GroupOpt,
    LoaderOpt,
    OutOpt,
    QuietOpt,
    Scope,
    ScopeOpt,
    SinceOpt,
    SiteOpt,
    SourceOpt,
    WorkDirOpt,
    _all_sites,
    _locked_sites,
    _normalized_sites,
    _open,
    _preflight,
    _progress,
    _resolve,
    _run_analyze,
    _run_derive,
    _run_extract,
    _run_map,
    _run_options,
    _site_names,
    app,
)


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
