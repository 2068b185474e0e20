"""hyprvdb.ops against a float64 dense numpy reference, on every path it has.

Paths: ``"cpu"`` (``hyprvdb._cpu``: the ``kernels/*.cuh`` logic compiled by g++), ``"numpy"``
(``hyprvdb._native.cpu`` patched to return None: numpy alone) and, in :class:`TestCuda`,
``device="cuda"`` (CuPy raw kernels; skipped without CuPy and a device). One body per check,
run on each path, with fresh random inputs (seeded from the test's id, so a failure
reproduces; set ``HYPRVDB_TEST_SEED`` to draw others) and outputs poisoned before each run:
arrays the library allocates with ``empty`` come back filled with NaN, and ``out`` arrays that
are accumulated into hold random values.

Tolerances, against float64 computed from the same (rounded) inputs:

- float32: ``|got - ref| <= 1e-5 * mag``, where ``mag`` is the magnitude of the row's terms,
  ``sum |x_c * w_c|`` (plus ``|out|`` or ``|bias|`` when added in). A row without terms must
  come back exactly.
- float16 / bfloat16: the float32 result rounded once to the dtype, within 1 ulp of that
  dtype: ``got`` lies in ``[round(ref - 1e-5 mag) - 1 ulp, round(ref + 1e-5 mag) + 1 ulp]``.
- gather is exact; time windows are float64 sums rounded once to float32, compared with
  ``TemporalAdapter`` (which sums the same way) within 1 float32 ulp (summation order).
"""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import random_coo
import hyprvdb
from hyprvdb import _native, ops
from hyprvdb.ops import _kernels as K
from hyprvdb.snapshot import Snapshot

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes comes with JAX
    ml_dtypes = None
    BF16 = None

F32, F16 = np.dtype(np.float32), np.dtype(np.float16)
DTYPES = [pytest.param(F32, id="float32"), pytest.param(F16, id="float16"),
          pytest.param(BF16, id="bfloat16", marks=pytest.mark.skipif(
              BF16 is None, reason="bfloat16 needs ml_dtypes"))]
BATCHES = [1, 3, 8, 16, 33, 256]
SHAPES = [(37, 129), (1, 1), (5, 1000)]
DENSITIES = [0.0, 0.001, 0.01, 0.1]


# ----------------------------------------------------------------------------- backends
class Host:
    """numpy arrays on the CPU (the "cpu" and "numpy" paths)."""

    device = "cpu"

    @staticmethod
    def asarray(a):
        return np.asarray(a)

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)


class Cuda:
    device = "cuda"

    def __init__(self, cupy):
        self.cp = cupy

    def asarray(self, a):
        return self.cp.asarray(a)

    def asnumpy(self, a):
        return self.cp.asnumpy(a)


HOST = Host()


def _poisoned(empty):
    def poisoned_empty(*args, **kwargs):
        a = empty(*args, **kwargs)
        if a.dtype.kind == "f" or a.dtype == BF16:
            a.fill(np.nan)
        return a
    return poisoned_empty


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    """Arrays made with numpy's ``empty``/``empty_like`` come back full of NaN: an output the
    library allocates but does not fully write shows up as NaN."""
    monkeypatch.setattr(np, "empty", _poisoned(np.empty))
    monkeypatch.setattr(np, "empty_like", _poisoned(np.empty_like))


@pytest.fixture(params=["cpu", "numpy"])
def path(request, monkeypatch):
    if request.param == "cpu":
        if _native.cpu() is None:
            pytest.skip("hyprvdb._cpu (the CPU extension) is not built")
    else:
        monkeypatch.setattr(_native, "cpu", lambda: None)
    return request.param


# ----------------------------------------------------------------------------- inputs
def random_delta(rng, shape, density):
    """(Snapshot, dense float32 dW)."""
    rows, cols, vals = random_coo(rng, shape, density, explicit_zero=True)
    dense = np.zeros(shape, np.float32)
    dense[rows, cols] = vals
    return Snapshot.from_coo(rows, cols, vals, shape), dense


def random_array(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(dtype)


def f64(a):
    return np.asarray(a).astype(np.float32).astype(np.float64)


# ----------------------------------------------------------------------------- checking
def _ordered(a, dtype):
    """16-bit floats as integers in value order (+0 and -0 both 0): 1 apart = 1 ulp apart."""
    b = a.astype(dtype).view(np.uint16).astype(np.int32)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def assert_close(got, ref, mag, dtype, what):
    """``got`` (the library's result) against ``ref`` (float64) under the module's tolerance."""
    got = np.asarray(got)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    nan = np.isnan(got.astype(np.float32))
    assert not nan.any(), (f"{what}: {int(nan.sum())} NaN entries (unwritten outputs?), first "
                           f"at {tuple(int(i) for i in np.argwhere(nan)[0])}")
    tol = 1e-5 * mag
    if dtype == F32:
        err = np.abs(got.astype(np.float64) - ref)
        bad = err > tol

        def detail(i):
            return f"{got[i]!r} vs {ref[i]!r} (err {err[i]:.3g}, tol {tol[i]:.3g})"
    else:
        lo = _ordered((ref - tol).astype(np.float32), dtype)
        hi = _ordered((ref + tol).astype(np.float32), dtype)
        g = _ordered(got, dtype)
        bad = (g < lo - 1) | (g > hi + 1)

        def detail(i):
            return (f"{got[i]!r} vs {ref[i]!r} (allowed {(ref[i] - tol[i]):.6g} .. "
                    f"{(ref[i] + tol[i]):.6g} rounded to {dtype}, +-1 ulp)")
    if bad.any():
        idx = [tuple(int(j) for j in i) for i in np.argwhere(bad)[:4]]
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} entries out of tolerance, "
                             "e.g. " + "; ".join(f"{i}: {detail(i)}" for i in idx))


def ulp_equal_f32(got, ref, what, max_ulp=1):
    got = np.asarray(got, np.float32)
    ref = np.asarray(ref, np.float32)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"

    def key(a):
        b = a.view(np.int32).astype(np.int64)
        return np.where(b < 0, -(b & 0x7FFFFFFF), b)
    diff = np.abs(key(got) - key(ref))
    if (diff > max_ulp).any() or np.isnan(got).any():
        i = np.argwhere((diff > max_ulp) | np.isnan(got))[0]
        raise AssertionError(f"{what}: {int((diff > max_ulp).sum())} entries differ by more than "
                             f"{max_ulp} ulp, e.g. at {tuple(i)}: {got[tuple(i)]!r} vs "
                             f"{ref[tuple(i)]!r}")


# ----------------------------------------------------------------------------- bodies
# Each body takes the backend (Host or Cuda) and runs one check; the tests below pick paths.
def check_delta_matmul(bk, rng, batch, shape, density, dtype, method="auto"):
    snap, dW = random_delta(rng, shape, density)
    d = ops.DeviceDelta.upload(snap, bk.device)
    x = random_array(rng, (batch, shape[1]), dtype)
    xd = bk.asarray(x)
    terms = np.abs(f64(x)) @ np.abs(dW.astype(np.float64)).T
    # a new result, scale 1
    y = ops.delta_matmul(xd, d, method=method)
    assert_close(bk.asnumpy(y), f64(x) @ dW.astype(np.float64).T, terms, dtype,
                 f"delta_matmul {batch}x{shape} density {density} {dtype}")
    # accumulated into an existing out (random values: a skipped row keeps them), scale != 1
    scale = -0.37
    out0 = random_array(rng, (batch, shape[0]), dtype)
    out = bk.asarray(out0.copy())
    res = ops.delta_matmul(xd, d, scale, out=out, method=method)
    assert res is out
    ref = f64(out0) + scale * (f64(x) @ dW.astype(np.float64).T)
    assert_close(bk.asnumpy(out), ref, np.abs(f64(out0)) + abs(scale) * terms, dtype,
                 f"delta_matmul(out=..., scale={scale}) {batch}x{shape} {dtype}")
    # the snapshot itself is accepted in place of a DeviceDelta
    if bk.device == "cpu":
        y2 = ops.delta_matmul(xd, snap, 2.0)
        assert_close(bk.asnumpy(y2), 2.0 * (f64(x) @ dW.astype(np.float64).T), 2 * terms, dtype,
                     "delta_matmul(snapshot)")


def check_delta_matmul_segments(bk, rng, batch, shape, density, dtype, nseg, layout,
                                method="auto"):
    """A mixed batch: row b takes delta segment_ids[b] (-1: none), accumulated into random
    values (a row without a delta keeps them exactly). ``layout``: "runs" (each segment's
    rows consecutive, as texts sorted by adapter) or "mixed" (interleaved)."""
    snaps, dense = zip(*[random_delta(rng, shape, density) for _ in range(nseg)])
    ds = [ops.DeviceDelta.upload(s, bk.device) for s in snaps]
    seg = rng.integers(-1, nseg, batch)
    if layout == "runs":
        seg = np.sort(seg)
    x = random_array(rng, (batch, shape[1]), dtype)
    out0 = random_array(rng, (batch, shape[0]), dtype)
    out = bk.asarray(out0.copy())
    scale = 0.75
    res = ops.delta_matmul_segments(bk.asarray(x), ds, seg, scale, out=out, method=method)
    assert res is out
    ref, mag = f64(out0), np.abs(f64(out0))
    for b in range(batch):
        if seg[b] >= 0:
            w = dense[seg[b]].astype(np.float64)
            ref[b] += scale * (w @ f64(x)[b])
            mag[b] += scale * (np.abs(w) @ np.abs(f64(x)[b]))
    assert_close(bk.asnumpy(out), ref, mag, dtype,
                 f"delta_matmul_segments {batch}x{shape} {nseg} deltas {layout} {dtype}")
    fresh = ops.delta_matmul_segments(bk.asarray(x), ds, seg, method=method)
    want = np.zeros((batch, shape[0]))
    for b in range(batch):
        if seg[b] >= 0:
            want[b] = dense[seg[b]].astype(np.float64) @ f64(x)[b]
    assert_close(bk.asnumpy(fresh), want, (mag - np.abs(f64(out0))) / scale, dtype,
                 "delta_matmul_segments (new result)")


