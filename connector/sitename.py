"""What a site may be called: the one rule every command and config applies.

A site name ends up in file names (the SQLite lock file beside the database,
export folders, share files), in run records and in every row. A name such as
``..`` or ``a/b`` would put those files outside their folder, and control
characters would garble logs, so such names are refused before anything is
created, by the CLI (``--site``) and by the site config (``name``) alike.
"""

from __future__ import annotations

import unicodedata

#: Longest site name (it is part of file names and of every row's key).
MAX_LENGTH = 64


class BadSiteName(ValueError):
    """A site name that could escape a folder or garble a file name or a log."""


def site_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a site name, or None when it can."""
    if not name or not name.strip():
        return "a site name must not be empty"
    if name != name.strip():
        return "a site name must not start or end with a space"
    if name in (".", "..") or set(name) == {"."}:
        return f"{name!r} names a folder, not a site"
    if "/" in name or "\\" in name:
        return "a site name must not contain '/' or '\\' (it becomes part of file names)"
    if name.startswith("-"):
        return "a site name must not start with '-'"
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "a site name must not contain control characters"
    if len(name) > MAX_LENGTH:
        return f"a site name has at most {MAX_LENGTH} characters"
    return None


def check_site_name(name: str, what: str = "site") -> str:
    """``name`` if it is a usable site name; raises BadSiteName saying why not."""
    problem = site_name_problem(name)
    if problem:
        raise BadSiteName(f"{what} {_shown(name)}: {problem}")
    return name


def _shown(name: str) -> str:
    """The name for a message, with control characters escaped and a long one cut."""
    shown = repr(name)
    return shown if len(shown) <= 80 else shown[:77] + "..."
