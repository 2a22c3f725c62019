"""Run one measurement in a child process and take its peak memory and CPU time.

Every figure comes from a fresh interpreter (``python -m benchmarks.tasks``), so no
measurement inherits another's heap, caches or imports. Two memory figures are
taken: the kernel's peak RSS of the child itself (``wait4``), and the peak of the
summed RSS of the child and all its descendants (the map stage's validation
workers), sampled from /proc every 50 ms. The second is what the machine must
have; the targets are checked against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH-RESULT "
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ChildRun:
    """What one child process reported, plus what the parent observed of it."""

    result: dict[str, Any]
    wall: float  # the whole child, interpreter start included
    peak_rss_mb: float  # the child process itself (kernel's maxrss)
    peak_tree_mb: float  # child + descendants, sampled
    cpu_s: float  # user + system of the child and its waited-for descendants
    output: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class TaskFailed(RuntimeError):
    pass


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
        except OSError:
            continue
    return out


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(pid: int) -> int:
    """Summed RSS of ``pid`` and every descendant (bytes)."""
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss_bytes(p)
        stack += _children(p)
    return total


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self.stop.wait(self.interval)


def run_task(name: str, args: dict[str, Any], *, timeout: float = 3600,
             env: dict[str, str] | None = None) -> ChildRun:
    """Run ``benchmarks.tasks.<name>(**args)`` in a fresh interpreter; raise if it fails."""
    cmd = [sys.executable, "-m", "benchmarks.tasks", name, json.dumps(args)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    sampler = _Sampler(proc.pid)
    sampler.start()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    status = usage = None
    try:
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
                break
            if time.monotonic() > deadline:
                proc.kill()
                _pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
    except BaseException:  # interrupted: leave no child behind
        if status is None:
            proc.kill()
            os.wait4(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    reader.join(timeout=10)
    output = b"".join(chunks).decode("utf-8", "replace")
    result = None
    for line in output.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
    if proc.returncode != 0 or result is None:
        tail = "\n".join(output.splitlines()[-25:])
        raise TaskFailed(f"task {name} failed (exit {proc.returncode}):\n{tail}")
    assert usage is not None
    if os.environ.get("BENCH_DEBUG"):
        print(f"  (child {name}: {wall:.2f} s wall, {usage.ru_utime + usage.ru_stime:.2f} s CPU)",
              file=sys.stderr)
    # the child's own high-water mark; ru_maxrss would include the harness it forked from
    own_kb = result.pop("_vmhwm_kb", None) or usage.ru_maxrss
    return ChildRun(result=result, wall=wall, peak_rss_mb=own_kb / 1024,
                    peak_tree_mb=max(sampler.peak, own_kb * 1024) / 2**20,
                    cpu_s=usage.ru_utime + usage.ru_stime, output=output)