def check_fused_linear(bk, rng, batch, shape, density, dtype, with_bias, method="auto"):
    snap, dW = random_delta(rng, shape, density)
    d = ops.DeviceDelta.upload(snap, bk.device)
    x = random_array(rng, (batch, shape[1]), dtype)
    W = random_array(rng, shape, dtype, 0.1)
    bias = random_array(rng, (shape[0],), dtype) if with_bias else None
    scale = 1.75
    y = ops.fused_linear(bk.asarray(x), bk.asarray(W), d, scale,
                         None if bias is None else bk.asarray(bias), method=method)
    how = method
    if bk.device == "cuda" and method == "auto" and ops._delta._cublas_takes(dtype):
        how = ops.gpu_plan(*shape, d.nnz, batch, dtype, with_w=True)["method"]
    if how == "merge" and bk.device == "cuda":
        # the product of the merged weights, rounded once to W's dtype (as serving them is)
        merged = (W.astype(np.float32) + np.float32(scale) * dW).astype(dtype)
        ref = f64(x) @ f64(merged).T
        mag = np.abs(f64(x)) @ np.abs(f64(merged)).T
    else:
        ref = f64(x) @ f64(W).T + scale * (f64(x) @ dW.astype(np.float64).T)
        mag = np.abs(f64(x)) @ np.abs(f64(W)).T + scale * (np.abs(f64(x)) @ np.abs(f64(dW)).T)
    if bias is not None:
        ref += f64(bias)
        mag += np.abs(f64(bias))
    assert_close(bk.asnumpy(y), ref, mag, dtype,
                 f"fused_linear {batch}x{shape} density {density} bias={with_bias} {dtype} "
                 f"method={method} ({how})")


def check_gather(bk, rng, shape, density):
    snap, dW = random_delta(rng, shape, density)
    d = ops.DeviceDelta.upload(snap, bk.device)
    ar, ac = np.nonzero(dW != 0)
    n = 4000
    rows = np.concatenate([ar, rng.integers(0, shape[0], n), [0, shape[0] - 1, 0,
                                                              shape[0] - 1]])
    cols = np.concatenate([ac, rng.integers(0, shape[1], n), [0, 0, shape[1] - 1,
                                                              shape[1] - 1]])
    got = bk.asnumpy(ops.gather(d, bk.asarray(rows), bk.asarray(cols)))
    assert got.dtype == np.float32 and got.shape == rows.shape
    np.testing.assert_array_equal(got.view(np.uint32), dW[rows, cols].view(np.uint32),
                                  err_msg=f"gather {shape} density {density}")


def check_merge_unmerge(bk, rng, shape, density, dtype, scale):
    snap, dW = random_delta(rng, shape, density)
    d = ops.DeviceDelta.upload(snap, bk.device)
    W0 = random_array(rng, shape, dtype)
    W = bk.asarray(W0.copy())
    assert ops.merge(W, d, scale) is W
    W1 = bk.asnumpy(W).copy()  # W is changed in place by unmerge below
    ref = f64(W0) + scale * f64(dW)
    assert_close(W1, ref, np.abs(f64(W0)) + abs(scale) * np.abs(f64(dW)), dtype,
                 f"merge {shape} density {density} {dtype} scale {scale}")
    off = dW == 0
    off[snap.active_weights()[0], snap.active_weights()[1]] = False
    np.testing.assert_array_equal(W1[off].view(np.uint16 if dtype.itemsize == 2 else np.uint32),
                                  W0[off].view(np.uint16 if dtype.itemsize == 2 else np.uint32),
                                  err_msg="merge wrote outside the delta's pattern")
    assert ops.unmerge(W, d, scale) is W
    assert_restored(W0, W1, bk.asnumpy(W), dtype, f"unmerge {shape} {dtype}")


def assert_restored(W0, W1, W2, dtype, what):
    """W2 = round(W1 - s dW) after W1 = round(W0 + s dW): each rounding is at most half an ulp
    of its result, so |W2 - W0| <= eps/2 (|W1| + |W2|) (eps of the dtype; allowed: eps)."""
    eps = float(np.finfo(np.float32).eps if dtype == F32 else np.finfo(np.float16).eps
                if dtype == F16 else ml_dtypes.finfo(BF16).eps)
    tiny = float(np.finfo(np.float16).smallest_subnormal) if dtype == F16 else 0.0
    tol = eps * (np.abs(f64(W1)) + np.abs(f64(W2))) + tiny
    err = np.abs(f64(W2) - f64(W0))
    bad = err > tol
    assert not bad.any(), (f"{what}: W not restored up to rounding at {int(bad.sum())} entries, "
                           f"max err {err.max():.3g} at "
                           f"{np.unravel_index(err.argmax(), err.shape)}")


def check_merge_layers(bk, rng, dtype):
    shapes = [(37, 129), (384, 384), (1, 1), (5, 1000), (1536, 384)]
    snaps, denses = zip(*(random_delta(rng, s, dens) for s, dens in
                          zip(shapes, [0.1, 0.01, 1.0, 0.0, 0.015])))
    ds = [ops.DeviceDelta.upload(s, bk.device) for s in snaps]
    W0 = [random_array(rng, s, dtype) for s in shapes]
    Ws = [bk.asarray(w.copy()) for w in W0]
    scale = 0.5
    out = ops.merge_layers(Ws, ds, scale)
    assert out is Ws or list(out) == Ws
    for i, (w0, dW) in enumerate(zip(W0, denses)):
        assert_close(bk.asnumpy(Ws[i]), f64(w0) + scale * f64(dW),
                     np.abs(f64(w0)) + scale * np.abs(f64(dW)), dtype,
                     f"merge_layers layer {i} {shapes[i]} {dtype}")
    W1 = [bk.asnumpy(w).copy() for w in Ws]
    ops.merge_layers(Ws, ds, -scale)
    for i, w0 in enumerate(W0):
        assert_restored(w0, W1[i], bk.asnumpy(Ws[i]), dtype, f"merge_layers(-scale) layer {i}")


# ----------------------------------------------------------------------------- histories
def _core_or_skip():
    try:
        from hyprvdb import _native
        _native.core()
    except Exception as exc:  # noqa: BLE001 - MissingExtensionError or an import failure
        pytest.skip(f"TemporalAdapter needs hyprvdb._core (OpenVDB): {exc}")


HISTORY_KINDS = ["plain", "resets", "compacted+tail", "pruned", "circular", "tiers"]


def core_available() -> bool:
    try:
        from hyprvdb import _native
        _native.core()
    except Exception:  # noqa: BLE001 - MissingExtensionError or an import failure
        return False
    return True


# Histories these kinds build need the OpenVDB core (the open step is a SparseAdapter; folding
# queries the state); the others are built with store_delta alone, which is numpy only.
NEEDS_CORE = {"pruned", "circular"}


