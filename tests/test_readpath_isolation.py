"""The read path imports and runs without the OpenVDB core, as on a serving machine.

Each check runs in a fresh interpreter where ``import hyprvdb._core`` is made impossible
(``sys.modules["hyprvdb._core"] = None``), optionally with the CPU extension
(``hyprvdb._cpu``) blocked the same way, which leaves numpy alone. The child builds a snapshot,
sends it through ``.nvdb`` and a ``DeviceDelta`` on the CPU, and checks ``delta_matmul``,
``fused_linear``, ``gather`` and ``merge``/``unmerge`` against dense numpy. A last check asserts
that ``import hyprvdb`` (and its read-path modules) loads neither CuPy, JAX nor the core.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

ROUND_TRIP = r"""
import os, sys, tempfile
BLOCK = {block!r}
for name in BLOCK:
    sys.modules[name] = None  # `import name` now raises ImportError

import numpy as np
import hyprvdb
import hyprvdb.ops._kernels
import hyprvdb.ops as ops
from hyprvdb import _native
import hyprvdb.snapshot
from hyprvdb.snapshot import Snapshot

# the write path says clearly what is missing
try:
    hyprvdb.SparseAdapter(4, 4)
except hyprvdb.MissingExtensionError as exc:
    assert "hyprvdb._core" in str(exc), exc
else:
    raise AssertionError("SparseAdapter was created without the OpenVDB core")

cpu_blocked = "hyprvdb._cpu" in BLOCK
assert (_native.cpu() is None) == (cpu_blocked or not {cpu_built!r}), _native.cpu()
assert ops.resolve_device("auto") in ("cpu", "cuda")

rng = np.random.default_rng(3)
shape = (70, 300)
flat = rng.choice(shape[0] * shape[1], 400, replace=False)
rows, cols = np.divmod(flat, shape[1])
vals = rng.standard_normal(400).astype(np.float32)
dense = np.zeros(shape, np.float64)
dense[rows, cols] = vals

snap = Snapshot.from_coo(rows, cols, vals, shape, step=3)
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "delta.nvdb")
    snap.save_nvdb(path)
    snap = Snapshot.load_nvdb(path)  # what a serving machine reads
assert snap.step == 3 and snap.nnz == 400

d = ops.DeviceDelta.upload(snap, "cpu")
x = rng.standard_normal((5, shape[1])).astype(np.float32)
W = rng.standard_normal(shape).astype(np.float32)
bias = rng.standard_normal(shape[0]).astype(np.float32)
mag = np.abs(x.astype(np.float64)) @ (np.abs(dense) + np.abs(W.astype(np.float64))).T + 1

y = ops.delta_matmul(x, d, 0.5)
ref = 0.5 * x.astype(np.float64) @ dense.T
assert np.all(np.abs(y - ref) <= 1e-5 * mag), "delta_matmul"

y = ops.fused_linear(x, W, d, 2.0, bias)
ref = x.astype(np.float64) @ (W.astype(np.float64) + 2.0 * dense).T + bias
assert np.all(np.abs(y - ref) <= 1e-5 * mag), "fused_linear"

qr = np.concatenate([rows, rng.integers(0, shape[0], 500)])
qc = np.concatenate([cols, rng.integers(0, shape[1], 500)])
assert np.array_equal(ops.gather(d, qr, qc), dense[qr, qc].astype(np.float32)), "gather"

W0 = W.copy()
ops.merge(W, d, 1.5)
assert np.all(np.abs(W - (W0 + 1.5 * dense)) <= 1e-6 * (np.abs(W0) + 1.5 * np.abs(dense))), \
    "merge"
ops.unmerge(W, d, 1.5)
assert np.all(np.abs(W - W0) <= 2.4e-7 * (np.abs(W0) + 1.5 * np.abs(dense))), "unmerge"

assert sys.modules.get("hyprvdb._core") is None, "hyprvdb._core was loaded"
if cpu_blocked:
    assert sys.modules.get("hyprvdb._cpu") is None, "hyprvdb._cpu was loaded"
print("ok")
"""

IMPORTS_ONLY = r"""
import sys
import hyprvdb
import hyprvdb.snapshot, hyprvdb.ops, hyprvdb.ops._kernels
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("cupy", "cupyx", "jax", "jaxlib") or m == "hyprvdb._core")
assert not loaded, f"import hyprvdb loaded {{loaded}}"
print("ok")
"""


def run_child(script: str) -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (
        f"child failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")


CPU_BUILT = importlib.util.find_spec("hyprvdb._cpu") is not None


@pytest.mark.parametrize("block", [("hyprvdb._core",), ("hyprvdb._core", "hyprvdb._cpu")],
                         ids=["no-core", "no-core-no-cpu-ext"])
def test_read_path_round_trip_without_the_core(block):
    if len(block) == 1 and not CPU_BUILT:
        pytest.skip("hyprvdb._cpu is not built: the no-core-no-cpu-ext case covers numpy")
    run_child(ROUND_TRIP.format(block=list(block), cpu_built=CPU_BUILT))


def test_import_hyprvdb_loads_no_gpu_library_jax_or_core():
    run_child(IMPORTS_ONLY.format())
