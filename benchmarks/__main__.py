"""``python -m benchmarks`` (``make bench``): every figure of docs/benchmarks.md, with targets.

Usage::

    python -m benchmarks            # the full run (several minutes; 1M resources, 1 GB)
    python -m benchmarks --quick    # tiny sizes: checks the harness, not the targets
    python -m benchmarks --only b,d --json results.json
    python -m benchmarks --only a-all   # (a)'s --scope all ratio alone (about a minute)

Sections: (a) REST extraction against a local sekmet-fhir vs the same requests sent
with plain HTTP; (b) folder NDJSON → normalized tables for three sizes, memory,
and the validate-everything baseline; (c) an incremental run with no changes;
(d) derive + analyse + report for many patients; (e) peak memory loading a 1 GB
NDJSON export. Each measurement runs in its own child process
(``benchmarks.measure``). Ratios are taken between figures of the same run, which
is what makes them comparable on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.figures import Report, markdown_table
from benchmarks.plan import FULL, QUICK, Plan
from benchmarks.sections import DEFAULT_SECTIONS, SECTIONS, Context


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, to check that the harness works (seconds)")
    parser.add_argument("--only", default="",
                        help="comma-separated sections to run: a,b,c,d,e (default: all), "
                             "or a-all for (a)'s --scope all figure alone")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--markdown", type=Path,
                        help="also write the figures as a Markdown table (docs/benchmarks.md)")
    parser.add_argument("--work", type=Path,
                        help="folder for generated data and databases (default: a temporary "
                             "folder, removed at the end)")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "mm-cart-connector" / "bench",
                        help="where built sekmet stores are kept between runs")
    parser.add_argument("--no-cache", action="store_true", help="build server stores afresh")
    return parser.parse_args(argv)


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so servers and child processes are stopped."""

    def handler(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _exit_on_sigterm()
    plan: Plan = QUICK if args.quick else FULL
    wanted = [s.strip() for s in args.only.split(",") if s.strip()] or list(DEFAULT_SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"unknown section(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="mm-cart-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = (work / "cache") if args.no_cache else args.cache
    cache.mkdir(parents=True, exist_ok=True)
    report = Report(quick=args.quick)
    info = machine.describe()
    print(f"mm-cart-connector benchmarks ({plan.name} run)")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    load_start = machine.load_average()
    print(f"load average at start: {load_start} (1, 5, 15 min)")
    ctx = Context(plan=plan, work=work, cache=cache, report=report, shared={})
    started = time.perf_counter()
    try:
        for key in wanted:
            SECTIONS[key](ctx)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print(report.summary())
    print(f"load average at end: {machine.load_average()}; run took {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "plan": plan.name, "machine": info, "seconds": round(elapsed, 1),
            "load_average_end": machine.load_average(),
            "figures": report.as_dicts()}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(
            f"Machine: {', '.join(f'{k} {v}' for k, v in info.items())}; load average at "
            f"start {load_start}, at end {machine.load_average()}; {elapsed:.0f} s.\n\n"
            + markdown_table(report.as_dicts()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