def random_history(rng, kind, shape=(48, 80), open_steps=True):
    """A TemporalAdapter with ~20 stored steps (gaps between them) of the given kind;
    ``open_steps`` commits some steps through ``accumulate`` (which needs the core)."""
    import hyprvdb
    kw = {}
    if kind == "compacted+tail" or kind == "resets":
        kw["compact_every"] = 4
    if kind == "circular":
        kw.update(max_history=7, compact_every=3)
    if kind == "tiers":
        kw.update(tiers=[(4, 1), (None, 4)], compact_every=4)
    h = hyprvdb.TemporalAdapter(*shape, **kw)
    r, c, v = random_coo(rng, shape, 0.05, explicit_zero=True)
    h.store_base(rows=r, cols=c, values=v)
    t = 0
    prev = (r, c)
    for k in range(20):
        t += int(rng.integers(1, 4))
        n = int(rng.integers(5, 60))
        flat = rng.choice(shape[0] * shape[1], n, replace=False)
        rows, cols = np.divmod(flat, shape[1])
        m = min(len(prev[0]), n // 3)  # some coordinates repeat the step before
        rows[:m], cols[:m] = prev[0][:m], prev[1][:m]
        flat = rows * shape[1] + cols
        _, keep = np.unique(flat, return_index=True)
        rows, cols = rows[keep], cols[keep]
        deltas = (rng.standard_normal(len(rows)) * 0.1).astype(np.float32)
        if kind == "resets":
            reset = rng.random(len(rows)) < 0.3
            deltas[reset & (rng.random(len(rows)) < 0.3)] = 0.0  # reset to 0: switched off
            h.store_delta(t, rows, cols, deltas, reset=reset)
        elif open_steps and k % 5 == 2:  # the open step: repeated coordinates sum
            h.accumulate(rows, cols, deltas)
            h.accumulate(rows[:3], cols[:3], deltas[:3])
            h.commit(t)
        else:
            h.store_delta(t, rows, cols, deltas)
        prev = (rows, cols)
    if kind == "pruned":
        h.prune_history(8)
    return h


def window_pairs(h, rng, n=12):
    lo, hi = h.base_step, h.latest
    ts = sorted({lo, hi, *h.steps, *rng.integers(lo, hi + 1, 6).tolist()})
    pairs = {(lo, hi), (hi, hi), (lo, lo)}
    while len(pairs) < n:
        a, b = sorted(rng.choice(ts, 2))
        pairs.add((int(a), int(b)))
    return sorted(pairs)


def check_windows(bk, rng, kind, reference="temporal"):
    """DeviceHistory.window on ``bk`` against TemporalAdapter (``reference="temporal"``, needs
    the core) or against the numpy path's DeviceHistory on the CPU (``"numpy"``, for machines
    without the core; that path is itself checked against TemporalAdapter where it is)."""
    h = random_history(rng, kind, open_steps=reference == "temporal")
    if kind == "pruned":
        assert h.base_step > 0
    if reference == "temporal":
        def ref(t0, t1, mode):
            if mode == "state":
                return h.weights_at_time(t1).to_dense()
            return h.window_delta(t0, t1).to_dense()
    else:
        cpu = ops.DeviceHistory(h, "cpu")

        def ref(t0, t1, mode):
            import unittest.mock
            with unittest.mock.patch.object(_native, "cpu", lambda: None):
                return cpu.window(t0, t1, mode=mode)
    dh = ops.DeviceHistory(h, bk.device)
    for t0, t1 in window_pairs(h, rng):
        got = bk.asnumpy(dh.window(t0, t1))
        assert got.dtype == np.float32 and got.shape == h.shape
        ulp_equal_f32(got, ref(t0, t1, "delta"), f"{kind}: window({t0}, {t1})")
        st = bk.asnumpy(dh.window(t0, t1, mode="state"))
        ulp_equal_f32(st, ref(t0, t1, "state"), f"{kind}: window({t0}, {t1}, mode='state')")
    t0, t1 = h.base_step, h.latest
    one = bk.asnumpy(ops.window_weights(h, t0, t1, mode="state", device=bk.device))
    ulp_equal_f32(one, ref(t0, t1, "state"), f"{kind}: window_weights")


# ============================================================================ CPU / numpy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("batch", BATCHES)
def test_delta_matmul(path, rng, batch, shape, density, dtype):
    check_delta_matmul(HOST, rng, batch, shape, density, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 16, 256])
def test_delta_matmul_model_sized(path, rng, batch, dtype):
    """A real layer's shape: big enough for the threaded CPU loops."""
    check_delta_matmul(HOST, rng, batch, (384, 1536), 0.01, dtype)


@pytest.fixture(params=[True, False], ids=["avx2", "portable"])
def simd(request):
    """The CPU extension's float32 delta product with its AVX2 kernel on, then off (the
    portable kernels every CPU runs)."""
    cpu = _native.cpu()
    if cpu is None:
        pytest.skip("hyprvdb._cpu (the CPU extension) is not built")
    before = cpu.simd()
    if request.param and not cpu.simd(True):
        pytest.skip("this CPU (or build) has no AVX2 + FMA")
    cpu.simd(request.param)
    assert cpu.simd() is request.param
    yield request.param
    cpu.simd(before)


@pytest.mark.parametrize("density", [0.001, 0.01, 0.1])
@pytest.mark.parametrize("shape", [(37, 129), (9, 7), (64, 8), (384, 1536), (1536, 384)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("batch", [8, 9, 31, 32, 33, 77, 256])
def test_delta_matmul_both_cpu_kernels(simd, rng, batch, shape, density):
    """Batches past a chunk and ragged in every way (rows, columns and tokens not multiples
    of 8 or 32), fresh and accumulated, float32 (the only dtype the AVX2 kernel takes)."""
    check_delta_matmul(HOST, rng, batch, shape, density, F32)


@pytest.mark.parametrize("bt", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,density", [((37, 129), 0.1), ((9, 7), 0.5), ((64, 8), 1.0),
                                           ((384, 1536), 0.01), ((5, 1000), 0.0)],
                         ids=lambda v: f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v))
def test_staged_kernel_lane_logic(rng, shape, density, dtype, bt):
    """The CUDA staged kernel's per-lane program (stage_x_tile, staged_row_dot and the warp's
    shuffle tree, kernels/sparse_ops.cuh) run on the CPU lane by lane, against float64: fresh
    and accumulated, batches ragged against the tile."""
    cpu = _native.cpu()
    if cpu is None:
        pytest.skip("hyprvdb._cpu (the CPU extension) is not built")
    snap, dW = random_delta(rng, shape, density)
    d = ops.DeviceDelta.upload(snap, "cpu")
    code = ops._delta._dtype_code(dtype)
    for batch in sorted({1, bt - 1, bt, bt + 1, 3 * bt + 2} - {0}):
        x = random_array(rng, (batch, shape[1]), dtype)
        out0 = random_array(rng, (batch, shape[0]), dtype)
        for scale, base in ((1.0, np.zeros_like(out0)), (-0.37, out0)):
            y = base.copy()
            cpu.delta_matmul_staged(d.indptr, d.indices, d.data, ops._delta._bits(x),
                                    ops._delta._bits(y), code, scale, bt)
            ref = f64(base) + scale * (f64(x) @ dW.astype(np.float64).T)
            mag = np.abs(f64(base)) + abs(scale) * (np.abs(f64(x)) @ np.abs(f64(dW)).T)
            assert_close(y, ref, mag, dtype, f"staged lanes bt={bt} batch={batch} {shape}")
    with pytest.raises(ValueError, match="bt must be a power of two in 1..32, got 12"):
        cpu.delta_matmul_staged(d.indptr, d.indices, d.data, np.zeros((2, shape[1]), F32),
                                np.zeros((2, shape[0]), F32), 0, 1.0, 12)


