"""The five sections of a run; each measures in child processes and adds figures."""

from __future__ import annotations

import hashlib
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.figures import Report, Target
from benchmarks.labheavy import make_lab_heavy
from benchmarks.measure import ChildRun, run_task
from benchmarks.plan import Plan, RestCohort
from connector.fhir.config import DEFAULT_RESOURCE_TYPES

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fixtures" / "cohort"
REST_TYPES = ("Patient", "MedicationAdministration", "Procedure", "Observation")
#: What ``--scope all`` reads by default, and so what its baseline pages.
ALL_TYPES = DEFAULT_RESOURCE_TYPES
#: The extractor's defaults except the politeness limit (10 requests/s), which would
#: measure the limit, not the extractor: a local server needs none.
REST_OPTIONS: dict[str, Any] = {"rate_limit": 0, "site": "bench"}
REST_CONCURRENCY = 4  # the extractor's default ``concurrency``
MB_TARGET = 400
BYTES_PER_RESOURCE = 692  # lab-heavy data, measured


@dataclass
class Context:
    plan: Plan
    work: Path
    cache: Path
    report: Report
    shared: dict[str, Any] = field(default_factory=dict)


def _rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def _mem_note(run: ChildRun) -> str:
    return f"main process {run.peak_rss_mb:.0f} MB"


# ------------------------------------------------------------------ (a) REST


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.ndjson")):
        h.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _rest_folder(ctx: Context, cohort: RestCohort) -> Path:
    if cohort.patients is None:
        return FIXTURE
    from connector.synth import synthesize

    folder = ctx.work / f"rest-{cohort.patients}-{cohort.seed}"
    if not folder.exists():
        synthesize(cohort.patients, 2, cohort.seed, folder)
    return folder


@dataclass
class RestRun:
    folder: Path
    full: ChildRun
    raw: ChildRun
    incremental: ChildRun | None = None
    server_url: str = ""


def _rest_runs(ctx: Context, cohort: RestCohort, *, incremental: bool,
               type_paging: bool = False) -> RestRun:
    from benchmarks import server

    folder = _rest_folder(ctx, cohort)
    store, n = server.cached_store(folder, f"{folder.name}:{_digest(folder)}", ctx.cache)
    srv = server.start(store)
    try:
        tag = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
        db = ctx.work / f"rest-{tag}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        chains = ctx.work / f"chains-{tag}.json"
        full = run_task("rest_extract", {"url": srv.base_url, "db": str(db),
                                         "options": REST_OPTIONS, "record": str(chains)})
        raw = run_task("raw_paging", {"chains": str(chains), "concurrency": REST_CONCURRENCY})
        run = RestRun(folder, full, raw, server_url=srv.base_url)
        if incremental:
            run.incremental = run_task("rest_extract", {"url": srv.base_url, "db": str(db),
                                                        "options": REST_OPTIONS})
        if type_paging:
            run.full.extra["type_paging"] = run_task(
                "type_paging", {"url": srv.base_url, "types": list(REST_TYPES),
                                "page_size": 200})
        run.full.extra["server_resources"] = n
        return run
    finally:
        srv.stop()


def section_a(ctx: Context) -> None:
    r = ctx.report
    r.heading(f"(a) REST extraction from a local sekmet-fhir (load {machine.load_average()})")
    for i, cohort in enumerate(ctx.plan.rest_cohorts):
        run = _rest_runs(ctx, cohort, incremental=i == 0, type_paging=i == 0)
        if i == 0:
            ctx.shared["rest_default"] = run
        read = run.full.result["read"]
        t_ext, t_raw = run.full.result["seconds"], run.raw.result["seconds"]
        ext_rate, raw_rate = _rate(read, t_ext), _rate(read, t_raw)
        r.add("a", f"{cohort.label}: extraction, {read:,} resources", ext_rate, "res/s",
              note=f"{t_ext:.1f} s, {run.full.result['requests']} requests, "
                   f"server holds {run.full.extra['server_resources']:,}")
        r.add("a", f"{cohort.label}: raw paging of the same searches", raw_rate, "res/s",
              note=f"{t_raw:.1f} s, {run.raw.result['requests']} requests, "
                   f"{REST_CONCURRENCY} threads, plain HTTP")
        r.add("a", f"{cohort.label}: extraction / raw paging", _rate(t_raw, t_ext), "ratio",
              target=Target(">=", 0.8))
        typed = run.full.extra.get("type_paging")
        if typed:
            res = typed.result
            r.add("a", f"{cohort.label}: whole-type paging (Type?_count=200), for scale",
                  _rate(res["entries"], res["seconds"]), "res/s",
                  note=f"{res['entries']:,} resources, {res['requests']} pages, one thread")
        if i == 0:
            _rest_scope_all(ctx)


