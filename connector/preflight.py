"""Checks of a command's inputs and outputs before it creates anything.

A typo in ``--source`` used to create the database and a lock file and then fail;
an ``--out`` naming a file failed only after the whole pipeline had run. Each check
here is cheap (no network, no database) and raises ``PreflightError`` with what is
wrong and, where a likely fix exists, the fix; the CLI runs them first and exits 2.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: ``hapi.fhir.org/baseR4``, ``localhost:8080/fhir``, ``10.0.0.5/fhir``: a server address
#: given without its scheme.
_HOSTLIKE = re.compile(
    r"^(?:localhost|(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}|\d{1,3}(?:\.\d{1,3}){3})(?::\d{1,5})?(?:/|$)")


class PreflightError(ValueError):
    """An input or output that cannot work; nothing has been created yet."""


def check_source(source: str, site: str | None = None, *, bulk: bool = False) -> str:
    """Check ``--source`` the way the extraction will read it; returns its kind.

    A URL must be a well-formed http(s) address, a config file must parse and
    validate, a folder must exist and hold NDJSON or JSON files. A folder that does
    not exist but looks like a server address gets the URL to use instead.
    """
    from connector.extract.source import site_config, source_kind
    from connector.fhir.errors import SiteConfigError

    kind = source_kind(source)
    try:
        if kind in ("url", "config"):
            site_config(source, kind, site, {})
        else:
            _check_folder(source, bulk=bulk, site=site)
    except SiteConfigError as exc:
        if kind == "url":  # the config is made from the URL: name the option, not a file
            raise PreflightError(f"--source {source!r}: "
                                 + str(exc).removeprefix("site config: ")) from None
        raise PreflightError(str(exc)) from None
    return kind


def _check_folder(source: str, *, bulk: bool, site: str | None) -> None:
    if bulk:  # the message run_extract gives, before any other complaint about the folder
        raise PreflightError("--bulk needs a FHIR server: --source URL or a site config")
    root = Path(source)
    if root.exists():
        from connector.extract.folder import find_files

        files = find_files(root)
        if not files:
            raise PreflightError(f"no NDJSON or JSON files under {root}")
        if site is None:
            _check_folder_sites(root, files)
        return
    if "://" in source:
        scheme = source.split("://", 1)[0]
        raise PreflightError(f"--source {source!r}: a FHIR server address starts with "
                             f"http:// or https://, not {scheme}://")
    if _HOSTLIKE.match(source):
        raise PreflightError(f"--source {source!r} is not a folder here; if it is a FHIR "
                             f"server, give its URL with the scheme: https://{source}")
    raise PreflightError(f"source folder not found: {root}")


def _check_folder_sites(root: Path, files: list[Path]) -> None:
    """The site names a folder's layout gives (``root/<site>/…``) must be usable too."""
    from connector.extract.folder import site_of
    from connector.sitename import BadSiteName, check_site_name

    for name in sorted({site_of(path, root, None) for path in files}):
        try:
            check_site_name(name, what="the folder layout gives site")
        except BadSiteName as exc:
            raise PreflightError(f"{exc}; rename the folder or pass --site") from None


def check_out_folder(out: Path, option: str = "--out") -> None:
    """``out`` can be made (or is) a writable folder: not a file, nor inside one."""
    if out.exists():
        if not out.is_dir():
            raise PreflightError(f"{option} {out} is a file, not a folder; give a folder "
                                 "for the output (it is created when missing)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise PreflightError(f"{option} {out}: the folder is not writable")
        return
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PreflightError(f"{option} {out}: {parent} is a file, so the folder cannot "
                             "be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"{option} {out}: cannot create it in {parent} (not writable)")


def check_out_file(out: Path, option: str = "--out") -> None:
    """``out`` can be written as a file: not a folder, its folder creatable."""
    if out.is_dir():
        raise PreflightError(f"{option} {out} is a folder; give a file name")
    check_out_folder(out.parent, option=f"{option} {out}: its folder")