def test_gpu_plan_rule_and_its_numpy_twin(monkeypatch, rng):
    """kernels/sparse_ops.cuh's choice by shape (the extension's copy, which the CUDA FFI
    targets share) and the numpy twin agree everywhere on a grid of shapes; and the choice
    is the cheapest way by the rule's byte counts."""
    cpu = _native.cpu()
    if cpu is None:
        pytest.skip("hyprvdb._cpu (the CPU extension) is not built")
    D = ops._delta
    assert (cpu.NB, cpu.ROWS_BATCH_MAX, cpu.STAGED_SMEM, cpu.STAGED_WARPS) == (
        D._NB, D._ROWS_BATCH_MAX, D._STAGED_SMEM, D._STAGED_WARPS)
    cases = []
    for rows, k in ((4096, 4096), (4096, 14336), (14336, 4096), (384, 1536), (37, 129),
                    (1, 50000)):
        for density in (0.0, 0.001, 0.01, 0.2):
            for batch in (1, 16, 17, 32, 100, 256, 1024, 70000):
                for itemsize in (2, 4):
                    for w in (False, True):
                        cases.append((rows, k, int(rows * k * density), batch, itemsize, w))
    native = []
    for rows, k, nnz, batch, itemsize, w in cases:
        bt = cpu.staged_batch_tile(k, itemsize, D._STAGED_SMEM, batch)
        g = cpu.staged_row_groups(rows, batch, bt, 8, 132) if bt else 0
        native.append((bt, g, cpu.product_choice(rows, k, nnz, batch, itemsize, bt, g, w)))
    monkeypatch.setattr(_native, "cpu", lambda: None)
    for case, want in zip(cases, native):
        rows, k, nnz, batch, itemsize, w = case
        bt = D.staged_batch_tile(k, itemsize, D._STAGED_SMEM, batch)
        g = D.staged_row_groups(rows, batch, bt, 8, 132) if bt else 0
        got = (bt, g, D.product_choice(rows, k, nnz, batch, itemsize, bt, g, w))
        assert got == want, (case, got, want)
        assert bt == 0 or (k * bt * itemsize <= D._STAGED_SMEM and bt <= 32)
        assert bt in (0, 32) or k * 2 * bt * itemsize > D._STAGED_SMEM or bt >= batch
        costs = {D.ROWS: -(-batch // 8) * nnz * 8.0 + nnz * batch * 32.0}
        if batch > 16 and bt >= 2:
            costs[D.STAGED] = -(-batch // bt) * nnz * 8.0 + g * batch * k * itemsize
        if w and batch > 16:
            costs[D.MERGE] = 2.0 * rows * k * itemsize + nnz * 12.0
        assert got[2] == min(costs, key=lambda m: (costs[m], m)), (case, costs)
    # small batches always take the row kernel; the plan names what it picks
    p = ops.gpu_plan(4096, 4096, 167772, 8, F16, with_w=True, sms=132, smem_bytes=232448)
    assert p["method"] == "rows" and p["smem"] == 0


@pytest.mark.parametrize("layout", ["runs", "mixed"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.1])
@pytest.mark.parametrize("batch", [1, 9, 33, 256])
@pytest.mark.parametrize("nseg", [1, 3, 8])
def test_delta_matmul_segments(path, rng, nseg, batch, density, dtype, layout):
    check_delta_matmul_segments(HOST, rng, batch, (37, 129), density, dtype, nseg, layout)


@pytest.mark.parametrize("layout", ["runs", "mixed"])
@pytest.mark.parametrize("batch", [4, 32, 300])
def test_delta_matmul_segments_model_sized(path, rng, batch, layout):
    check_delta_matmul_segments(HOST, rng, batch, (1536, 384), 0.01, F32, 8, layout)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 8, 9, 77])
def test_delta_matmul_segments_cpu_methods_agree(rng, batch, dtype):
    """The CPU extension's ways through a mixed batch: each segment through the tuned
    kernels (the default), tile by tile through the per-thread function the CUDA row kernel
    runs (``csr_row_dot_rows``), and the CUDA staged kernel's per-lane program lane by lane
    (tiles of at most bt rows of one segment, gathered by the tile's row list), all within
    the tolerance of the float64 reference."""
    cpu = _native.cpu()
    if cpu is None:
        pytest.skip("hyprvdb._cpu (the CPU extension) is not built")
    shape, nseg = (41, 77), 5
    snaps, dense = zip(*[random_delta(rng, shape, 0.1) for _ in range(nseg)])
    ds = [ops.DeviceDelta.upload(s, "cpu") for s in snaps]
    indptr, indices, data = ops._delta._stack(np, ds)
    seg = rng.integers(-1, nseg, batch).astype(np.int32)
    x = random_array(rng, (batch, shape[1]), dtype)
    out0 = random_array(rng, (batch, shape[0]), dtype)
    ref, mag = f64(out0), np.abs(f64(out0))
    for b in range(batch):
        if seg[b] >= 0:
            ref[b] += -2.0 * (dense[seg[b]].astype(np.float64) @ f64(x)[b])
            mag[b] += 2.0 * (np.abs(dense[seg[b]].astype(np.float64)) @ np.abs(f64(x)[b]))
    code = ops._delta._dtype_code(dtype)
    for method, bt in ((0, 8), (1, 8), (2, 1), (2, 4), (2, 8), (2, 32)):
        out = out0.copy()
        cpu.delta_matmul_segments(indptr, indices, data, shape[0], seg, ops._delta._bits(x),
                                  ops._delta._bits(out), code, -2.0, method, bt)
        assert_close(out, ref, mag, dtype, f"method {method}, bt {bt}")


@pytest.mark.parametrize("nb", [1, 3, 8])
def test_segment_tiles_rule_and_its_numpy_twin(monkeypatch, rng, nb):
    """Tiles of at most nb rows of one segment, segments in order, batch order within one,
    -1 rows left out: the C++ rule and the numpy twin give the same arrays."""
    seg = rng.integers(-1, 5, 70).astype(np.int32)
    order, tiles = ops.segment_tiles(seg, 5, nb)
    assert sorted(order.tolist()) == np.flatnonzero(seg >= 0).tolist()
    for start, n, s in tiles.tolist():
        assert 1 <= n <= nb
        rows = order[start:start + n]
        assert (seg[rows] == s).all() and (np.diff(rows) > 0).all()
    assert tiles[:, 1].sum() == (seg >= 0).sum()
    assert (np.diff(tiles[:, 2]) >= 0).all()
    if _native.cpu() is not None:
        monkeypatch.setattr(_native, "cpu", lambda: None)
        o2, t2 = ops.segment_tiles(seg, 5, nb)
        assert np.array_equal(order, o2) and np.array_equal(tiles, t2)


def test_delta_matmul_segments_errors(path, rng):
    snap, _ = random_delta(rng, (10, 12), 0.2)
    other, _ = random_delta(rng, (10, 13), 0.2)
    x = random_array(rng, (4, 12), F32)
    with pytest.raises(ValueError, match=r"segment_ids\[2\] = 2 is not a delta's number "
                                         r"\(-1 \.\. 1\)"):
        ops.delta_matmul_segments(x, [snap, snap], [0, 1, 2, -1])
    with pytest.raises(ValueError, match=r"segment_ids\[0\] = -2"):
        ops.delta_matmul_segments(x, [snap], [-2, 0, 0, 0])
    with pytest.raises(ValueError, match="one entry per row of x \\(4\\), got 3"):
        ops.delta_matmul_segments(x, [snap], [0, 0, 0])
    with pytest.raises(ValueError, match=r"deltas\[1\] is \(10, 13\)"):
        ops.delta_matmul_segments(x, [snap, other], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="non-empty list"):
        ops.delta_matmul_segments(x, [], [0, 0, 0, 0])
    with pytest.raises(TypeError, match="segment_ids must hold integers"):
        ops.delta_matmul_segments(x, [snap], [0.5, 0, 0, 0])
    out = np.zeros((4, 9), np.float32)
    with pytest.raises(ValueError, match="out must be a contiguous float32 array of shape"):
        ops.delta_matmul_segments(x, [snap], [0, 0, 0, 0], out=out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_delta_matmul_strided_x_and_empty_batch(path, rng, dtype):
    snap, dW = random_delta(rng, (37, 129), 0.1)
    wide = random_array(rng, (5, 258), dtype)
    x = wide[:, ::2]  # not contiguous
    y = ops.delta_matmul(x, snap)
    assert_close(y, f64(x) @ f64(dW).T, np.abs(f64(x)) @ np.abs(f64(dW)).T, dtype,
                 "delta_matmul(strided x)")
    empty = ops.delta_matmul(np.zeros((0, 129), dtype), snap)
    assert empty.shape == (0, 37) and empty.dtype == dtype


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("batch", BATCHES)
def test_fused_linear(path, rng, batch, shape, density, dtype, with_bias):
    check_fused_linear(HOST, rng, batch, shape, density, dtype, with_bias)


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 4, 16, 256])
def test_fused_linear_model_sized(path, rng, batch, dtype, with_bias):
    """A real layer's shape: every CPU loop order (tiles of 1, 4 and 8 rows, transposed x)."""
    check_fused_linear(HOST, rng, batch, (384, 1536), 0.01, dtype, with_bias)