def section_a_all(ctx: Context) -> None:
    """Only the ``--scope all`` figure of (a) (``--only a-all``)."""
    ctx.report.heading(f"(a) --scope all from a local sekmet-fhir "
                       f"(load {machine.load_average()})")
    _rest_scope_all(ctx)


def _rest_scope_all(ctx: Context) -> None:
    """``--scope all`` with the extractor's defaults (politeness limits and page size
    included) against single-stream ``Type?_count=1000`` paging of the same types on the
    same server, in rounds that alternate which goes first (the machine is shared: a
    ratio is only taken within a round; the target is checked on the median)."""
    from benchmarks import server

    r = ctx.report
    cohort = ctx.plan.rest_cohorts[0]
    folder = _rest_folder(ctx, cohort)
    store, n = server.cached_store(folder, f"{folder.name}:{_digest(folder)}", ctx.cache)
    srv = server.start(store)
    ratios: list[float] = []
    try:
        for round_no in range(1, ctx.plan.scope_all_rounds + 1):
            ratios.append(_scope_all_round(ctx, srv.base_url, round_no, n))
    finally:
        srv.stop()
    r.add("a", f"{cohort.label}: --scope all / single-stream _count=1000 paging, median of "
          f"{len(ratios)}", statistics.median(ratios), "ratio", target=Target(">=", 1.0),
          note="rounds: " + ", ".join(f"{x:.3f}" for x in ratios))


def _scope_all_round(ctx: Context, url: str, round_no: int, held: int) -> float:
    """One round: the baseline and the extraction (odd rounds the baseline first)."""
    db = ctx.work / f"rest-scope-all-{round_no}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    def paging() -> dict[str, Any]:
        return run_task("type_paging", {"url": url, "types": list(ALL_TYPES),
                                        "page_size": 1000}).result

    def extraction() -> dict[str, Any]:
        return run_task("rest_extract", {"url": url, "db": str(db),
                                         "options": {"site": "bench", "scope": "all"}}).result

    if round_no % 2:
        base, res = paging(), extraction()
    else:
        res, base = extraction(), paging()
    ext_rate = _rate(res["read"], res["seconds"])
    raw_rate = _rate(base["entries"], base["seconds"])
    ratio = _rate(ext_rate, raw_rate)
    ctx.report.add(
        "a", f"--scope all / single-stream _count=1000 paging, round {round_no}", ratio,
        "ratio", note=f"extraction {ext_rate:,.0f} res/s ({res['read']:,} resources in "
                      f"{res['seconds']:.2f} s, client CPU {res['cpu_s']:.2f} s, "
                      f"{res['requests']} requests, page size {res.get('page_size')}, rate "
                      f"limit {res.get('rate_limit')} requests/s, waited on it "
                      f"{res.get('rate_limit_wait')} s); paging {raw_rate:,.0f} res/s "
                      f"({base['entries']:,} in {base['seconds']:.2f} s, client CPU "
                      f"{base['cpu_s']:.2f} s, {base['requests']} pages, one thread, plain "
                      f"HTTP); server holds {held:,}")
    return ratio


# ------------------------------------------------------------------ (b) folder


#: (b)'s two load paths: (loader, label, res/s target at every size, res/s target at the
#: largest size only). The DuckDB path's target (issue 17) is taken at 1M resources.
LOADERS = (("python", "Python loader", 50_000, None),
           ("duckdb", "DuckDB loader", None, 100_000))


@dataclass
class _LoaderRuns:
    rates: list[tuple[str, float]] = field(default_factory=list)
    peaks: list[tuple[int, float]] = field(default_factory=list)
    mains: list[float] = field(default_factory=list)


