"""The ``cohort`` command: one thin subcommand per stage over ``connector.pipeline``.

Exit codes (stable, for schedulers): 0 success; 1 the run failed; 2 bad usage
or configuration; 3 the source could not be reached or refused us; 4 another
run holds the lock for this site and database.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from connector.progress import Progress

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
SiteOpt = typer.Option(None, "--site", help="Site name for the data (default: from the "
                       "folder layout or the config file).")
DbOpt = typer.Option("sqlite:///cohort.db", "--db", envvar="COHORT_DB",
                     help="Database URL: sqlite:///FILE or postgresql://…")
OutOpt = typer.Option(Path("report"), "--out", "-o", help="Report folder.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _progress(quiet: bool) -> Progress:
    return Progress(enabled=not quiet and sys.stderr.isatty())


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
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
) -> None:
    """Run every stage: extract, map, derive, analyze, and write the report folder."""
    from connector import pipeline

    progress = _progress(quiet)
    engine = _open(db)
    _run_extract(engine, source, site, progress)
    _run_map(engine, site, progress)
    _run_derive(engine, site, progress)
    _run_analyze(engine, out, progress)
    del pipeline


@app.command()
def extract(source: str = SourceOpt, site: str | None = SiteOpt, db: str = DbOpt,
            quiet: bool = QuietOpt) -> None:
    """Extract FHIR resources from the source into the raw store (with provenance)."""
    _run_extract(_open(db), source, site, _progress(quiet))


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
    _run_map(engine, site, _progress(quiet))
    if unmapped is not None:
        from connector.mapping import write_unmapped

        n = write_unmapped(engine, unmapped)
        typer.echo(f"unmapped: {n} codes written to {unmapped}")


@app.command()
def derive(site: str | None = SiteOpt, db: str = DbOpt, quiet: bool = QuietOpt) -> None:
    """Derive the cohort: index CAR-T, progression, lines of therapy, responses."""
    _run_derive(_open(db), site, _progress(quiet))


@app.command()
def analyze(db: str = DbOpt, out: Path = OutOpt, quiet: bool = QuietOpt) -> None:
    """Analyse outcomes and write the report folder (results.json, report.html, CSVs, plots)."""
    _run_analyze(_open(db), out, _progress(quiet))


# ----------------------------------------------------------------- helpers


def _open(db: str):  # noqa: ANN202
    from connector.pipeline import open_db

    try:
        return open_db(db)
    except Exception as exc:  # noqa: BLE001
        _fail(f"cannot open database: {type(exc).__name__}: {exc}", EXIT_USAGE)


def _run_extract(engine, source: str, site: str | None, progress: Progress) -> None:  # noqa: ANN001
    from connector import pipeline

    try:
        summary = pipeline.extract(engine, source, site=site, progress=progress)
    except FileNotFoundError as exc:
        _fail(str(exc), EXIT_USAGE)
    typer.echo(f"extract: {summary.read} read, {summary.counts.stored} stored, "
               f"{summary.quarantined} quarantined ({', '.join(summary.sites)})")


def _run_map(engine, site: str | None, progress: Progress) -> None:  # noqa: ANN001
    from connector import pipeline

    summary = pipeline.map_(engine, site=site, progress=progress)
    typer.echo(f"map: {summary}")


def _run_derive(engine, site: str | None, progress: Progress) -> None:  # noqa: ANN001
    from connector import pipeline

    summary = pipeline.derive(engine, site=site, progress=progress)
    typer.echo(f"derive: {summary}")


def _run_analyze(engine, out: Path, progress: Progress) -> None:  # noqa: ANN001
    from connector import pipeline

    results = pipeline.analyze(engine, out, progress=progress)
    typer.echo(f"analyze: {results.get('n_patients')} patients, "
               f"{results.get('n_lines')} lines; report in {out}/")


if __name__ == "__main__":
    app()
