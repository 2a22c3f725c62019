"""Progress display: rich bars on a terminal, nothing when silent or scripted.

Stages take a ``Progress`` and call ``task(name, total)`` to get an ``advance``
callable, so they never depend on how (or whether) progress is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    @classmethod
    def silent(cls) -> Progress:
        return cls(enabled=False)

    @contextmanager
    def task(self, name: str, total: float | None = None,
             unit: str = "") -> Iterator[Callable[[float], None]]:
        if not self.enabled:
            yield lambda _n=1: None
            return
        columns = [TextColumn("[bold]{task.description:<10}"), BarColumn()]
        columns.append(MofNCompleteColumn() if unit != "B" else
                       TextColumn("{task.percentage:>3.0f}%"))
        columns.append(TimeElapsedColumn())
        with RichProgress(*columns, transient=False) as bar:
            task_id = bar.add_task(name, total=total)

            def advance(n: float = 1) -> None:
                bar.advance(task_id, n)

            yield advance