def section_b(ctx: Context) -> None:
    r = ctx.report
    r.heading(f"(b) folder NDJSON → normalized database, lab-heavy "
              f"(load {machine.load_average()})")
    sizes = ctx.plan.folder_sizes
    runs = {loader: _LoaderRuns() for loader, *_ in LOADERS}
    largest: Path | None = None
    for size in sizes:
        folder = ctx.work / f"lab-{size}"
        data = make_lab_heavy(folder, size, seed=11)
        label = f"{_size(data.resources)} resources ({data.unused_fraction:.0%} unused Obs.)"
        for loader, name, target, largest_target in LOADERS:
            _load_once(ctx, folder, data.resources, label, size == max(sizes), loader, name,
                       target, largest_target, runs[loader])
        if size == max(sizes):
            largest = folder
        else:
            shutil.rmtree(folder, ignore_errors=True)
    for loader, name, *_ in LOADERS:
        # flat: the two largest sizes (the smallest loads too little to start the map
        # stage's validation workers, so it is no fair base)
        got = runs[loader]
        (n1, small), (n2, big) = got.peaks[-2], got.peaks[-1]
        r.add("b", f"{name}: memory growth {_size(n1)} → {_size(n2)} resources "
              "(flat = under 1.25×)", big / small if small else None, "×",
              target=Target("<", 1.25, "1.25×"),
              note=f"main process {got.mains[-2]:.0f} → {got.mains[-1]:.0f} MB")
    assert largest is not None
    base = run_task("validate_all", {"folder": str(largest), "limit": ctx.plan.validate_sample})
    b = base.result
    base_rate = _rate(b["read"], b["seconds"])
    r.add("b", "baseline: parse + validate everything with fhir.resources R4B", base_rate,
          "res/s", note=f"{b['read']:,} resources sampled from the "
                        f"{_size(runs['python'].peaks[-1][0])} set, one process, "
                        f"{b['invalid']} invalid")
    for loader, name, *_ in LOADERS:
        for label, rate in runs[loader].rates:
            r.add("b", f"{name}, {label}: extract + map / baseline", _rate(rate, base_rate),
                  "×", target=Target(">=", 3, "3×") if loader == "python" else None)
    for (label, py), (_, duck) in zip(runs["python"].rates, runs["duckdb"].rates, strict=True):
        r.add("b", f"{label}: DuckDB loader / Python loader", _rate(duck, py), "×")
    shutil.rmtree(largest, ignore_errors=True)


def _load_once(ctx: Context, folder: Path, resources: int, label: str, is_largest: bool,
               loader: str, name: str, target: int | None, largest_target: int | None,
               into: _LoaderRuns) -> None:
    """One extract + map of ``folder`` in its own child process, and its figures."""
    r = ctx.report
    db = ctx.work / f"lab-{loader}.db"
    run = run_task("folder_load", {"folder": str(folder), "db": str(db), "loader": loader})
    res = run.result
    rate = _rate(res["read"], res["seconds"])
    into.rates.append((label, rate))
    wanted = target or (largest_target if is_largest else None)
    r.add("b", f"{name}, {label}: extract + map", rate, "res/s",
          target=Target(">=", wanted, f"{wanted:,} res/s") if wanted else None,
          note=f"{res['seconds']:.1f} s = extract {res['extract_s']:.1f} + map "
               f"{res['map_s']:.1f}; {res['read']:,} read; CPU {run.cpu_s:.1f} s")
    r.add("b", f"{name}, {label}: peak memory, process tree", run.peak_tree_mb, "MB",
          target=Target("<", MB_TARGET, f"{MB_TARGET} MB") if is_largest else None,
          note=_mem_note(run))
    into.peaks.append((resources, run.peak_tree_mb))
    into.mains.append(run.peak_rss_mb)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _size(n: int) -> str:
    """1,003,212 → "1.00M", 99,871 → "99.9k", 2,795 → "2.8k"."""
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1000:
        return f"{n / 1e3:.3g}k"
    return f"{n:,}"


# ------------------------------------------------------------ (c) incremental


