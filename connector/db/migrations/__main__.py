"""Developer and DBA commands for the schema migrations.

    python -m connector.db.migrations check               # exit 1: models and revisions differ
    python -m connector.db.migrations revision -m "add x" # next revision, from the models
    python -m connector.db.migrations sql [--dialect postgresql]  # the DDL, for a DBA
    python -m connector.db.migrations upgrade --db URL    # what every `cohort` command does
    python -m connector.db.migrations current --db URL

``check`` and ``revision`` compare the models with a scratch SQLite database
migrated to head, so they need no server.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from connector.db.engine import get_engine
from connector.db.migrations import (
    VERSIONS,
    alembic_config,
    current_revision,
    head_revision,
    migrate,
    schema_differences,
)


def _scratch_engine(folder: str):  # noqa: ANN202
    engine = get_engine(f"sqlite:///{Path(folder) / 'scratch.db'}")
    migrate(engine)
    return engine


def cmd_check(_args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        engine = _scratch_engine(tmp)
        diffs = schema_differences(engine)
        engine.dispose()
    for diff in diffs:
        print(f"  {diff}")
    if diffs:
        print(f"{len(diffs)} difference(s) between connector/db/models.py and the revisions; "
              "run: python -m connector.db.migrations revision -m '...'")
        return 1
    print(f"models and migrations agree (head {head_revision()})")
    return 0


def _next_rev_id() -> str:
    numbers = [int(p.name[:4]) for p in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py")]
    return f"{max(numbers, default=0) + 1:04d}"


def cmd_revision(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        engine = _scratch_engine(tmp)
        if not schema_differences(engine):
            print("no differences: nothing to write")
            engine.dispose()
            return 0
        with engine.begin() as conn:
            script = command.revision(alembic_config(conn), message=args.message,
                                      autogenerate=True, rev_id=_next_rev_id())
        engine.dispose()
    path = Path(script.path) if script is not None and not isinstance(script, list) else None
    if path is not None:
        _tidy(path)
        print(f"wrote {path}: review it (renames appear as drop + add) and commit it")
    return 0


def _tidy(path: Path) -> None:
    """Format the new file with ruff when it is installed, so the lint gate stays clean."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        return
    subprocess.run([ruff, "format", "-q", str(path)], check=False)
    subprocess.run([ruff, "check", "-q", "--fix", str(path)], check=False)


def cmd_sql(args: argparse.Namespace) -> int:
    url = {"postgresql": "postgresql+psycopg://", "sqlite": "sqlite://"}[args.dialect]
    command.upgrade(alembic_config(url=url), f"{args.start}:head" if args.start else "head",
                    sql=True)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    engine = get_engine(args.db)
    migrate(engine)
    with engine.connect() as conn:
        print(f"at revision {current_revision(conn)}")
    engine.dispose()
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    engine = get_engine(args.db)
    with engine.connect() as conn:
        current = current_revision(conn)
    engine.dispose()
    head = head_revision()
    print(f"database at {current or 'none (unversioned)'}; this tool's head is {head}")
    return 0 if current == head else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.db.migrations")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="exit 1 when the models differ from the migrated schema")
    rev = sub.add_parser("revision", help="autogenerate the next revision from the models")
    rev.add_argument("-m", "--message", required=True)
    sql = sub.add_parser("sql", help="print the upgrade DDL without a database")
    sql.add_argument("--dialect", choices=["postgresql", "sqlite"], default="postgresql")
    sql.add_argument("--start", help="revision the database is at now (default: empty)")
    for name in ("upgrade", "current"):
        p = sub.add_parser(name)
        p.add_argument("--db", required=True, help="sqlite:///FILE or postgresql://…")
    args = parser.parse_args(argv)
    handler = {"check": cmd_check, "revision": cmd_revision, "sql": cmd_sql,
               "upgrade": cmd_upgrade, "current": cmd_current}[args.cmd]
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
