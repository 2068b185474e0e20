"""The public API is pinned: a change here must be deliberate (update this file with it)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import hyprvdb
from hyprvdb import SparseAdapter

EXPECTED_ALL = [
    "AdapterSet",
    "CorrelatedPair",
    "CorruptFileError",
    "DeltaDetector",
    "Follower",
    "ForeignFileError",
    "HistoryRecoveryWarning",
    "HyprVDBError",
    "MissingExtensionError",
    "SetSnapshot",
    "Snapshot",
    "SparseAdapter",
    "TemporalAdapter",
    "TemporalGroup",
    "enforce_sparsity",
    "fuse_adapters",
    "__version__",
]

# name -> (kind, signature without annotations); kind is how the class attribute is defined.
EXPECTED_MEMBERS = {
    "__init__": ("function", "(self, rows, cols, *, block_shape=(1, 1), allow_nonfinite=False, "
                             "name='lora_delta')"),
    "__len__": ("function", "(self)"),
    "__iter__": ("function", "(self)"),
    "__contains__": ("function", "(self, key)"),
    "__repr__": ("function", "(self)"),
    "shape": ("property", None),
    "block_shape": ("property", None),
    "dtype": ("property", None),
    "nbytes": ("property", None),
    "name": ("attribute", None),
    "active_count": ("function", "(self)"),
    "memory_usage": ("function", "(self)"),
    "density": ("function", "(self)"),
    "sparsity_ratio": ("function", "(self)"),
    "set_weight": ("function", "(self, row, col, value)"),
    "get_weight": ("function", "(self, row, col)"),
    "is_active": ("function", "(self, row, col)"),
    "remove_weight": ("function", "(self, row, col)"),
    "batch_update": ("function", "(self, rows, cols=None, values=None)"),
    "add_weights": ("function", "(self, rows, cols, deltas)"),
    "get_weights": ("function", "(self, rows, cols)"),
    "are_active": ("function", "(self, rows, cols)"),
    "remove_weights": ("function", "(self, rows, cols)"),
    "active_weights": ("function", "(self)"),
    "copy": ("function", "(self)"),
    "clear": ("function", "(self)"),
    "optimize": ("function", "(self, tolerance=0.0)"),
    "merge_with": ("function", "(self, other, scale=1.0)"),
    "top_k": ("function", "(self, k)"),
    "save": ("function", "(self, path)"),
    "load": ("classmethod", "(path, *, allow_nonfinite=False)"),
    "from_dict": ("classmethod", "(weights, shape=None, **kwargs)"),
    "to_dict": ("function", "(self)"),
    "from_dense": ("classmethod", "(dense, *, tolerance=0.0, **kwargs)"),
    "to_dense": ("function", "(self)"),
    "from_scipy": ("classmethod", "(matrix, **kwargs)"),
    "to_scipy": ("function", "(self, format='csr')"),
    "from_lora": ("classmethod", "(A, B, alpha, density, **kwargs)"),
}

SET_MEMBERS = {
    "__init__": ("function", "(self, shapes=None, *, allow_nonfinite=False)"),
    "add": ("function", "(self, name, rows, cols)"),
    "active_count": ("function", "(self)"),
    "memory_usage": ("function", "(self)"),
    "nbytes": ("property", None),
    "copy": ("function", "(self)"),
    "save": ("function", "(self, path)"),
    "load": ("classmethod", "(path, *, allow_nonfinite=False)"),
    "from_adapters": ("classmethod", "(adapters, *, allow_nonfinite=False)"),
    "from_peft": ("classmethod", "(path, *, density=0.01, alpha=None, shapes=None, "
                                 "allow_nonfinite=False)"),
    "save_shira": ("function", "(self, path, *, r=None, base_model=None)"),
    # the Mapping protocol
    "__getitem__": ("function", "(self, name)"),
    "__len__": ("function", "(self)"),
    "__iter__": ("function", "(self)"),
    "__repr__": ("function", "(self)"),
    "get": ("inherited", None), "items": ("inherited", None), "keys": ("inherited", None),
    "values": ("inherited", None),
}

EXPECTED_FUNCTIONS = {
    "fuse_adapters": "(adapters, scales=None)",
    "enforce_sparsity": "(adapter, threshold=0.0, *, top_k=None, in_place=False)",
}


def plain(sig: inspect.Signature) -> str:
    """The signature without annotations: names, kinds and defaults."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def test_all_is_pinned():
    assert hyprvdb.__all__ == EXPECTED_ALL
    for name in hyprvdb.__all__:
        assert hasattr(hyprvdb, name), name
    assert isinstance(hyprvdb.__version__, str) and hyprvdb.__version__


