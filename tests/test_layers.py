"""The package keeps its tiers apart: no module reads another package's private attributes or
imports another package's private modules, and the layers point down.

Packages are the subpackages of hyprvdb (``adapter``, ``history``, ``snapshot``, ``ops``,
``serve``) and the top level (``hyprvdb``: the shared base modules, ``jax``, ``plot``,
``cli``). A private name is one with a single leading underscore. Inside a package, code may
use the private names that package defines; across packages it uses public names only. The
shared base modules of the top level (``_errors``, ``_validate``, ``_native``, ``_coo``,
``_zaxis``, ``_atomic``, ``_peft``: PEFT folders with numpy and safetensors) are importable by
every package: they are the floor the tiers stand on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hyprvdb"
SUBPACKAGES = ("adapter", "history", "snapshot", "ops", "serve")
BASE_MODULES = {"_errors", "_validate", "_native", "_coo", "_zaxis", "_atomic", "_peft"}
# What each tier may import from the others (the layers point down; serving needs no OpenVDB
# module at import time, and the write path may use what reads need).
ALLOWED = {
    "hyprvdb.snapshot": set(),
    "hyprvdb.adapter": set(),
    "hyprvdb.history": {"hyprvdb.snapshot", "hyprvdb.adapter"},
    "hyprvdb.ops": set(),
    "hyprvdb.jax": {"hyprvdb.ops"},
    "hyprvdb.plot": {"hyprvdb.history"},
    "hyprvdb.serve": {"hyprvdb.jax", "hyprvdb.history", "hyprvdb.ops", "hyprvdb.snapshot"},
    "hyprvdb.cli": {"hyprvdb.adapter", "hyprvdb.history", "hyprvdb.snapshot", "hyprvdb.serve",
                    "hyprvdb.plot"},
}


def modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return ".".join(parts[:2])
    return "hyprvdb"


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_private_names(paths: list[Path]) -> set[str]:
    """Private names a package defines: attributes assigned on self/cls or on objects built
    inside it, methods, functions, classes, module globals and slots."""
    out: set[str] = set()
    for p in paths:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                out.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                for elt in getattr(node.value, "elts", []):
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                        out.add(elt.value)
    return {n for n in out if is_private(n)}


def resolve_import(mod: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def by_package() -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in modules():
        out.setdefault(package_of(module_name(p)), []).append(p)
    return out


def violations() -> list[str]:
    found = []
    packages = by_package()
    own_names = {pkg: defined_private_names(paths) for pkg, paths in packages.items()}
    for pkg, paths in packages.items():
        for p in paths:
            mod = module_name(p)
            tree = ast.parse(p.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and is_private(node.attr):
                    owner = node.value
                    if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                        continue
                    # a module of the shared base read through its name (V.x, _native.cpu)
                    if node.attr in BASE_MODULES:
                        continue
                    if node.attr not in own_names[pkg]:
                        found.append(f"{p.relative_to(ROOT.parent)}:{node.lineno}: reads "
                                     f".{node.attr}, which {pkg} does not define")
                elif isinstance(node, ast.ImportFrom):
                    target = resolve_import(mod, node, p.name == "__init__.py")
                    for full in [target] + [f"{target}.{a.name}" for a in node.names]:
                        parts = full.split(".")
                        other = package_of(full)
                        if parts[0] != "hyprvdb" or other == pkg:
                            continue
                        if other == "hyprvdb":
                            if len(parts) > 1 and parts[1] in BASE_MODULES:
                                continue
                            rest = parts[1:]
                        else:
                            rest = parts[2:]
                        if any(is_private(x) for x in rest):
                            found.append(f"{p.relative_to(ROOT.parent)}:{node.lineno}: imports "
                                         f"{full}, private to {other}")
    return sorted(set(found))


def test_no_module_reads_another_packages_private_attributes():
    assert violations() == []


def test_the_check_catches_a_private_read_across_packages(tmp_path, monkeypatch):
    """The control for the test above: a serving module reading the history's private state
    and importing its private module is caught."""
    fake = tmp_path / "hyprvdb"
    (fake / "serve").mkdir(parents=True)
    (fake / "history").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "history" / "__init__.py").write_text("")
    (fake / "history" / "_group.py").write_text("class G:\n    def __init__(self):\n"
                                                "        self._steps = []\n")
    (fake / "serve" / "__init__.py").write_text("")
    (fake / "serve" / "_x.py").write_text("from ..history import _group\n"
                                          "def f(h):\n    return h._steps\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    found = violations()
    assert any("reads ._steps" in v for v in found), found
    assert any("imports hyprvdb.history._group" in v for v in found), found


def imported_packages(paths: list[Path]) -> set[str]:
    out = set()
    for p in paths:
        mod = module_name(p)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = resolve_import(mod, node, p.name == "__init__.py")
                for full in [target] + [f"{target}.{a.name}" for a in node.names]:
                    if full.startswith("hyprvdb"):
                        out.add(package_of(full) if package_of(full) != "hyprvdb"
                                else ".".join(full.split(".")[:2]))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("hyprvdb"):
                        out.add(package_of(a.name))
    return out


@pytest.mark.parametrize("tier", sorted(ALLOWED))
def test_layers_point_down(tier):
    paths = [p for p in modules() if module_name(p) == tier
             or module_name(p).startswith(tier + ".")]
    assert paths, tier
    used = {u for u in imported_packages(paths) if u != tier and u in ALLOWED}
    assert used <= ALLOWED[tier], f"{tier} imports {sorted(used - ALLOWED[tier])}"