@pytest.mark.parametrize("shape", [(37, 129), (1, 1), (5, 1000), (4097, 70), (3, 40000)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("density", DENSITIES)
def test_gather(path, rng, shape, density):
    check_gather(HOST, rng, shape, density)


def test_snapshots_go_to_the_operands_device(monkeypatch, rng):
    # On a machine with a GPU, a Snapshot used with numpy operands (or lists) is still
    # computed on the CPU, and the results are numpy arrays.
    monkeypatch.setattr(_native, "cuda_available", lambda: True)
    snap, dW = random_delta(rng, (37, 129), 0.1)
    x = random_array(rng, (3, 129), np.float32)
    W = random_array(rng, (37, 129), np.float32)
    ref = f64(x) @ f64(dW).T
    terms = np.abs(f64(x)) @ np.abs(f64(dW)).T
    assert_close(ops.delta_matmul(x, snap), ref, terms, np.float32, "delta_matmul")
    assert_close(ops.fused_linear(x, W, snap, 0.0), f64(x) @ f64(W).T,
                 np.abs(f64(x)) @ np.abs(f64(W)).T, np.float32, "fused_linear")
    got = ops.gather(snap, [0, 36], [128, 0])
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, dW[[0, 36], [128, 0]])
    W2 = W.copy()
    ops.merge(W2, snap)
    np.testing.assert_allclose(W2, W + dW, rtol=1e-6, atol=1e-6)


def test_gather_accepts_lists_and_any_int_array(path, rng):
    snap, dW = random_delta(rng, (37, 129), 0.1)
    ar, ac = np.nonzero(dW)
    r2 = ar[:6].reshape(2, 3).astype(np.int32)
    got = ops.gather(snap, r2, ac[:6].reshape(2, 3).astype(np.uint16))
    np.testing.assert_array_equal(got, dW[ar[:6], ac[:6]])
    np.testing.assert_array_equal(ops.gather(snap, [0, 36], [128, 0]), dW[[0, 36], [128, 0]])
    assert ops.gather(snap, [], []).shape == (0,)


@pytest.mark.parametrize("scale", [1.0, -0.37])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.1])
@pytest.mark.parametrize("shape", SHAPES + [(384, 1536)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_merge_unmerge(path, rng, shape, density, dtype, scale):
    check_merge_unmerge(HOST, rng, shape, density, dtype, scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_layers(path, rng, dtype):
    check_merge_layers(HOST, rng, dtype)


@pytest.mark.parametrize("kind", HISTORY_KINDS)
def test_windows_match_temporal_adapter(path, rng, kind):
    _core_or_skip()
    check_windows(HOST, rng, kind)


@pytest.mark.parametrize("kind", [k for k in HISTORY_KINDS if k not in NEEDS_CORE])
def test_windows_cpu_extension_matches_numpy_path(rng, kind):
    """What TestCuda compares with on machines without the core, checked here on the CPU."""
    if _native.cpu() is None:
        pytest.skip("hyprvdb._cpu (the CPU extension) is not built")
    check_windows(HOST, rng, kind, reference="numpy")


def test_device_delta_update_and_to_dense(path, rng):
    snap, dW = random_delta(rng, (37, 129), 0.1)
    d = ops.DeviceDelta.upload(snap, "cpu")
    assert d.device == "cpu" and d.shape == (37, 129) and d.nnz == snap.nnz
    np.testing.assert_array_equal(d.to_dense(), dW)
    r, c, v = snap.active_weights()
    newer = snap.with_values(r, c, v * 2, step=5)
    assert d.update(newer) is False  # same topology: values only
    assert d.step == 5
    np.testing.assert_array_equal(d.to_dense(), 2 * dW)
    x = random_array(rng, (4, 129), F32)
    assert_close(ops.delta_matmul(x, d), f64(x) @ (2 * f64(dW)).T,
                 np.abs(f64(x)) @ np.abs(2 * f64(dW)).T, F32, "after update")
    np.testing.assert_array_equal(ops.gather(d, r, c), 2 * v)
    other, dW2 = random_delta(rng, (37, 129), 0.05)
    assert d.update(other) is True
    np.testing.assert_array_equal(d.to_dense(), dW2)
    np.testing.assert_array_equal(ops.gather(d, *np.nonzero(dW2)), dW2[np.nonzero(dW2)])
    with pytest.raises(ValueError, match=r"snapshot has shape \(37, 130\), this delta \(37, 129\)"):
        d.update(Snapshot.from_coo([0], [0], [1.0], (37, 130)))
    with pytest.raises(TypeError, match="snapshot must be a hyprvdb.Snapshot, got ndarray"):
        d.update(dW)


def test_device_delta_from_csr_arrays(path, rng):
    """A delta over CSR arrays the caller already holds: the same products as an uploaded
    snapshot, no copies, and a clear refusal to gather (it has no grid)."""
    snap, dW = random_delta(rng, (37, 129), 0.1)
    up = ops.DeviceDelta.upload(snap, "cpu")
    d = ops.DeviceDelta.from_csr(up.indptr, up.indices, up.data, up.rows, (37, 129), "cpu")
    assert d.shape == (37, 129) and d.nnz == snap.nnz and d.data is up.data
    np.testing.assert_array_equal(d.to_dense(), dW)
    x = random_array(rng, (33, 129), F32)
    np.testing.assert_array_equal(ops.delta_matmul(x, d, 0.5), ops.delta_matmul(x, up, 0.5))
    W = random_array(rng, (37, 129), F32)
    W2 = W.copy()
    ops.merge(W, d, 2.0)
    ops.merge(W2, up, 2.0)
    np.testing.assert_array_equal(W, W2)
    with pytest.raises(ValueError, match="delta has no NanoVDB grid"):
        ops.gather(d, [0], [0])
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'auto'"):
        ops.DeviceDelta.from_csr(up.indptr, up.indices, up.data, up.rows, (37, 129), "auto")
    # The kernels read the arrays as they are: a wrong dtype or length is refused, not misread.
    n = snap.nnz
    for args, message in [
        ((up.indptr, up.indices.astype(np.int64), up.data, up.rows),
         rf"indices must be a contiguous int32 array of shape \({n},\), got int64"),
        ((up.indptr, up.indices, up.data.astype(np.float64), up.rows),
         rf"data must be a contiguous float32 array of shape \({n},\), got float64"),
        ((up.indptr[:-1], up.indices, up.data, up.rows),
         r"indptr must be a contiguous int32 array of shape \(38,\), got int32 of shape \(37,\)"),
        ((up.indptr, up.indices, up.data, up.rows[:-1]),
         rf"rows must be a contiguous int32 array of shape \({n},\)"),
        ((up.indptr, up.indices.repeat(2)[::2], up.data, up.rows),
         r"indices must be a contiguous int32 array"),
    ]:
        with pytest.raises(ValueError, match=message):
            ops.DeviceDelta.from_csr(*args, (37, 129), "cpu")
    with pytest.raises(TypeError, match=r"indices must be a numpy array \(device 'cpu'\), "
                                        r"got builtins.list"):
        ops.DeviceDelta.from_csr(up.indptr, list(up.indices), up.data, up.rows, (37, 129), "cpu")


def bad_csr_cases():
    """CSR arrays of the right dtypes and lengths whose contents the kernels would read out of
    bounds (each of these crashed the process, or read outside x, before they were checked)."""
    i32, f32 = np.int32, np.float32
    return [
        ((i32([0, 1, 100000]), i32([0]), f32([1]), i32([0]), (2, 4)),
         r"indptr must start at 0 and end at the 1 nonzeros, got 0 .. 100000"),
        ((i32([0, 1, 1]), i32([4]), f32([1]), i32([0]), (2, 4)),
         r"indices\[0\] = 4 is outside the 4 columns"),
        ((i32([0, 1, 1]), i32([-1]), f32([1]), i32([0]), (2, 4)),
         r"indices\[0\] = -1 is outside the 4 columns"),
        ((i32([0, 2, 1, 2]), i32([0, 1]), f32([1, 2]), i32([0, 0]), (3, 4)),
         r"indptr must not decrease: indptr\[2\] = 1 < indptr\[1\] = 2"),
        ((i32([0, 1, 2]), i32([0, 1]), f32([1, 2]), i32([0, 5]), (2, 4)),
         r"rows\[1\] = 5 disagrees with indptr, which puts nonzero 1 in row 1"),
        ((i32([0, 1, 1]), i32([0]), f32([np.nan]), i32([0]), (2, 4)), r"data\[0\] = nan"),
        ((i32([1, 1, 1]), i32([0]), f32([1]), i32([0]), (2, 4)), r"indptr must start at 0"),
    ]


@pytest.mark.parametrize("case", range(len(bad_csr_cases())))
def test_from_csr_refuses_contents_the_kernels_would_read_out_of_bounds(case):
    args, message = bad_csr_cases()[case]
    with pytest.raises(ValueError, match=message):
        ops.DeviceDelta.from_csr(*args, "cpu")


def test_from_csr_issue_reproduction_no_longer_crashes():
    """The exact call that crashed the process (exit -11), in a child so a crash fails the
    test instead of the test run."""
    from conftest import run_python
    out = run_python("""
import json
import numpy as np
from hyprvdb import ops
try:
    d = ops.DeviceDelta.from_csr(np.int32([0, 1, 100000]), np.int32([0]), np.float32([1]),
                                 np.int32([0]), (2, 4), "cpu")
    ops.delta_matmul(np.ones((4, 4), np.float32), d)
    print(json.dumps({"refused": None}))
except ValueError as exc:
    print(json.dumps({"refused": str(exc)}))
""", python=sys.executable)
    assert "indptr must start at 0 and end at the 1 nonzeros" in out["refused"]


# ----------------------------------------------------------------------------- errors
def _error_cases(rng):
    snap, dW = random_delta(rng, (37, 129), 0.1)
    d = ops.DeviceDelta.upload(snap, "cpu")
    x = np.ones((3, 129), np.float32)
    W = np.ones((37, 129), np.float32)
    return [
        ("x wrong width", lambda: ops.delta_matmul(np.ones((3, 128), np.float32), d),
         ValueError, r"x must have shape \(batch, 129\), got \(3, 128\)"),
        ("x 1-D", lambda: ops.delta_matmul(np.ones(129, np.float32), d),
         ValueError, r"x must have shape \(batch, 129\), got \(129,\)"),
        ("x float64", lambda: ops.delta_matmul(np.ones((3, 129)), d),
         TypeError, r"x must be float32, float16 or bfloat16, got dtype float64"),
        ("x a list", lambda: ops.delta_matmul([[1.0] * 129], d),
         TypeError, r"x must be a numpy array on the delta's device, got builtins.list"),
        ("delta not a snapshot", lambda: ops.delta_matmul(x, dW),
         TypeError, r"delta must be a Snapshot or DeviceDelta, got ndarray"),
        ("out wrong shape", lambda: ops.delta_matmul(x, d, out=np.zeros((3, 36), np.float32)),
         ValueError, r"out must be a contiguous float32 array of shape \(3, 37\), got float32 "
                     r"\(3, 36\)"),
        ("out wrong dtype", lambda: ops.delta_matmul(x, d, out=np.zeros((3, 37), np.float16)),
         ValueError, r"out must be a contiguous float32 array of shape \(3, 37\), got float16"),
        ("out strided", lambda: ops.delta_matmul(x, d, out=np.zeros((3, 74), np.float32)[:, ::2]),
         ValueError, r"out must be a contiguous float32 array"),
        ("W wrong shape", lambda: ops.fused_linear(x, W[:, :128], d),
         ValueError, r"W must be a float32 array of shape \(37, 129\) on the delta's device, "
                     r"got float32 \(37, 128\)"),
        ("W wrong dtype", lambda: ops.fused_linear(x, W.astype(np.float16), d),
         ValueError, r"W must be a float32 array of shape \(37, 129\).*got float16"),
        ("bias wrong shape", lambda: ops.fused_linear(x, W, d, bias=np.ones(36, np.float32)),
         ValueError, r"bias must be a float32 array of shape \(37,\), got float32 \(36,\)"),
        ("gather rows out of range", lambda: ops.gather(d, [0, 1, 37], [0, 1, 2]),
         IndexError, r"rows\[2\] = 37 is out of range \(valid: 0..36\)"),
        ("gather negative col", lambda: ops.gather(d, [0, 1], [5, -1]),
         IndexError, r"cols\[1\] = -1 is out of range \(valid: 0..128\)"),
        ("gather cols out of range", lambda: ops.gather(d, [0], [129]),
         IndexError, r"cols\[0\] = 129 is out of range \(valid: 0..128\)"),
        ("gather lengths", lambda: ops.gather(d, [0, 1], [0]),
         ValueError, r"rows and cols must have the same length, got 2 and 1"),
        ("merge_layers pairs", lambda: ops.merge_layers([W, W], [d]),
         ValueError, r"Ws and deltas must pair up: 2 weights, 1 deltas"),
        ("merge W wrong shape", lambda: ops.merge_layers([W, W[:36]], [d, d]),
         ValueError, r"Ws\[1\] must be a contiguous array of shape \(37, 129\) on the delta's "
                     r"device, got ndarray \(36, 129\)"),
        ("merge W float64", lambda: ops.merge(W.astype(np.float64), d),
         TypeError, r"float32, float16 or bfloat16, got dtype float64"),
        ("merge W not contiguous", lambda: ops.merge(np.ones((129, 37), np.float32).T, d),
         ValueError, r"Ws\[0\] must be a contiguous array"),
        ("device name", lambda: ops.DeviceDelta.upload(snap, "gpu"),
         ValueError, r"device must be one of \('cpu', 'cuda', 'auto'\), got 'gpu'"),
    ]


@pytest.mark.parametrize("case", range(20))
def test_errors(path, rng, case):
    cases = _error_cases(rng)
    name, call, exc, msg = cases[case]
    with pytest.raises(exc, match=msg):
        call()


def test_errors_are_the_same_on_both_paths(monkeypatch, rng):
    """Every bad call raises the same type with the same message on the cpu and numpy paths."""
    if _native.cpu() is None:
        pytest.skip("hyprvdb._cpu (the CPU extension) is not built")
    seen = {}
    for p in ("cpu", "numpy"):
        if p == "numpy":
            monkeypatch.setattr(_native, "cpu", lambda: None)
        cases = _error_cases(np.random.default_rng(1))
        for name, call, _, _ in cases:
            try:
                call()
            except Exception as e:  # noqa: BLE001 - comparing whatever comes out
                seen.setdefault(name, []).append((type(e), str(e)))
            else:
                seen.setdefault(name, []).append(None)
    for name, (a, b) in seen.items():
        assert a is not None, f"{name}: no error"
        assert a == b, f"{name}: cpu raised {a}, numpy raised {b}"


def test_window_errors(path, rng):
    _core_or_skip()
    h = random_history(rng, "pruned")
    dh = ops.DeviceHistory(h, "cpu")
    lo, hi = h.base_step, h.latest
    with pytest.raises(ValueError, match=r"mode must be 'delta' or 'state', got 'sum'"):
        dh.window(lo, hi, mode="sum")
    with pytest.raises(ValueError, match=rf"t0 = {lo - 1} is outside the stored steps {lo}..{hi}"):
        dh.window(lo - 1, hi)
    with pytest.raises(ValueError, match=rf"t1 = {hi + 1} is outside the stored steps"):
        dh.window(lo, hi + 1)
    with pytest.raises(ValueError, match=rf"t0 = {hi} must not be after t1 = {lo}"):
        dh.window(hi, lo)


def test_cuda_device_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(_native, "cuda_available", lambda: False)
    assert ops.resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="device='cuda' needs CuPy and a CUDA device"):
        ops.resolve_device("cuda")


# ============================================================= CUDA launch glue, no GPU needed
def kernel_params(filename, name):
    """(type, name) of each parameter of kernel ``name`` in ``kernels/<filename>``."""
    src = (K.KERNEL_DIR / filename).read_text()
    m = re.search(rf"__global__\s+void\s+{name}\s*\(([^)]*)\)", src)
    assert m, f"{name} not found in {filename}"
    out = []
    for p in m.group(1).split(","):
        p = " ".join(p.replace("__restrict__", "").split())
        pname = re.findall(r"(\w+)$", p)[0]
        out.append(("ptr" if "*" in p else p[: -len(pname)].replace("const", "").strip(), pname))
    return out


_C_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32}


class Launch(SimpleNamespace):
    pass


@pytest.fixture
def fake_cuda(monkeypatch):
    """``device="cuda"`` on this machine: numpy stands in for CuPy and a recorder stands in
    for every compiled kernel (launches are recorded, not run). What this checks is the glue
    between ops and kernels/*.cu: grid sizes, argument order and argument widths."""
    launches = []

    def function(filename, name, **defines):
        assert name in K.NAME_EXPRESSIONS[filename], name

        def launch(grid, block, args, shared_mem=0):
            launches.append(Launch(file=filename, name=name, grid=grid, block=block, args=args,
                                   defines=defines, shared_mem=shared_mem,
                                   opt_in=getattr(launch, "max_dynamic_shared_size_bytes", 0)))
        return launch

    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(_native, "cuda_available", lambda: True)
    monkeypatch.setattr(K, "function", function)
    # an H100/H200's limits: 132 multiprocessors, 227 KiB of shared memory per block
    monkeypatch.setattr(ops._delta, "_device_limits", lambda device: (132, 232448))
    monkeypatch.setattr(ops._delta, "_current_device", lambda: 0)
    ops._delta._plan.cache_clear()  # plans remembered under other limits
    yield launches
    ops._delta._plan.cache_clear()


def check_launch(launch, expected):
    """Arguments line up with the kernel's parameters by name, with the C widths."""
    params = kernel_params(launch.file, launch.name.split("<")[0])
    assert len(launch.args) == len(params), (f"{launch.name}: {len(launch.args)} arguments for "
                                             f"{len(params)} parameters {params}")
    for (ctype, pname), arg in zip(params, launch.args):
        if ctype == "ptr":
            assert isinstance(arg, (np.ndarray, np.uint64)), (pname, type(arg))
        else:
            assert type(arg) is _C_SCALARS[ctype], (f"{launch.name}: {pname} is {ctype}, "
                                                    f"passed {type(arg).__name__}")
        if pname in expected:
            want = expected[pname]
            if isinstance(want, np.ndarray):
                assert arg is want or (isinstance(arg, np.ndarray) and
                                       np.shares_memory(arg, want)), f"{pname}: wrong array"
            else:
                assert arg == want, f"{launch.name}: {pname} = {arg!r}, expected {want!r}"
    threads = int(np.prod(launch.block))
    assert 0 < threads <= 1024 and threads % 32 == 0


@pytest.mark.parametrize("batch,method", [(1, "auto"), (9, "auto"), (16, "auto"),
                                          (33, "rows"), (1000, "rows")])
def test_cuda_launch_glue_delta_matmul(fake_cuda, rng, batch, method):
    snap, _ = random_delta(rng, (37, 129), 0.1)
    d = ops.DeviceDelta.upload(snap, "cuda")
    assert d.device == "cuda"
    x = random_array(rng, (batch, 129), F16)
    out = np.zeros((batch, 37), F16)
    ops.delta_matmul(x, d, 0.5, out=out, method=method)
    (ln,) = fake_cuda
    assert ln.name == "delta_matmul<__half>"
    check_launch(ln, {"indptr": d.indptr, "indices": d.indices, "data": d.data, "x": x,
                      "ldx": 129, "y": out, "ldy": 37, "rows": 37, "batch": batch,
                      "scale": np.float32(0.5)})
    warps = ln.block[0] // 32
    assert ln.grid[0] * warps >= 37 and (ln.grid[0] - 1) * warps < 37
    nb = int(ln.defines.get("HVDB_NB", 8))
    assert ln.grid[1] * nb >= batch and (ln.grid[1] - 1) * nb < batch


@pytest.mark.parametrize("shape,batch,dtype,budget", [
    ((37, 129), 33, F16, None), ((37, 129), 1000, F32, None), ((384, 1536), 257, F16, None),
    ((4096, 4096), 300, F16, None), ((100, 20000), 40, F32, None),
    ((7, 16), 65535 * 2 + 5, F32, 64)])  # a one-row tile: 65535 tiles a launch
def test_cuda_launch_glue_delta_matmul_staged(fake_cuda, monkeypatch, rng, shape, batch, dtype,
                                              budget):
    """Wide batches: the staged kernel, its batch tile of x in shared memory (opted into past
    48 KiB), and grid from gpu_plan; batches past the grid's 65535 tiles go in slices."""
    if budget:
        monkeypatch.setattr(ops._delta, "_STAGED_SMEM", budget)
    rows, k = shape
    snap, _ = random_delta(rng, shape, 0.002 if rows * k > 1e6 else 0.1)
    d = ops.DeviceDelta.upload(snap, "cuda")
    x = np.zeros((batch, k), dtype)
    out = np.zeros((batch, rows), dtype)
    plan = ops.gpu_plan(rows, k, d.nnz, batch, dtype, method="staged")
    assert plan == ops.gpu_plan(rows, k, d.nnz, batch, dtype, method="staged", sms=132,
                                smem_bytes=232448)
    ops.delta_matmul(x, d, 0.5, out=out, method="staged")
    bt, smem = plan["bt"], plan["smem"]
    assert bt & (bt - 1) == 0 and 1 <= bt <= 32 and smem == k * bt * x.itemsize <= 96 * 1024
    slices = -(-batch // (65535 * bt))
    assert len(fake_cuda) == slices
    done = 0
    for ln in fake_cuda:
        assert ln.name.startswith("delta_matmul_staged<") and ln.shared_mem == smem
        assert ln.opt_in == (smem if smem > 48 * 1024 else 0)
        n = int(ln.args[9])  # batch
        check_launch(ln, {"indptr": d.indptr, "indices": d.indices, "data": d.data,
                          "x": x[done:done + n], "ldx": k, "y": out[done:done + n], "ldy": rows,
                          "rows": rows, "k": k, "bt": bt, "scale": np.float32(0.5)})
        assert ln.grid == (plan["row_groups"], -(-n // bt)) and ln.block == (32 * 16,)
        done += n
    assert done == batch


def test_cuda_launch_glue_auto_follows_gpu_plan(fake_cuda, rng):
    """method="auto" launches what gpu_plan says for each shape."""
    for shape, density in (((37, 129), 0.1), ((384, 1536), 0.01), ((1536, 384), 0.001)):
        snap, _ = random_delta(rng, shape, density)
        d = ops.DeviceDelta.upload(snap, "cuda")
        for batch in (1, 16, 17, 64, 300):
            fake_cuda.clear()
            ops.delta_matmul(np.zeros((batch, shape[1]), F16), d)
            want = ops.gpu_plan(*shape, d.nnz, batch, F16)["method"]
            (ln,) = fake_cuda
            assert ln.name == {"rows": "delta_matmul<__half>",
                               "staged": "delta_matmul_staged<__half>"}[want], (shape, batch)


def test_staged_kernel_refuses_what_shared_memory_cannot_hold(fake_cuda, rng):
    snap, _ = random_delta(rng, (3, 60000), 0.001)
    d = ops.DeviceDelta.upload(snap, "cuda")
    x = np.zeros((40, 60000), F32)
    with pytest.raises(ValueError, match=r"method='staged' needs one batch row of x "
                                         r"\(60000 x 4 bytes\) in 98304 bytes"):
        ops.delta_matmul(x, d, method="staged")
    assert ops.gpu_plan(3, 60000, d.nnz, 40, F32)["method"] == "rows"
    assert not fake_cuda


def test_method_names_are_checked_on_every_device(rng):
    snap, _ = random_delta(rng, (5, 7), 0.3)
    x, W = np.ones((2, 7), F32), np.ones((5, 7), F32)
    with pytest.raises(ValueError, match=r"method must be one of \('auto', 'rows', 'staged'\), "
                                         r"got 'merge'"):
        ops.delta_matmul(x, snap, method="merge")
    with pytest.raises(ValueError, match=r"method must be one of \('auto', 'rows', 'staged', "
                                         r"'merge', 'fused'\), got 'cublas'"):
        ops.fused_linear(x, W, snap, method="cublas")
    for m in ("auto", "rows", "staged", "merge", "fused"):  # the CPU has one way
        np.testing.assert_array_equal(ops.fused_linear(x, W, snap, method=m),
                                      ops.fused_linear(x, W, snap))


@pytest.mark.parametrize("with_bias", [False, True])
def test_cuda_launch_glue_fused_linear_merge(fake_cuda, monkeypatch, rng, with_bias):
    """method="merge": the delta merged into a scratch copy of W (W itself untouched), then
    one GEMM."""
    merged = []
    monkeypatch.setattr(ops._delta, "_cuda_merge",
                        lambda Ws, ds, scale: merged.append((Ws, ds, scale)))
    snap, _ = random_delta(rng, (37, 129), 0.1)
    d = ops.DeviceDelta.upload(snap, "cuda")
    x = random_array(rng, (40, 129), F32)
    W = random_array(rng, (37, 129), F32)
    W0 = W.copy()
    bias = random_array(rng, (37,), F32) if with_bias else None
    out = ops.fused_linear(x, W, d, 2.0, bias, method="merge")
    assert not fake_cuda
    ((Ws, ds, scale),) = merged
    assert len(Ws) == 1 and Ws[0] is not W and not np.shares_memory(Ws[0], W)
    assert ds == [d] and scale == 2.0
    np.testing.assert_array_equal(W, W0)
    want = x @ W.T + (bias if with_bias else 0)  # the merge is recorded, not run
    np.testing.assert_array_equal(out, want.astype(np.float32))


@pytest.mark.parametrize("with_bias", [False, True])
def test_cuda_launch_glue_fused_linear_on_cublas(fake_cuda, rng, with_bias):
    """Where CuPy's matmul takes the dtype: the dense part on cuBLAS into the output, then
    the delta kernel accumulating into it."""
    snap, _ = random_delta(rng, (37, 129), 0.1)
    d = ops.DeviceDelta.upload(snap, "cuda")
    x = random_array(rng, (17, 129), F32)
    W = random_array(rng, (37, 129), F32)
    bias = random_array(rng, (37,), F32) if with_bias else None
    out = ops.fused_linear(x, W, d, 2.0, bias, method="rows")
    (ln,) = fake_cuda
    assert ln.name == "delta_matmul<float>"
    check_launch(ln, {"indptr": d.indptr, "x": x, "y": out, "rows": 37, "batch": 17,
                      "scale": np.float32(2.0)})
    want = x @ W.T + (bias if with_bias else 0)  # the launch is recorded, not run
    np.testing.assert_array_equal(out, want.astype(np.float32))


@pytest.mark.parametrize("with_bias", [False, True])
def test_cuda_launch_glue_fused_linear(fake_cuda, monkeypatch, rng, with_bias):
    """Where it does not (bfloat16 on a CuPy without it): the fused kernel."""
    monkeypatch.setattr(ops._delta, "_cublas_takes", lambda dtype: False)
    snap, _ = random_delta(rng, (37, 129), 0.1)
    d = ops.DeviceDelta.upload(snap, "cuda")
    x = random_array(rng, (17, 129), F32)
    W = random_array(rng, (37, 129), F32)
    bias = random_array(rng, (37,), F32) if with_bias else None
    ops.fused_linear(x, W, d, 2.0, bias)
    (ln,) = fake_cuda
    assert ln.name == "fused_linear<float>"
    check_launch(ln, {"W": W, "ldw": 129, "indptr": d.indptr, "indices": d.indices,
                      "data": d.data, "x": x, "ldx": 129, "rows": 37, "k": 129, "batch": 17,
                      "scale": np.float32(2.0), "ldy": 37})
    assert ln.grid[0] == 37 and ln.grid[1] * 8 >= 17
    b = ln.args[2]
    assert (b is bias) if with_bias else (isinstance(b, np.uint64) and b == 0)


@pytest.mark.parametrize("batch,method", [(1, "auto"), (9, "auto"), (70, "rows"),
                                          (70, "staged"), (300, "auto")])
def test_cuda_launch_glue_delta_matmul_segments(fake_cuda, rng, batch, method):
    snaps = [random_delta(rng, (37, 129), 0.1)[0] for _ in range(3)]
    ds = [ops.DeviceDelta.upload(s, "cuda") for s in snaps]
    x = random_array(rng, (batch, 129), BF16 or F16)
    out = np.zeros((batch, 37), x.dtype)
    seg = rng.integers(-1, 3, batch)
    ops.delta_matmul_segments(x, ds, seg, 0.5, out=out, method=method)
    if not (seg >= 0).any():
        assert not fake_cuda
        return
    (ln,) = fake_cuda
    nnz = sum(d.nnz for d in ds)
    plan = ops.gpu_plan(37, 129, nnz // 3, batch, x.dtype, method=method)
    kernel = {"rows": "delta_matmul_segments", "staged": "delta_matmul_segments_staged"}[
        plan["method"]]
    assert ln.name.startswith(kernel + "<")
    nb = plan["bt"] if plan["method"] == "staged" else 8
    order, tiles = ops.segment_tiles(seg.astype(np.int32), 3, nb)
    check_launch(ln, {"x": x, "ldx": 129, "y": out, "ldy": 37, "rows": 37,
                      "scale": np.float32(0.5), "k": 129, "bt": nb})
    names = [p for _, p in kernel_params("matmul.cu", kernel)]
    args = dict(zip(names, ln.args))
    assert np.array_equal(args["order"], order) and np.array_equal(args["tiles"], tiles)
    assert int(args["indptr"][-1]) == nnz == len(args["indices"])
    assert ln.grid[1] == len(tiles)
    if plan["method"] == "staged":
        assert ln.grid[0] == plan["row_groups"] and ln.shared_mem == plan["smem"]
        assert ln.block == (32 * 16,)
    else:
        warps = ln.block[0] // 32
        assert ln.grid[0] * warps >= 37


def test_cuda_launch_glue_gather(fake_cuda, rng):
    snap, dW = random_delta(rng, (4097, 70), 0.01)
    d = ops.DeviceDelta.upload(snap, "cuda")
    rows, cols = np.arange(1000) % 4097, np.arange(1000) % 70
    ops.gather(d, rows, cols)
    (ln,) = fake_cuda
    check_launch(ln, {"grid": d.grid, "values": d.values, "n": 1000})
    assert ln.grid[0] * ln.block[0] >= 1000


def test_cuda_launch_glue_window(fake_cuda, rng):
    h = random_history(rng, "resets", open_steps=False)  # store_delta only: no core needed
    dh = ops.DeviceHistory(h, "cuda")
    lo, hi = h.base_step, h.latest
    dh.window(lo, hi, mode="state")
    (ln,) = fake_cuda
    n_runs = len(dh._arrays["run_idx"])
    check_launch(ln, {"n_runs": n_runs, "t0": lo, "t1": hi, "mode": 1,
                      **{k: v for k, v in dh._arrays.items()}})
    assert ln.grid[0] * ln.block[0] >= n_runs


# ============================================================================ CUDA
@pytest.mark.gpu
class TestCuda:
    """The same checks with ``device="cuda"`` (CuPy raw kernels on a GPU)."""

    @pytest.fixture(autouse=True)
    def bk(self, monkeypatch):
        cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
        if not ops.cuda_available():
            pytest.skip("CuPy sees no CUDA device")
        monkeypatch.setattr(cupy, "empty", _poisoned(cupy.empty))
        monkeypatch.setattr(cupy, "empty_like", _poisoned(cupy.empty_like))
        return Cuda(cupy)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("density", DENSITIES)
    @pytest.mark.parametrize("shape", SHAPES + [(384, 1536)], ids=lambda s: f"{s[0]}x{s[1]}")
    @pytest.mark.parametrize("batch", BATCHES)
    def test_delta_matmul(self, bk, rng, batch, shape, density, dtype):
        check_delta_matmul(bk, rng, batch, shape, density, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape,density", [((37, 129), 0.1), ((384, 1536), 0.01),
                                               ((1536, 384), 0.01), ((5, 20000), 0.01)],
                             ids=lambda v: f"{v[0]}x{v[1]}" if isinstance(v, tuple) else str(v))
    @pytest.mark.parametrize("batch", [1, 17, 33, 256, 1000])
    @pytest.mark.parametrize("method", ["rows", "staged"])
    def test_delta_matmul_methods(self, bk, rng, method, batch, shape, density, dtype):
        """Each GPU kernel forced, at every batch (the staged one's tiles ragged against
        it, and x's tile past 48 KiB of shared memory for 5 x 20000)."""
        check_delta_matmul(bk, rng, batch, shape, density, dtype, method)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", [(37, 129), (384, 1536)], ids=lambda s: f"{s[0]}x{s[1]}")
    @pytest.mark.parametrize("batch", [1, 33, 256])
    @pytest.mark.parametrize("method", ["rows", "staged", "merge", "fused"])
    def test_fused_linear_methods(self, bk, rng, method, batch, shape, dtype):
        if method != "fused" and not ops._delta._cublas_takes(dtype):
            pytest.skip(f"this CuPy's matmul does not take {dtype}")
        check_fused_linear(bk, rng, batch, shape, 0.01, dtype, True, method)

    @pytest.mark.parametrize("layout", ["runs", "mixed"])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("batch", [1, 9, 33, 256, 1024])
    @pytest.mark.parametrize("nseg", [1, 8])
    def test_delta_matmul_segments(self, bk, rng, nseg, batch, dtype, layout):
        check_delta_matmul_segments(bk, rng, batch, (384, 1536), 0.01, dtype, nseg, layout)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("batch", [1, 33, 1024])
    @pytest.mark.parametrize("method", ["rows", "staged"])
    def test_delta_matmul_segments_methods(self, bk, rng, method, batch, dtype):
        check_delta_matmul_segments(bk, rng, batch, (384, 1536), 0.01, dtype, 8, "mixed",
                                    method)

    @pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("density", [0.0, 0.01, 0.1])
    @pytest.mark.parametrize("shape", SHAPES + [(384, 1536)], ids=lambda s: f"{s[0]}x{s[1]}")
    @pytest.mark.parametrize("batch", [1, 3, 8, 16, 33, 256])
    def test_fused_linear(self, bk, rng, batch, shape, density, dtype, with_bias):
        check_fused_linear(bk, rng, batch, shape, density, dtype, with_bias)

    @pytest.mark.parametrize("shape", [(37, 129), (1, 1), (5, 1000), (4097, 70), (3, 40000)],
                             ids=lambda s: f"{s[0]}x{s[1]}")
    @pytest.mark.parametrize("density", DENSITIES)
    def test_gather(self, bk, rng, shape, density):
        check_gather(bk, rng, shape, density)

    @pytest.mark.parametrize("scale", [1.0, -0.37])
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", SHAPES + [(384, 1536)], ids=lambda s: f"{s[0]}x{s[1]}")
    def test_merge_unmerge(self, bk, rng, shape, dtype, scale):
        check_merge_unmerge(bk, rng, shape, 0.05, dtype, scale)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_merge_layers(self, bk, rng, dtype):
        check_merge_layers(bk, rng, dtype)

    @pytest.mark.parametrize("kind", HISTORY_KINDS)
    def test_windows_match_temporal_adapter(self, bk, rng, kind):
        if core_available():
            check_windows(bk, rng, kind)
        elif kind in NEEDS_CORE:
            pytest.skip(f"a {kind!r} history needs hyprvdb._core (OpenVDB) to be built")
        else:  # serving machines: no OpenVDB; the numpy path is the reference
            check_windows(bk, rng, kind, reference="numpy")

    def test_batches_beyond_the_grid_limit(self, bk, rng):
        # gridDim.y caps one launch at 65535 * 8 rows; larger batches go in slices.
        snap, dW = random_delta(rng, (5, 16), 0.5)
        batch = 65535 * 8 + 13
        x = random_array(rng, (batch, 16), np.float32)
        W = random_array(rng, (5, 16), np.float32)
        d = ops.DeviceDelta.upload(snap, "cuda")
        y = bk.asnumpy(ops.delta_matmul(bk.asarray(x), d))
        assert_close(y, f64(x) @ f64(dW).T, np.abs(f64(x)) @ np.abs(f64(dW)).T, np.float32,
                     "delta_matmul, large batch")
        y = bk.asnumpy(ops.fused_linear(bk.asarray(x), bk.asarray(W), d))
        assert_close(y, f64(x) @ (f64(W) + f64(dW)).T,
                     np.abs(f64(x)) @ (np.abs(f64(W)) + np.abs(f64(dW))).T, np.float32,
                     "fused_linear, large batch")

    def test_errors_match_the_cpu(self, bk, rng):
        snap, _ = random_delta(rng, (37, 129), 0.1)
        d = ops.DeviceDelta.upload(snap, "cuda")
        cp = bk.cp
        with pytest.raises(ValueError, match=r"x must have shape \(batch, 129\), got \(3, 128\)"):
            ops.delta_matmul(cp.ones((3, 128), cp.float32), d)
        with pytest.raises(TypeError, match=r"x must be a cupy array on the delta's device"):
            ops.delta_matmul(np.ones((3, 129), np.float32), d)
        with pytest.raises(IndexError, match=r"rows\[2\] = 37 is out of range \(valid: 0..36\)"):
            ops.gather(d, cp.asarray([0, 1, 37]), cp.asarray([0, 1, 2]))
        with pytest.raises(ValueError, match=r"Ws\[0\] must be a contiguous array"):
            ops.merge(cp.ones((36, 129), cp.float32), d)


# ----------------------------------------------------------------------------- issue 12 cases
def issue_cases():
    rng = np.random.default_rng(12)
    snap, dW = random_delta(rng, (6, 10), 0.3)
    x = random_array(rng, (3, 10), F32)
    W = random_array(rng, (6, 10), F32)
    h = hyprvdb.TemporalAdapter(6, 10)
    h.store_delta(1, [0], [1], [0.5])
    h.store_delta(2, [1], [2], [0.25])
    dh = ops.DeviceHistory(h, "cpu")
    return [
        ("scale nan", lambda: ops.delta_matmul(x, snap, float("nan")), ValueError,
         "scale = nan is not finite"),
        ("scale inf", lambda: ops.fused_linear(x, W, snap, float("inf")), ValueError,
         "scale = inf is not finite"),
        ("scale str", lambda: ops.delta_matmul(x, snap, "2"), TypeError,
         "scale must be a real number, got str '2'"),
        ("merge nan", lambda: ops.merge(W, snap, float("nan")), ValueError, "scale = nan"),
        ("unmerge inf", lambda: ops.unmerge(W, snap, -float("inf")), ValueError,
         "scale = -inf"),
        ("merge_layers bool", lambda: ops.merge_layers([W], [snap], True), TypeError,
         "scale must be a real number, got bool True"),
        ("gather floats", lambda: ops.gather(snap, [0.7], [1.2]), TypeError,
         "rows must hold integers, got dtype float64"),
        ("gather 2**70", lambda: ops.gather(snap, [2**70], [0]), IndexError,
         r"rows\[0\] = 1180591620717411303424 is out of range"),
        ("window floats", lambda: dh.window(0.5, 2.7), TypeError,
         "t0 must be an int, got float 0.5"),
        ("window bool", lambda: dh.window(0, True), TypeError, "t1 must be an int, got bool"),
        ("out a list", lambda: ops.delta_matmul(x, snap, out=[[0.0] * 6] * 3), TypeError,
         "out must be a numpy array on the delta's device, got builtins.list"),
        ("bias a list", lambda: ops.fused_linear(x, W, snap, 1.0, [0.0] * 6), TypeError,
         "bias must be a numpy array on the delta's device, got builtins.list"),
        ("snapshot step 2**70", lambda: Snapshot.from_coo([0], [0], [1.0], (2, 2), step=2**70),
         ValueError, r"step must be in 0..2\*\*63 - 1 \(it is kept as an int64\), got "
                     r"1180591620717411303424"),
        ("with_values step 2**64", lambda: snap.with_values([], [], [], step=2**64), ValueError,
         "step must be in 0..2"),
    ]


@pytest.mark.parametrize("case", range(len(issue_cases())),
                         ids=[c[0] for c in issue_cases()])
def test_loose_inputs_are_refused_clearly(case):
    what, call, exc, message = issue_cases()[case]
    with pytest.raises(exc, match=message):
        call()


def test_a_refused_merge_leaves_w_as_it_was():
    rng = np.random.default_rng(1)
    snap, _ = random_delta(rng, (6, 10), 0.3)
    W = random_array(rng, (6, 10), F32)
    before = W.copy()
    with pytest.raises(ValueError):
        ops.merge(W, snap, float("nan"))
    assert np.array_equal(W, before)
