"""docs/ builds offline with Sphinx (autodoc from the docstrings, napoleon) with every warning
an error, its doctests pass (the docstrings' examples and the guides' code), and every public
name of hyprvdb, hyprvdb.ops, hyprvdb.jax and hyprvdb.serve is in the reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sphinx = pytest.importorskip("sphinx", reason="the docs build needs Sphinx (setup.sh installs it)")
pytest.importorskip("jax", reason="the reference documents hyprvdb.jax and hyprvdb.serve")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def build(builder: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", builder,
                           "-q", str(DOCS), str(out)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "html"
    r = build("html", out)
    assert r.returncode == 0, f"sphinx-build -W -b html failed:\n{r.stderr[-4000:]}"
    return out


def test_the_reference_builds_without_warnings(html):
    assert (html / "api.html").exists() and (html / "guides" / "scale-out.html").exists()


def test_every_public_name_is_in_the_reference(html):
    import sphinx.util.inventory as inventory

    import hyprvdb
    import hyprvdb.jax
    import hyprvdb.ops
    import hyprvdb.serve
    with open(html / "objects.inv", "rb") as f:
        inv = inventory.InventoryFile.load(f, "", lambda base, uri: uri)
    documented = {name for items in inv.values() for name in items}
    missing = [f"{mod.__name__}.{n}" for mod in (hyprvdb, hyprvdb.ops, hyprvdb.jax,
                                                  hyprvdb.serve)
               for n in mod.__all__ if not n.startswith("__")
               and f"{mod.__name__}.{n}" not in documented]
    assert not missing, f"not in docs/api.rst's reference: {missing}"


def test_the_doctests_of_the_docstrings_and_guides_pass(tmp_path):
    r = build("doctest", tmp_path / "doctest")
    report = (tmp_path / "doctest" / "output.txt")
    text = report.read_text() if report.exists() else ""
    assert r.returncode == 0, f"doctests failed:\n{text[-4000:]}\n{r.stderr[-2000:]}"
    assert " 0 failures in tests" in text and "tests" in text


def test_every_public_name_has_an_example():
    """A docstring with at least one ``>>>`` example for every public name (the module
    constants, which have no docstring, carry theirs in docs/api.rst)."""
    import inspect

    import hyprvdb
    import hyprvdb.jax
    import hyprvdb.ops
    import hyprvdb.serve
    api = (DOCS / "api.rst").read_text()
    missing = []
    for mod in (hyprvdb, hyprvdb.ops, hyprvdb.jax, hyprvdb.serve):
        for n in mod.__all__:
            if n.startswith("__"):
                continue
            obj = getattr(mod, n)
            if isinstance(obj, (tuple, str, int, float)):
                entry = api.split(f".. py:data:: {n}", 1)
                if len(entry) < 2 or ">>>" not in entry[1].split("\n.. ", 1)[0]:
                    missing.append(f"{mod.__name__}.{n}")
            elif ">>>" not in (inspect.getdoc(obj) or ""):
                missing.append(f"{mod.__name__}.{n}")
    assert not missing, f"public names without an example: {missing}"


def test_every_docstring_example_runs_on_its_own():
    """The examples run under plain doctest too (their imports are their own, not the docs
    build's setup), module by module."""
    import doctest
    import importlib
    import pkgutil

    import hyprvdb
    failed = {}
    for info in pkgutil.walk_packages(hyprvdb.__path__, "hyprvdb."):
        if info.name.split(".")[-1] in ("_core", "_cpu", "_cuda_ffi", "__main__"):
            continue
        mod = importlib.import_module(info.name)
        r = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, report=False)
        if r.failed:
            failed[info.name] = r.failed
    assert not failed, f"doctests failing under plain doctest: {failed}"
