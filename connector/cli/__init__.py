"""The ``cohort`` command: one thin module per group of subcommands over shared helpers.

``common`` holds the app, the options, the exit codes and the helpers; ``stages`` the
stage commands (synth, run, extract, map, derive, analyze) over ``connector.pipeline``;
``sharing`` what leaves the site or watches it (merge, export, share, pool, status).
Importing the package registers every command on ``app``, in the help's order.
"""

from __future__ import annotations

from connector.cli import sharing, stages  # noqa: F401  (they register the commands)
from connector.cli.common import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SOURCE,
    EXIT_USAGE,
    app,
)

__all__ = ["EXIT_FAILED", "EXIT_LOCKED", "EXIT_OK", "EXIT_SOURCE", "EXIT_USAGE", "app"]