def section_c(ctx: Context) -> None:
    r = ctx.report
    r.heading(f"(c) an incremental run with no changes (load {machine.load_average()})")
    cohort = ctx.plan.rest_cohorts[0]
    run: RestRun | None = ctx.shared.get("rest_default")
    if run is None or run.incremental is None:
        run = _rest_runs(ctx, cohort, incremental=True)
    assert run.incremental is not None
    t_full, t_inc = run.full.result["seconds"], run.incremental.result["seconds"]
    r.add("c", f"REST extract, {cohort.label}: rerun with no changes / full run",
          _rate(t_inc, t_full), "fraction", target=Target("<", 0.05, "5%"),
          note=f"{t_inc:.2f} s vs {t_full:.2f} s; {run.incremental.result['stored']} stored")
    # the whole pipeline (extract, map, derive, analyze) run again on the same folder
    both = run_task("pipeline_twice", {"source": str(run.folder),
                                       "db": str(ctx.work / "pipeline.db"),
                                       "out": str(ctx.work / "pipeline-report")})
    f, a = both.result["first"], both.result["again"]
    r.add("c", f"all stages (folder source), {cohort.label}: rerun / first run",
          _rate(a["seconds"], f["seconds"]), "fraction",
          note=f"{a['seconds']:.1f} s vs {f['seconds']:.1f} s; rerun: extract "
               f"{a['extract_s']:.1f}, map {a['map_s']:.1f}, derive {a['derive_s']:.1f}, "
               f"analyze {a['analyze_s']:.1f} s; for information: a folder has no change "
               f"feed, every file is read again")


# ------------------------------------------------------------ (d) derive + analyse


def section_d(ctx: Context) -> None:
    r = ctx.report
    n = ctx.plan.many_patients
    r.heading(f"(d) derive + analyse + report, {n:,} patients (load {machine.load_average()})")
    db = ctx.work / "many.db"
    prep = run_task("prepare_many_patients", {
        "db": str(db), "work": str(ctx.work / "many"), "n_patients": n,
        "template_patients": ctx.plan.template_patients})
    run = run_task("derive_analyze", {"db": str(db), "out": str(ctx.work / "many-report")})
    res = run.result
    r.add("d", f"derive + analyse + report, {res['patients']:,} patients", res["seconds"], "s",
          target=Target("<", 20, "20 s"),
          note=f"derive {res['derive_s']:.1f} s, analyse + report {res['analyze_s']:.1f} s; "
               f"{res['in_cohort']:,} in the cohort, {res['lines']:,} lines; "
               f"peak {run.peak_tree_mb:.0f} MB; copies of a "
               f"{ctx.plan.template_patients}-patient synthetic cohort")
    assert prep.result["patients"] == res["patients"]


# ------------------------------------------------------------ (e) 1 GB export


def section_e(ctx: Context) -> None:
    r = ctx.report
    target_bytes = ctx.plan.export_bytes
    r.heading(f"(e) loading a {target_bytes / 1e9:.3g} GB NDJSON export "
              f"(load {machine.load_average()})")
    folder = ctx.work / "export"
    data = make_lab_heavy(folder, max(1000, target_bytes // BYTES_PER_RESOURCE), seed=23)
    db = ctx.work / "export.db"
    run = run_task("bulk_load", {"folder": str(folder), "db": str(db)})
    res = run.result
    r.add("e", f"{data.bytes / 1e9:.2f} GB export, {data.resources:,} resources: peak memory",
          run.peak_tree_mb, "MB", target=Target("<", MB_TARGET, f"{MB_TARGET} MB"),
          note=f"{_mem_note(run)}; through {res['path']}")
    r.add("e", "the same load: rate", _rate(res["read"], res["seconds"]), "res/s",
          note=f"{res['seconds']:.1f} s, {_rate(data.bytes / 2**20, res['seconds']):.1f} MB/s")
    shutil.rmtree(folder, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


SECTIONS: dict[str, Callable[[Context], None]] = {
    "a": section_a, "a-all": section_a_all, "b": section_b, "c": section_c, "d": section_d,
    "e": section_e}
#: What a run without ``--only`` measures (``a-all`` is part of ``a``).
DEFAULT_SECTIONS = ("a", "b", "c", "d", "e")