def test_no_other_public_names_leak():
    public = {n for n in dir(hyprvdb) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(hyprvdb, n))}
    assert public - modules == set(EXPECTED_ALL) - {"__version__"}


def test_exception_family():
    assert issubclass(hyprvdb.HyprVDBError, Exception)
    assert issubclass(hyprvdb.CorruptFileError, hyprvdb.HyprVDBError)
    assert issubclass(hyprvdb.ForeignFileError, hyprvdb.HyprVDBError)
    assert not issubclass(hyprvdb.CorruptFileError, hyprvdb.ForeignFileError)
    assert issubclass(hyprvdb.MissingExtensionError, ImportError)


def _public_members(cls):
    names = {n for n in dir(cls) if not n.startswith("_")}
    names |= {"__init__", "__len__", "__iter__", "__contains__", "__repr__"}
    return names


def test_sparse_adapter_members_are_pinned():
    assert _public_members(SparseAdapter) == set(EXPECTED_MEMBERS)


@pytest.mark.parametrize("name", sorted(EXPECTED_MEMBERS))
def test_sparse_adapter_member_signature(name):
    kind, expected = EXPECTED_MEMBERS[name]
    raw = inspect.getattr_static(SparseAdapter, name)
    if kind == "property":
        assert isinstance(raw, property)
        return
    if kind == "attribute":
        assert name in SparseAdapter.__slots__
        return
    assert isinstance(raw, classmethod) == (kind == "classmethod")
    sig = inspect.signature(getattr(SparseAdapter, name))
    assert plain(sig) == expected
    # Public signatures are typed.
    untyped = [p.name for p in sig.parameters.values()
               if p.name != "self" and p.annotation is inspect.Parameter.empty]
    assert not untyped, f"{name}: parameters without annotations: {untyped}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{name}: no return type"


def test_adapter_set_members_are_pinned():
    public = {n for n in dir(hyprvdb.AdapterSet) if not n.startswith("_")}
    assert public == {n for n in SET_MEMBERS if not n.startswith("_")}
    for name, (kind, expected) in SET_MEMBERS.items():
        raw = inspect.getattr_static(hyprvdb.AdapterSet, name)
        if kind == "property":
            assert isinstance(raw, property), name
        elif kind != "inherited":
            assert isinstance(raw, classmethod) == (kind == "classmethod"), name
            sig = inspect.signature(getattr(hyprvdb.AdapterSet, name))
            assert plain(sig) == expected, name
            if not name.startswith("__"):
                assert getattr(hyprvdb.AdapterSet, name).__doc__, f"{name} has no docstring"


@pytest.mark.parametrize("name", sorted(EXPECTED_FUNCTIONS))
def test_function_signature(name):
    sig = inspect.signature(getattr(hyprvdb, name))
    assert plain(sig) == EXPECTED_FUNCTIONS[name]
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED_MEMBERS if not n.startswith("_")))
def test_public_members_have_docstrings(name):
    raw = inspect.getattr_static(SparseAdapter, name)
    if name == "name":
        return
    doc = (raw.fget if isinstance(raw, property) else getattr(SparseAdapter, name)).__doc__
    assert doc and doc.strip(), f"SparseAdapter.{name} has no docstring"


# ----------------------------------------------------------------------------- import
IMPORT_PROBE = """
import json, sys
import hyprvdb
watched = ("hyprvdb._core", "cupy", "cupyx", "jax", "jaxlib", "pyopenvdb", "scipy")
loaded = sorted(m for m in sys.modules if m in watched or m.split(".")[0] in watched)
after = None
if len(sys.argv) > 1:
    hyprvdb.SparseAdapter(2, 2)
    after = "hyprvdb._core" in sys.modules
print(json.dumps({"loaded": loaded, "after": after}))
"""


def _probe(*args):
    p = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *args], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_import_loads_no_core_and_no_gpu_library():
    out = _probe()
    assert out["loaded"] == [], f"import hyprvdb imported {out['loaded']}"


def test_core_is_loaded_on_first_use():
    # The control for the test above: the module name it watches is the right one.
    assert _probe("create")["after"] is True


def test_import_works_without_the_core_and_says_why_on_use():
    probe = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "hyprvdb._core":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
import hyprvdb
try:
    hyprvdb.SparseAdapter(2, 2)
except hyprvdb.MissingExtensionError as e:
    print("MISSING", e)
"""
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("MISSING"), p.stdout + p.stderr
    assert "hyprvdb._core" in p.stdout and "libopenvdb-dev" in p.stdout
