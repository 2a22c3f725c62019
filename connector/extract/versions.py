"""Which of two copies of one resource is the later: the raw store's only ordering.

A numeric ``versionId`` decides first, then ``meta.lastUpdated``; copies that cannot
be told apart are "the same age", and the raw store then keeps the later arrival
(``is_newer``) or, within one load, says so (``version_order`` returns 0).
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def _version_key(version_id: str | None, last_updated: str | None) -> tuple[int, Any]:
    """Orderable key: numeric versionId first, else lastUpdated, else unknown."""
    if version_id is not None and version_id.isdigit():
        return (2, int(version_id))
    if last_updated:
        try:
            return (1, dt.datetime.fromisoformat(last_updated.replace("Z", "+00:00")))
        except ValueError:
            return (1, last_updated)
    return (0, 0)


def version_order(new: tuple[str | None, str | None],
                  old: tuple[str | None, str | None]) -> int:
    """1 when (versionId, lastUpdated) ``new`` is the later copy, -1 when ``old`` is, 0 when
    they cannot be told apart: a numeric versionId decides first, then lastUpdated."""
    kn, ko = _version_key(*new), _version_key(*old)
    if kn[0] == ko[0] == 2 and kn != ko:
        return 1 if _cmp(kn, ko) else -1
    if new[1] and old[1]:
        ln, lo = _version_key(None, new[1]), _version_key(None, old[1])
        if ln != lo:
            return 1 if _cmp(ln, lo) else -1
    return 0


def is_newer(new: tuple[str | None, str | None], old: tuple[str | None, str | None]) -> bool:
    """Whether (versionId, lastUpdated) ``new`` supersedes ``old``.

    When the two cannot be ordered (no version information, or the same), the later
    arrival wins, which is what a re-sent file means.
    """
    return version_order(new, old) >= 0


def _cmp(a: tuple[int, Any], b: tuple[int, Any]) -> bool:
    try:
        return a > b
    except TypeError:
        return str(a) > str(b)
