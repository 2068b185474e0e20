"""Shared test helpers: the dense numpy reference check and the hypothesis profiles.

Every result of a SparseAdapter is compared against a dense numpy reference (values plus an
active mask) by one helper, :func:`assert_matches_dense`, which also checks the structural
invariants (dtypes, row-major order, counts, block-uniform activity in tile mode).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# ----------------------------------------------------------------------------- hypothesis
# "ci" is reproducible (derandomized) and sized so the whole suite stays within a couple of
# minutes on a 2-core machine; "dev" explores new examples on every run; "thorough" is for a
# long local soak: HYPOTHESIS_PROFILE=thorough pytest tests/test_adapter_props.py
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, print_blob=True, **_common)
settings.register_profile("dev", max_examples=40, **_common)
settings.register_profile("thorough", max_examples=1000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


# ----------------------------------------------------------------------------- references
def dense_at(history, t) -> np.ndarray:
    """A history's (or a group member's) weights at step ``t`` as a dense float32 matrix,
    through :meth:`TemporalAdapter.active_weights` (no OpenVDB needed)."""
    r, c, v = history.active_weights(t)
    out = np.zeros(history.shape, np.float32)
    out[r, c] = v
    return out


def needs_core() -> None:
    """Skip the calling test where the OpenVDB write path (``hyprvdb._core``) is not built."""
    from hyprvdb import _native
    try:
        _native.core()
    except ImportError as exc:
        pytest.skip(f"needs the OpenVDB write path (hyprvdb._core): {exc}")


def assert_f32_identical(actual, expected, what: str) -> None:
    """Exact float32 equality: same bits for every number (so -0.0 != 0.0), NaN equals NaN."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float32)
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}, expected float32"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a_nan, e_nan = np.isnan(actual), np.isnan(expected)
    same = (actual.view(np.uint32) == expected.view(np.uint32)) | (a_nan & e_nan)
    if not same.all():
        bad = np.argwhere(~same)[:5]
        shown = ", ".join(f"{tuple(int(x) for x in i)}: {actual[tuple(i)]!r} != "
                          f"{expected[tuple(i)]!r}" for i in bad)
        raise AssertionError(f"{what}: {int((~same).sum())} entries differ, e.g. {shown}")


