"""The package's floors, as docs/architecture.md draws them: every import (lazy ones and
TYPE_CHECKING ones included) points to the module's own floor or one it may use."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ec2backup"

GROUND = {"errors", "paths", "faults", "fastpaths", "treefacts"}
# floor -> the floors it may import (besides its own)
MAY_USE: dict[str, set[str]] = {
    "ground": set(),
    "core": {"ground"},
    "ports": {"ground", "core"},
    "config": {"ground"},
    "db": {"ground", "core"},
    "run": {"ground", "core", "ports", "config", "db"},
    "adapters": {"ground", "core", "ports"},
    "commands": {"ground", "core", "ports", "config", "db", "run", "adapters"},
    "cli": {"ground", "core", "ports", "config", "db", "run", "adapters", "commands", "sandbox"},
    "sandbox": {"ground"},
    "entry": {"cli"},
}
# Imports that cross the floors today, each with where it is going (none now).
KNOWN: set[tuple[str, str]] = set()


def floor(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "entry"
    if parts[1] in GROUND:
        return "ground"
    return parts[1]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[str, int]]:
    name = module_name(path, package)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found += (
                [(target, node.lineno)]
                if node.module
                else [(f"{target}.{a.name}", node.lineno) for a in node.names]
            )
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return [(t, line) for t, line in found if t.split(".")[0] == "ec2backup"]


def crossings(package: Path = PACKAGE) -> set[tuple[str, str]]:
    found = set()
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, package)
        here = floor(source)
        for target, _line in imports(path, package):
            there = floor(target)
            if there != here and there not in MAY_USE[here]:
                found.add((source, target))
    return found


def test_every_import_points_to_a_floor_the_module_may_use() -> None:
    assert crossings() - KNOWN == set()


def test_the_known_crossings_still_exist() -> None:
    # A crossing that is gone must leave the list, so the list never hides a new one.
    assert KNOWN - crossings() == set()


def test_the_check_sees_a_lazy_crossing_and_lets_the_floors_below_pass(tmp_path: Path) -> None:
    package = tmp_path / "ec2backup"
    (package / "core").mkdir(parents=True)
    (package / "core" / "ok.py").write_text("from ..errors import E\nfrom . import times\n")
    (package / "core" / "bad.py").write_text("def f():\n    from ..db.store import open_store\n")
    assert crossings(package) == {("ec2backup.core.bad", "ec2backup.db.store")}
