"""Output files that are either the old version or the new one, never half of each.

A report folder is read by people and by scripts (results.json) while the next
scheduled run rewrites it. Written in place, a failed or killed run leaves a mix:
results.json of tonight next to report.html of last night, or a truncated file.
Here everything is written first into a staging folder beside the target (the same
file system), then each file is moved into place with ``os.replace``, which is
atomic: a reader sees the old file or the new one. A run that fails before the
move leaves the previous output as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Moved last, so that a reader who sees a new results.json or report sees the rest new.
LAST = ("report.md", "report.html", "results.json")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A staging folder for ``out``'s files; moved into ``out`` when the block succeeds."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield stage
        publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, out: Path) -> list[Path]:
    """Move every file under ``stage`` to the same place under ``out``; the files moved."""
    out.mkdir(parents=True, exist_ok=True)
    files = [p for p in stage.rglob("*") if p.is_file()]
    files.sort(key=lambda p: (p.name in LAST, LAST.index(p.name) if p.name in LAST else 0,
                              str(p)))
    moved = []
    for path in files:
        target = out / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    return moved