def assert_matches_dense(adapter, dense_values, dense_active, *, rng=None,
                         max_probe: int = 1 << 18, scipy_formats=("csr",)) -> None:
    """Check every read path of ``adapter`` against a dense reference.

    ``dense_values`` (float32) holds the value of every weight (entries that are not active
    must be 0 there); ``dense_active`` (bool) says which weights are active.
    """
    values = np.asarray(dense_values, dtype=np.float32)
    active = np.asarray(dense_active, dtype=bool)
    rows, cols = values.shape
    assert active.shape == values.shape
    assert adapter.shape == (rows, cols)
    expected_dense = np.where(active, values, np.float32(0))
    n_active = int(active.sum())
    rng = np.random.default_rng(0) if rng is None else rng

    # Structure: in tile mode activity is all-or-nothing per block.
    bh, bw = adapter.block_shape
    if (bh, bw) != (1, 1):
        blocks = active.reshape(rows // bh, bh, cols // bw, bw)
        per_block = blocks.sum(axis=(1, 3))
        assert np.isin(per_block, (0, bh * bw)).all(), "reference activity is not block-uniform"

    # Counts.
    assert adapter.active_count() == n_active
    assert len(adapter) == n_active
    assert adapter.density() == n_active / (rows * cols)
    assert adapter.sparsity_ratio() == 1.0 - n_active / (rows * cols)

    # to_dense.
    dense = adapter.to_dense()
    assert dense.shape == (rows, cols) and dense.dtype == np.float32
    assert dense.flags.c_contiguous
    assert_f32_identical(dense, expected_dense, "to_dense()")

    # active_weights: int64 / int64 / float32, row-major order.
    r, c, v = adapter.active_weights()
    assert (r.dtype, c.dtype, v.dtype) == (np.int64, np.int64, np.float32)
    assert r.ndim == c.ndim == v.ndim == 1
    er, ec = np.nonzero(active)  # row-major
    np.testing.assert_array_equal(r, er, err_msg="active_weights() rows")
    np.testing.assert_array_equal(c, ec, err_msg="active_weights() cols")
    assert_f32_identical(v, values[er, ec], "active_weights() values")

    # get_weights / are_active at every coordinate (or a large random sample of them).
    if rows * cols <= max_probe:
        pr, pc = (x.ravel() for x in np.indices((rows, cols)))
    else:
        pr = rng.integers(0, rows, max_probe)
        pc = rng.integers(0, cols, max_probe)
        # Always include the active weights and the matrix corners.
        pr = np.concatenate([pr, er[:max_probe], [0, 0, rows - 1, rows - 1]])
        pc = np.concatenate([pc, ec[:max_probe], [0, cols - 1, 0, cols - 1]])
    got = adapter.get_weights(pr, pc)
    assert_f32_identical(got, expected_dense[pr, pc], "get_weights()")
    on = adapter.are_active(pr, pc)
    assert on.dtype == np.bool_
    np.testing.assert_array_equal(on, active[pr, pc], err_msg="are_active()")
    # The one-weight readers, on a few random coordinates and on a few active ones.
    picks = [(int(rng.integers(rows)), int(rng.integers(cols))) for _ in range(4)]
    picks += [(int(er[i]), int(ec[i])) for i in rng.integers(0, max(n_active, 1), 4)
              if n_active]
    for i, j in picks:
        w = adapter.get_weight(i, j)
        assert isinstance(w, float)
        assert_f32_identical(np.float32(w), expected_dense[i, j], f"get_weight({i}, {j})")
        assert adapter.is_active(i, j) is bool(active[i, j])
        assert ((i, j) in adapter) is bool(active[i, j])

    # Iteration and to_dict.
    triples = list(adapter)
    assert len(triples) == n_active
    assert triples == list(zip(er.tolist(), ec.tolist(), values[er, ec].tolist())) or \
        _same_with_nan(triples, list(zip(er.tolist(), ec.tolist(), values[er, ec].tolist())))
    if triples:
        i, j, w = triples[0]
        assert type(i) is int and type(j) is int and type(w) is float
    d = adapter.to_dict()
    keys = list(zip(er.tolist(), ec.tolist()))
    assert len(d) == n_active and set(d) == set(keys)
    assert all(type(w) is float for w in d.values())
    assert_f32_identical(np.array([d[k] for k in keys], dtype=np.float32), values[er, ec],
                         "to_dict() values")

    # to_scipy (explicit zeros are stored entries).
    for fmt in scipy_formats:
        m = adapter.to_scipy(fmt)
        assert m.format == fmt
        assert m.shape == (rows, cols) and m.dtype == np.float32
        assert m.nnz == n_active
        if fmt in ("csr", "csc"):
            assert m.has_sorted_indices and m.has_canonical_format
        # Compare the stored entries themselves: toarray() would add -0.0 into +0.0.
        coo = m.tocoo()
        order = np.lexsort((coo.col, coo.row))
        np.testing.assert_array_equal(coo.row[order], er, err_msg=f"to_scipy({fmt!r}) rows")
        np.testing.assert_array_equal(coo.col[order], ec, err_msg=f"to_scipy({fmt!r}) cols")
        assert_f32_identical(coo.data[order], values[er, ec], f"to_scipy({fmt!r}) values")


def _same_with_nan(a, b) -> bool:
    if len(a) != len(b):
        return False
    for (i, j, x), (k, l, y) in zip(a, b):
        if (i, j) != (k, l):
            return False
        if not (x == y or (np.isnan(x) and np.isnan(y))):
            return False
    return True


def reference_of(adapter):
    """(values, active) of an adapter as read through to_dense/are_active: for snapshots."""
    r, c, v = adapter.active_weights()
    values = np.zeros(adapter.shape, dtype=np.float32)
    active = np.zeros(adapter.shape, dtype=bool)
    values[r, c] = v
    active[r, c] = True
    return values, active


# ----------------------------------------------------------------------------- inputs
def random_coo(rng, shape, density, *, explicit_zero=False):
    """``round(density * size)`` distinct coordinates of ``shape`` with standard normal
    float32 values; ``explicit_zero`` makes one of them 0.0 (an active weight all the same)."""
    size = shape[0] * shape[1]
    n = int(round(density * size))
    flat = rng.choice(size, size=n, replace=False)
    rows, cols = np.divmod(flat, shape[1])
    vals = rng.standard_normal(n).astype(np.float32)
    if explicit_zero and n > 3:
        vals[rng.integers(n)] = 0.0
    return rows, cols, vals


# ----------------------------------------------------------------------------- OpenVDB tools
SYSTEM_PYTHON = "/usr/bin/python3"


def system_pyopenvdb_reason() -> str | None:
    """None when the system python imports pyopenvdb, else why not (a skip reason)."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is missing (pyopenvdb is checked with the system python)"
    try:
        p = subprocess.run([SYSTEM_PYTHON, "-c", "import pyopenvdb"], capture_output=True,
                           text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"{SYSTEM_PYTHON} -c 'import pyopenvdb' timed out"
    if p.returncode != 0:
        return (f"{SYSTEM_PYTHON} cannot import pyopenvdb (install Debian's python3-openvdb; "
                f"scripts/setup.sh does): {p.stderr.strip()[-300:]}")
    return None


def run_python(script: str, *args: str, python: str = SYSTEM_PYTHON, timeout: float = 120,
               address_space: int | None = None) -> dict:
    """Run ``script`` with ``python`` (by default the system python, where pyopenvdb lives);
    it prints one JSON line last. Returns that JSON. ``address_space`` caps the child's
    virtual memory in bytes (RLIMIT_AS), so a runaway allocation fails there, not here."""
    def limit() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    p = subprocess.run([python, "-c", textwrap.dedent(script), *args], capture_output=True,
                       text=True, timeout=timeout, preexec_fn=limit if address_space else None)
    assert p.returncode == 0, f"{python} failed ({p.returncode}):\n{p.stderr[-3000:]}"
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON in the output of {python}:\n{p.stdout[-3000:]}"
    return json.loads(lines[-1])


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id, so a failure reproduces; set
    ``HYPRVDB_TEST_SEED`` to draw other inputs."""
    seed = zlib.crc32(request.node.nodeid.encode()) ^ int(os.environ.get("HYPRVDB_TEST_SEED",
                                                                        "0"))
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def pyopenvdb_python():
    reason = system_pyopenvdb_reason()
    if reason:
        pytest.skip(reason)
    return SYSTEM_PYTHON


@pytest.fixture(scope="session")
def vdb_print():
    exe = shutil.which("vdb_print")
    if exe is None:
        pytest.skip("vdb_print is not installed (Debian package libopenvdb-tools; "
                    "scripts/setup.sh installs it)")
    return exe


WRITE_FOREIGN_GRID = """
import json, sys
import pyopenvdb as vdb
path = sys.argv[1]
spec = json.loads(sys.argv[2])
g = vdb.FloatGrid()
g.name = spec.get("name", "density")
acc = g.getAccessor()
for x, y, z, v in spec.get("voxels", []):
    acc.setValueOn((x, y, z), v)
for k, v in spec.get("grid_meta", {}).items():
    g[k] = v
for lo, hi, v in spec.get("tiles", []):
    g.fill(tuple(lo), tuple(hi), v, True)
vdb.write(path, grids=[g], metadata=spec.get("file_meta", {}))
print(json.dumps({"ok": True}))
"""


def write_with_pyopenvdb(path, spec: dict) -> None:
    """Write a FloatGrid with pyopenvdb: spec = {name, voxels: [[x, y, z, v]], grid_meta,
    file_meta, tiles: [[lo, hi, v]]}."""
    run_python(WRITE_FOREIGN_GRID, os.fspath(path), json.dumps(spec))


def wait_for_healthz(url: str, alive, timeout: float, why=lambda: "") -> None:
    """Poll ``url``/healthz until it answers 200; fail when ``alive()`` turns false (the
    server died: ``why()`` says what it printed) or after ``timeout`` seconds."""
    import time

    import httpx
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server at {url} did not answer /healthz {why()}")
        time.sleep(0.05)
