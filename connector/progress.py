"""The terminal: rich progress bars and log lines on one console, nothing when silent.

Stages take a ``Progress`` and call ``task(name, total)`` to get an ``advance``
callable, so they never depend on how (or whether) progress is shown.

Bars and log lines share ``CONSOLE`` (standard error): a log line written while a bar
is live goes through rich's handler on that console and is printed above the bars,
instead of being written into the middle of them (``log_handler``). Without a terminal
(cron, CI, a pipe) there are no bars and log lines keep their plain one-line format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress

#: The console bars and log lines share (standard error, so results on stdout stay clean).
CONSOLE = Console(stderr=True)

PLAIN_FORMAT = "%(levelname)s %(name)s: %(message)s"


class Progress:
    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or CONSOLE

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
        with RichProgress(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(name, total=total)

            def advance(n: float = 1) -> None:
                bar.advance(task_id, n)

            yield advance


def log_handler(console: Console | None = None, *, rich: bool = True) -> logging.Handler:
    """The handler for log lines: rich's, on the bars' console, when bars may be shown;
    else a plain stream handler with the one-line format scripts and log files expect."""
    if rich:
        handler: logging.Handler = RichHandler(
            console=console or CONSOLE, show_time=False, show_path=False, markup=False,
            rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        return handler
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    return handler
