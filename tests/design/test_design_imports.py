"""The packages of connector/ may only import in the direction docs/design.md draws.

The rule is read from the source with ``ast`` (every ``import`` and ``from … import``,
including the ones inside functions), so a lazy import cannot hide a reach-back.
When you add a package, give it a row in ``ALLOWED`` and a place in the picture in
docs/design.md; when you remove a known reach-back, delete its line in ``KNOWN``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "connector"

# What each top-level part of connector/ may import from the others (lowest layer first).
ALLOWED: dict[str, set[str]] = {
    "connector": set(),  # connector/__init__.py
    "db": set(),
    "keys": set(),
    "progress": set(),
    "codes": set(),
    "sitename": set(),  # what a site may be called (CLI --site and the site config alike)
    "atomic": set(),  # staged output folders moved into place file by file
    "fhir": {"progress", "sitename"},
    "lock": {"db"},
    "synth": {"codes"},
    "extract": {"db", "fhir", "codes", "progress", "keys"},
    "mapping": {"db", "codes", "keys", "progress"},
    "cohort": {"db", "codes", "progress"},
    "analysis": {"db", "codes", "keys"},
    "report": {"analysis"},
    # merge: what leaves the site goes through merge's one pseudonymization policy
    "export": {"db", "analysis", "keys", "codes", "progress", "merge"},
    "federated": {"analysis", "report", "keys"},
    "merge": {"db", "keys", "lock", "progress"},
    "status": {"db", "lock"},
    # preflight: a command's source and output checked before anything is created
    "preflight": {"extract", "fhir", "sitename"},
    "pipeline": {
        "db", "lock", "extract", "mapping", "cohort", "analysis", "report", "export",
        "progress", "fhir", "codes", "keys", "atomic",
    },
    "cli": {
        "connector", "db", "lock", "fhir", "extract", "mapping", "cohort", "analysis",
        "report", "export", "federated", "merge", "status", "pipeline", "progress",
        "synth", "keys", "codes", "preflight", "sitename",
    },
    "__main__": {"cli"},
}

# Reach-backs that exist today and that the redesign (issue #14) removes. A line here
# that no longer matches the code fails the test, so the list can only shrink.
KNOWN: set[tuple[str, str]] = {
}


def _part_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "connector":
        return None
    return parts[1] if len(parts) > 1 else "connector"


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported_modules(path: Path, root: Path = ROOT) -> list[str]:
    module = _module_name(path, root)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
            # ``from connector import pipeline`` names a part, not an attribute.
            if target == "connector":
                found.extend(f"connector.{alias.name}" for alias in node.names)
    return found


def import_edges(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """(importer part, imported part) -> the files that make that edge."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted((root / "connector").rglob("*.py")):
        source = _part_of(_module_name(path, root))
        for target in _imported_modules(path, root):
            part = _part_of(target)
            if part and part != source:
                edges[(source, part)].append(str(path.relative_to(root)))
    return edges


def test_every_part_has_a_place_in_the_design():
    parts = {_part_of(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    missing = sorted(p for p in parts if p not in ALLOWED)
    assert not missing, (
        f"new part(s) {missing} of connector/: give each a row in ALLOWED here and a place "
        "in the picture in docs/design.md"
    )


def test_imports_follow_the_allowed_direction():
    wrong = {
        edge: files
        for edge, files in import_edges().items()
        if edge[1] not in ALLOWED.get(edge[0], set()) and edge not in KNOWN
    }
    assert not wrong, "imports against the design (docs/design.md): " + "; ".join(
        f"{a} -> {b} in {sorted(set(files))}" for (a, b), files in sorted(wrong.items())
    )


def test_known_reach_backs_are_still_real():
    """Once a reach-back is gone, its KNOWN line must go too, so it cannot come back."""
    edges = import_edges()
    stale = sorted(edge for edge in KNOWN if edge not in edges)
    assert not stale, f"remove these from KNOWN, they no longer occur: {stale}"


def test_the_checker_sees_a_reach_back(tmp_path):
    """The walk itself works: a lazy relative import inside a function is an edge."""
    cohort = tmp_path / "connector" / "cohort"
    cohort.mkdir(parents=True)
    (cohort / "__init__.py").write_text("from connector.db import models\n", encoding="utf-8")
    (cohort / "lines.py").write_text("def f():\n    from ..report import document\n")
    edges = import_edges(tmp_path)
    assert ("cohort", "report") in edges
    assert ("cohort", "db") in edges
    assert ("cohort", "cohort") not in edges
