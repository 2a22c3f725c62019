"""The one clock every stage stamps rows with (run starts, load times, updates)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, timezone-aware in UTC (naive times would compare wrongly across sites)."""
    return dt.datetime.now(dt.UTC)
