"""Read path: the sparse delta in the matmul, snapshot builds, merges and time windows,
against the peers a user would pick (scipy.sparse on the CPU; cuBLAS and cuSPARSE through
CuPy on a GPU).

CPU section (always)
--------------------
delta matmul   ``y = x @ dW.T`` with ``hyprvdb.ops.delta_matmul(x, delta)`` (``delta`` a
               ``DeviceDelta`` on ``"cpu"``: the CPU extension ``hyprvdb._cpu`` when built,
               else numpy) against scipy.sparse CSR written as a user would write it,
               ``(csr @ x.T).T``. dW 4096 x 4096 and 4096 x 14336 (out x in) at 1% and 0.1%
               density, float32, batch 1, 16 and 256. Target: ours / scipy <= 1.5x in every
               case. Results are compared with scipy's (max error relative to max |y|).
snapshot build ``Snapshot.from_coo`` for one step of the temporal workload's shape set: 36
               matrices (per layer four 384 x 384, one 1536 x 384, one 384 x 1536; 6 layers),
               each ~1.5% active. Per-matrix median of the repeats, then median and max over
               the 36. Target: <= 5 ms per matrix. ``DeviceDelta.upload`` (the CSR view) is
               shown beside it (info).
merge          ``ops.merge_layers`` of a 1%-dense adapter into 32 float32 layers of
               4096 x 4096 (info; alternately +1 and -1 so the weights stay put).

GPU section (only when CuPy imports and sees a device; otherwise the reason is printed)
-----------------------------------------------------------------------------------
Timed with CuPy events (median of the repeats after a warm-up).
copy           device-to-device copy of a 1 GiB buffer: the bandwidth ceiling
               (bytes read + bytes written per second).
fused linear   cuBLAS ``x @ W.T`` (float16, CuPy) against ``ops.fused_linear(x, W, delta)`` at
               1% and 2% density, batch 1, 4 and 16, 4096 x 4096 and 4096 x 14336. Target:
               ours / cuBLAS <= 1.15x.
delta kernel   ``ops.delta_matmul(x, delta, out=out)`` (float32) in GB/s of the bytes it must
               read and write (CSR arrays, x once, out read and written) against the copy
               bandwidth (target >= 50%), and its time against cupyx.scipy.sparse CSR
               ``(csr @ x.T).T`` (info).
merge          ``ops.merge_layers`` of a 1% adapter into 32 layers of 4096 x 4096 (float32).
               Target: <= 10 ms.
window         ``DeviceHistory.window`` (mode "state") over a 4096 x 4096 history (1% base,
               64 steps of 0.1% changes): GB/s of the Z-run arrays read plus the dense matrix
               written, against the copy bandwidth. Target: >= 50%.
linear         cuBLAS ``x @ W.T`` alone against ``ops.fused_linear`` (cuBLAS into the output,
               then the delta kernel into it), float16 and bfloat16, dW 4096 x 4096,
               4096 x 14336 and 14336 x 4096 at 1% and 0.1%, batch 1, 16, 256 and 1024.
               Targets: <= 1.3x cuBLAS at batch <= 16, <= 2x at 256 .. 1024; the delta alone
               (x's dtype) no slower than cuSPARSE CSR (float32) at every batch. Beside them
               (info, for choosing by shape): W copied to a scratch buffer, the delta merged
               into it, one cuBLAS GEMM.
overhead       host time per ``ops.delta_matmul`` call (launches queued, no synchronization)
               against an empty CuPy kernel launch with as many arguments. Target: <= 10 us
               above it.
segments       ``ops.delta_matmul_segments`` with 8 deltas of 1% (4096 x 4096, float16),
               rows dealt round-robin, against one ``delta_matmul`` per delta (info).

The GPU section needs neither scipy nor OpenVDB (hyprvdb._core): snapshots come from
``Snapshot.from_coo`` and the history from ``TemporalAdapter.store_delta``, which are numpy
only. Every measurement that raises is reported with its error instead of stopping the run.

Run:  python bench/matmul.py [--repeats N] [--no-cpu] [--no-gpu] [--seed S] [--json PATH]
                            [--plot PATH]
``--plot PATH`` draws the matmul tables (ours against scipy, cuBLAS and cuSPARSE, median ms,
log scale) as bar charts into a PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from hyprvdb import _native, ops  # noqa: E402
from hyprvdb.snapshot import Snapshot  # noqa: E402

try:
    import scipy.sparse as sp
    SCIPY_SKIP = None
except ImportError as exc:  # the GPU machines have no scipy
    sp = None
    SCIPY_SKIP = f"scipy is not importable ({exc})"

# ------------------------------------------------------------------------------ config
CPU_SHAPES = ((4096, 4096), (4096, 14336))
CPU_DENSITIES = (0.01, 0.001)
CPU_BATCHES = (1, 16, 256)
TARGET_CPU_RATIO = 1.5

D_MODEL, D_FF, LAYERS = 384, 1536, 6
SNAP_DENSITY = 0.015
TARGET_SNAP_MS = 5.0

MERGE_LAYERS, MERGE_SHAPE, MERGE_DENSITY = 32, (4096, 4096), 0.01

GPU_SHAPES = ((4096, 4096), (4096, 14336))
GPU_FUSED_DENSITIES = (0.01, 0.02)
GPU_FUSED_BATCHES = (1, 4, 16)
GPU_DELTA_DENSITIES = (0.01, 0.001)
GPU_DELTA_BATCHES = (1, 16)
TARGET_FUSED_RATIO = 1.15
TARGET_DELTA_BW = 0.5
TARGET_MERGE_MS = 10.0
TARGET_WINDOW_BW = 0.5
WINDOW_SHAPE, WINDOW_STEPS, WINDOW_BASE, WINDOW_CHANGE = (4096, 4096), 64, 0.01, 0.001
# cuBLAS + delta at the shapes, densities, dtypes and batches of the many-adapters issue
LINEAR_SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096))
LINEAR_DENSITIES = (0.01, 0.001)
LINEAR_DTYPES = ("float16", "bfloat16")
LINEAR_BATCHES = (1, 16, 256, 1024)
TARGET_LINEAR_SMALL, TARGET_LINEAR_LARGE = 1.3, 2.0   # batch <= 16; 256 .. 1024
TARGET_OVERHEAD_US = 10.0
SEGMENT_COUNT, SEGMENT_SHAPE, SEGMENT_DENSITY = 8, (4096, 4096), 0.01


# ------------------------------------------------------------------------------ data
def random_coo(rng: np.random.Generator, shape: tuple[int, int], density: float):
    n = int(round(density * shape[0] * shape[1]))
    flat = np.sort(rng.choice(shape[0] * shape[1], size=n, replace=False))
    rows, cols = np.divmod(flat, shape[1])
    return rows, cols, rng.standard_normal(n).astype(np.float32)


def model_shapes() -> list[tuple[str, tuple[int, int]]]:
    out = []
    for layer in range(LAYERS):
        out += [(f"L{layer}.{n}", (D_MODEL, D_MODEL)) for n in ("q", "k", "v", "o")]
        out += [(f"L{layer}.up", (D_FF, D_MODEL)), (f"L{layer}.down", (D_MODEL, D_FF))]
    return out


def ms(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1e3:.3f}"


# ------------------------------------------------------------------------------ CPU
def bench_cpu_matmul(rng: np.random.Generator, repeats: int) -> list[dict]:
    out = []
    for shape in CPU_SHAPES:
        for density in CPU_DENSITIES:
            rows, cols, vals = random_coo(rng, shape, density)
            d = ops.DeviceDelta.upload(Snapshot.from_coo(rows, cols, vals, shape), "cpu")
            csr = sp.csr_matrix((vals, (rows, cols)), shape=shape) if sp is not None else None
            for batch in CPU_BATCHES:
                x = rng.standard_normal((batch, shape[1])).astype(np.float32)
                ours = C.time_call(lambda: ops.delta_matmul(x, d), repeats=repeats)
                row = {"shape": shape, "density": density, "batch": batch, "nnz": d.nnz,
                       "ours_s": ours["median_s"], "ours_times_s": ours["times_s"]}
                if csr is not None:
                    peer = C.time_call(lambda: (csr @ x.T).T, repeats=repeats)
                    y, ref = ours["result"], peer["result"]
                    row.update(scipy_s=peer["median_s"], scipy_times_s=peer["times_s"],
                               ratio=ours["median_s"] / peer["median_s"],
                               max_rel_err=float(np.abs(y - ref).max() /
                                                 max(float(np.abs(ref).max()), 1e-30)))
                    row["pass"] = row["ratio"] <= TARGET_CPU_RATIO
                out.append(row)
    return out


def bench_snapshot_build(rng: np.random.Generator, repeats: int) -> dict:
    per, upload = [], []
    for name, shape in model_shapes():
        rows, cols, vals = random_coo(rng, shape, SNAP_DENSITY)
        t = C.time_call(lambda: Snapshot.from_coo(rows, cols, vals, shape, step=1),
                        repeats=repeats)
        snap = t["result"]
        u = C.time_call(lambda: ops.DeviceDelta.upload(snap, "cpu"), repeats=repeats)
        per.append((name, shape, t["median_s"], len(vals)))
        upload.append(u["median_s"])
    times = [p[2] for p in per]
    worst = max(per, key=lambda p: p[2])
    return {"matrices": len(per), "median_s": C.median(times), "max_s": max(times),
            "slowest": f"{worst[0]} {worst[1][0]}x{worst[1][1]}", "step_total_s": sum(times),
            "upload_median_s": C.median(upload), "upload_max_s": max(upload),
            "nnz_total": sum(p[3] for p in per),
            "per_matrix": [{"name": n, "shape": s, "median_s": t, "nnz": k}
                           for n, s, t, k in per],
            "pass": max(times) * 1e3 <= TARGET_SNAP_MS}


def make_layers(rng: np.random.Generator, device: str, xp: Any) -> tuple[list, list, int]:
    Ws, ds, nnz = [], [], 0
    for _ in range(MERGE_LAYERS):
        rows, cols, vals = random_coo(rng, MERGE_SHAPE, MERGE_DENSITY)
        ds.append(ops.DeviceDelta.upload(Snapshot.from_coo(rows, cols, vals, MERGE_SHAPE),
                                         device))
        Ws.append(xp.zeros(MERGE_SHAPE, dtype=xp.float32))
        nnz += len(vals)
    return Ws, ds, nnz


def bench_cpu_merge(rng: np.random.Generator, repeats: int) -> dict:
    Ws, ds, nnz = make_layers(rng, "cpu", np)
    sign = [1.0]

    def call():
        ops.merge_layers(Ws, ds, sign[0])
        sign[0] = -sign[0]

    t = C.time_call(call, repeats=repeats, warmup=2)
    restored = all(float(np.abs(W).max()) <= 1e-5 for W in Ws[:2]) if repeats % 2 == 0 else None
    return {"layers": MERGE_LAYERS, "nnz": nnz, "median_s": t["median_s"],
            "times_s": t["times_s"], "weights_per_s": nnz / t["median_s"],
            "restored_after_even_calls": restored}


# ------------------------------------------------------------------------------ GPU
def gpu_reason() -> str | None:
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a CUDA library that fails to load
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    if not ops.cuda_available():
        return "CuPy imports but sees no CUDA device"
    return None


def gpu_time(cp: Any, fn: Callable[[], Any], repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return {"median_s": C.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times}


def guarded(results: dict, key: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; on an exception record it (and print it) instead of stopping."""
    try:
        results[key] = fn()
    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
        results[key] = {"error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(limit=4)}
        print(f"  [{key}] failed: {type(exc).__name__}: {exc}", flush=True)
    return results[key]


def delta_and_csr(cp: Any, rng: np.random.Generator, shape: tuple[int, int],
                  density: float) -> tuple[Any, Any]:
    """A random delta on the GPU, as hyprvdb's DeviceDelta and as cupyx's CSR (the peer)."""
    import cupyx.scipy.sparse as csp
    r, c, v = random_coo(rng, shape, density)
    d = ops.DeviceDelta.upload(Snapshot.from_coo(r, c, v, shape), "cuda")
    indptr = np.searchsorted(r, np.arange(shape[0] + 1)).astype(np.int32)
    csr = csp.csr_matrix((cp.asarray(v), cp.asarray(c.astype(np.int32)), cp.asarray(indptr)),
                         shape=shape)
    return d, csr


def bench_gpu(rng: np.random.Generator, repeats: int) -> dict:
    import cupy as cp
    res: dict = {"device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
                 "cupy": cp.__version__}

    def copy_bw():
        src = cp.ones(1 << 28, dtype=cp.float32)  # 1 GiB
        dst = cp.empty_like(src)
        t = gpu_time(cp, lambda: cp.copyto(dst, src), repeats)
        return {**t, "bytes": 2 * src.nbytes, "GBps": 2 * src.nbytes / t["median_s"] / 1e9}

    bw = guarded(res, "copy", copy_bw)
    ceiling = bw.get("GBps")

    def fused():
        rows_out = []
        for shape in GPU_SHAPES:
            W = cp.asarray(rng.standard_normal(shape).astype(np.float16))
            for density in GPU_FUSED_DENSITIES:
                r, c, v = random_coo(rng, shape, density)
                d = ops.DeviceDelta.upload(Snapshot.from_coo(r, c, v, shape), "cuda")
                for batch in GPU_FUSED_BATCHES:
                    x = cp.asarray(rng.standard_normal((batch, shape[1])).astype(np.float16))
                    row = {"shape": shape, "density": density, "batch": batch}
                    row["cublas_s"] = gpu_time(cp, lambda: x @ W.T, repeats)["median_s"]
                    try:
                        row["ours_s"] = gpu_time(cp, lambda: ops.fused_linear(x, W, d),
                                                 repeats)["median_s"]
                        row["ratio"] = row["ours_s"] / row["cublas_s"]
                        row["pass"] = row["ratio"] <= TARGET_FUSED_RATIO
                    except Exception as exc:  # noqa: BLE001
                        row["error"] = f"{type(exc).__name__}: {exc}"
                    rows_out.append(row)
        return rows_out

    def delta():
        rows_out = []
        for shape in GPU_SHAPES:
            for density in GPU_DELTA_DENSITIES:
                d, csr = delta_and_csr(cp, rng, shape, density)
                for batch in GPU_DELTA_BATCHES:
                    x = cp.asarray(rng.standard_normal((batch, shape[1])).astype(np.float32))
                    out = cp.zeros((batch, shape[0]), cp.float32)
                    need = (4 * (shape[0] + 1) + 8 * d.nnz + x.nbytes + 2 * out.nbytes)
                    row = {"shape": shape, "density": density, "batch": batch, "bytes": need}
                    row["cusparse_s"] = gpu_time(cp, lambda: (csr @ x.T).T, repeats)["median_s"]
                    try:
                        t = gpu_time(cp, lambda: ops.delta_matmul(x, d, out=out), repeats)
                        row["ours_s"] = t["median_s"]
                        row["GBps"] = need / t["median_s"] / 1e9
                        row["frac_copy"] = row["GBps"] / ceiling if ceiling else None
                        row["vs_cusparse"] = row["ours_s"] / row["cusparse_s"]
                        row["pass"] = row["frac_copy"] is not None and \
                            row["frac_copy"] >= TARGET_DELTA_BW
                    except Exception as exc:  # noqa: BLE001
                        row["error"] = f"{type(exc).__name__}: {exc}"
                    rows_out.append(row)
        return rows_out

    def merge():
        Ws, ds, nnz = make_layers(rng, "cuda", cp)
        sign = [1.0]

        def call():
            ops.merge_layers(Ws, ds, sign[0])
            sign[0] = -sign[0]

        t = gpu_time(cp, call, repeats)
        return {**t, "layers": MERGE_LAYERS, "nnz": nnz,
                "pass": t["median_s"] * 1e3 <= TARGET_MERGE_MS}

    def window():
        import hyprvdb
        shape = WINDOW_SHAPE
        h = hyprvdb.TemporalAdapter(*shape)
        r, c, v = random_coo(rng, shape, WINDOW_BASE)
        h.store_base(rows=r, cols=c, values=v)
        for t in range(1, WINDOW_STEPS + 1):
            r, c, v = random_coo(rng, shape, WINDOW_CHANGE)
            h.store_delta(t, r, c, v * np.float32(1e-3))
        dh = ops.DeviceHistory(h, "cuda")
        read = dh.nbytes  # what the kernel reads, for the byte count
        written = shape[0] * shape[1] * 4
        t = gpu_time(cp, lambda: dh.window(h.base_step, h.latest, mode="state"), repeats)
        gbps = (read + written) / t["median_s"] / 1e9
        frac = gbps / ceiling if ceiling else None
        return {**t, "changes": h.change_count(), "bytes_read": read, "bytes_written": written,
                "GBps": gbps, "frac_copy": frac,
                "pass": frac is not None and frac >= TARGET_WINDOW_BW}

    def linear():
        """cuBLAS x @ W.T alone; ops.fused_linear (cuBLAS + the delta into its output); the
        delta alone (x's dtype) against cuSPARSE CSR (float32), every shape, density, dtype
        and batch of the targets."""
        import ml_dtypes
        rows_out = []
        for shape in LINEAR_SHAPES:
            for density in LINEAR_DENSITIES:
                d, csr = delta_and_csr(cp, rng, shape, density)
                for dtype in LINEAR_DTYPES:
                    dt = np.dtype(dtype) if dtype != "bfloat16" else np.dtype(ml_dtypes.bfloat16)
                    W = cp.asarray(rng.standard_normal(shape).astype(np.float32)).astype(dt)
                    for batch in LINEAR_BATCHES:
                        x = cp.asarray(rng.standard_normal((batch, shape[1]))
                                       .astype(np.float32)).astype(dt)
                        x32 = x.astype(cp.float32)
                        out = cp.zeros((batch, shape[0]), dt)
                        row = {"shape": shape, "density": density, "dtype": dtype,
                               "batch": batch}
                        try:
                            row["cublas_s"] = gpu_time(cp, lambda: cp.matmul(x, W.T),
                                                       repeats)["median_s"]
                            row["linear_s"] = gpu_time(cp, lambda: ops.fused_linear(x, W, d),
                                                       repeats)["median_s"]
                            row["plan"] = ops.gpu_plan(*shape, d.nnz, batch, dt,
                                                       with_w=True)["method"]
                            row["delta_plan"] = ops.gpu_plan(*shape, d.nnz, batch, dt)["method"]
                            row["delta_s"] = gpu_time(
                                cp, lambda: ops.delta_matmul(x, d, out=out), repeats)["median_s"]
                            row["cusparse_s"] = gpu_time(cp, lambda: (csr @ x32.T).T,
                                                         repeats)["median_s"]
                            # every way forced, so that the rule's pick can be checked (a
                            # way that cannot run here, e.g. staged past shared memory, is
                            # left out with its reason)
                            for what, m, call in (
                                    [("linear", m,
                                      lambda m=m: ops.fused_linear(x, W, d, method=m))
                                     for m in ("rows", "staged", "merge")]
                                    + [("delta", m,
                                        lambda m=m: ops.delta_matmul(x, d, out=out, method=m))
                                       for m in ("rows", "staged")]):
                                try:
                                    row[f"{what}_{m}_s"] = gpu_time(cp, call,
                                                                    repeats)["median_s"]
                                except (ValueError, TypeError) as exc:
                                    row[f"{what}_{m}_error"] = str(exc)
                            ways = [m for m in ("rows", "staged", "merge")
                                    if f"linear_{m}_s" in row]
                            if ways:
                                row["fastest"] = min(ways, key=lambda m: row[f"linear_{m}_s"])
                            row["ratio"] = row["linear_s"] / row["cublas_s"]
                            target = TARGET_LINEAR_SMALL if batch <= 16 else TARGET_LINEAR_LARGE
                            row["pass_linear"] = row["ratio"] <= target
                            row["pass_delta"] = row["delta_s"] <= row["cusparse_s"]
                        except Exception as exc:  # noqa: BLE001
                            row["error"] = f"{type(exc).__name__}: {exc}"
                        rows_out.append(row)
        return rows_out

    def overhead():
        """Host time per call (no synchronization; the launches queue): ops.delta_matmul on a
        tiny delta against launching an empty CuPy kernel with as many arguments."""
        empty = cp.RawKernel(r'''extern "C" __global__ void empty_kernel(
            const int* a, const int* b, const float* c, const float* x, long long ldx,
            float* y, long long ldy, int rows, int batch, float scale) {}''', "empty_kernel")
        r, c, v = random_coo(rng, (64, 64), 0.01)
        d = ops.DeviceDelta.upload(Snapshot.from_coo(r, c, v, (64, 64)), "cuda")
        x = cp.ones((1, 64), cp.float32)
        out = cp.zeros((1, 64), cp.float32)
        args = (d.indptr, d.indices, d.data, x, np.int64(64), out, np.int64(64), np.int32(64),
                np.int32(1), np.float32(1.0))

        def per_call(fn, n=2000):
            for _ in range(50):
                fn()
            cp.cuda.Device().synchronize()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append((time.perf_counter() - t0) / n)
                cp.cuda.Device().synchronize()
            return C.median(times)

        ours = per_call(lambda: ops.delta_matmul(x, d, out=out))
        base = per_call(lambda: empty((1,), (32,), args))
        return {"ours_us": ours * 1e6, "empty_us": base * 1e6,
                "above_us": (ours - base) * 1e6,
                "pass": (ours - base) * 1e6 <= TARGET_OVERHEAD_US}

    def segments():
        """ops.delta_matmul_segments (SEGMENT_COUNT deltas, rows dealt round-robin) against
        one ops.delta_matmul per delta on its rows (float16), info."""
        ds = []
        for _ in range(SEGMENT_COUNT):
            r, c, v = random_coo(rng, SEGMENT_SHAPE, SEGMENT_DENSITY)
            ds.append(ops.DeviceDelta.upload(Snapshot.from_coo(r, c, v, SEGMENT_SHAPE), "cuda"))
        rows_out = []
        for batch in (16, 256, 1024):
            x = cp.asarray(rng.standard_normal((batch, SEGMENT_SHAPE[1])).astype(np.float16))
            out = cp.zeros((batch, SEGMENT_SHAPE[0]), cp.float16)
            seg = np.arange(batch) % SEGMENT_COUNT
            parts = [(cp.asarray(np.flatnonzero(seg == s)), ds[s]) for s in range(len(ds))]

            def loop():
                for rows, dd in parts:
                    out[rows] += ops.delta_matmul(x[rows], dd)

            row = {"batch": batch, "deltas": SEGMENT_COUNT,
                   "plan": ops.gpu_plan(*SEGMENT_SHAPE, ds[0].nnz, batch, np.float16)["method"]}
            row["segments_s"] = gpu_time(
                cp, lambda: ops.delta_matmul_segments(x, ds, seg, out=out), repeats)["median_s"]
            for m in ("rows", "staged"):
                row[f"segments_{m}_s"] = gpu_time(
                    cp, lambda: ops.delta_matmul_segments(x, ds, seg, out=out, method=m),
                    repeats)["median_s"]
            row["loop_s"] = gpu_time(cp, loop, repeats)["median_s"]
            rows_out.append(row)
        return rows_out

    for key, fn in (("fused_linear", fused), ("delta_matmul", delta), ("merge", merge),
                    ("window", window), ("linear", linear), ("overhead", overhead),
                    ("segments", segments)):
        t0 = time.perf_counter()
        guarded(res, key, fn)
        print(f"  GPU {key}: {time.perf_counter() - t0:.1f} s", flush=True)
    return res


# ------------------------------------------------------------------------------ report
def print_cpu(mm: list[dict], snap: dict, merge: dict) -> None:
    path = "hyprvdb._cpu (C++ / OpenMP)" if _native.cpu() is not None else "numpy"
    rows = []
    for r in mm:
        rows.append([f"{r['shape'][0]}x{r['shape'][1]}", f"{100 * r['density']:g}%",
                     r["batch"], f"{r['nnz']:,}", ms(r["ours_s"]), ms(r.get("scipy_s")),
                     f"{r['ratio']:.2f}x" if "ratio" in r else "n/a",
                     f"{r['max_rel_err']:.1e}" if "max_rel_err" in r else "n/a",
                     C.verdict(r["pass"]) if "pass" in r else "-"])
    C.print_table(["dW (out x in)", "density", "batch", "nnz", "ours ms", "scipy ms",
                   "ours/scipy", "max rel err", f"<= {TARGET_CPU_RATIO}x"], rows,
                  title=f"CPU delta matmul y = x @ dW.T, float32: ops.delta_matmul on 'cpu' "
                        f"[{path}] vs scipy.sparse CSR (csr @ x.T).T, as a user writes it")
    if SCIPY_SKIP:
        print(f"  scipy columns skipped: {SCIPY_SKIP}")
    print()
    C.print_table(["what", "median", "max", "target", "verdict"], [
        [f"Snapshot.from_coo per matrix ({snap['matrices']} matrices, ~{100 * SNAP_DENSITY:g}% "
         f"active)", f"{snap['median_s'] * 1e3:.3f} ms", f"{snap['max_s'] * 1e3:.3f} ms "
         f"({snap['slowest']})", f"<= {TARGET_SNAP_MS} ms", C.verdict(snap["pass"])],
        ["  one whole step (sum of the 36)", f"{snap['step_total_s'] * 1e3:.1f} ms", "", "",
         "info"],
        ["DeviceDelta.upload per matrix (CSR view)", f"{snap['upload_median_s'] * 1e3:.3f} ms",
         f"{snap['upload_max_s'] * 1e3:.3f} ms", "", "info"],
        [f"ops.merge_layers, {merge['layers']} x {MERGE_SHAPE[0]}x{MERGE_SHAPE[1]} float32, "
         f"{100 * MERGE_DENSITY:g}%", f"{merge['median_s'] * 1e3:.1f} ms",
         f"{max(merge['times_s']) * 1e3:.1f} ms", "", "info"],
    ], title="CPU snapshot build (temporal workload shapes) and merge")
    print(f"  merge: {merge['nnz']:,} weights, {merge['weights_per_s'] / 1e6:.0f} M weights/s")


def print_gpu(g: dict) -> None:
    print(f"device: {g['device']}, CuPy {g['cupy']}")
    cp_ = g["copy"]
    if "error" in cp_:
        print(f"copy bandwidth: error {cp_['error']}")
    else:
        print(f"copy bandwidth ceiling (1 GiB device-to-device, read + write): "
              f"{cp_['GBps']:.0f} GB/s")
    print()
    f = g["fused_linear"]
    if isinstance(f, dict):
        print(f"fused linear: error {f['error']}")
    else:
        C.print_table(["W", "density", "batch", "cuBLAS ms", "ours ms", "ours/cuBLAS",
                       f"<= {TARGET_FUSED_RATIO}x"],
                      [[f"{r['shape'][0]}x{r['shape'][1]}", f"{100 * r['density']:g}%",
                        r["batch"], ms(r["cublas_s"]), ms(r.get("ours_s")),
                        f"{r['ratio']:.2f}x" if "ratio" in r else r.get("error", "n/a"),
                        C.verdict(r["pass"]) if "pass" in r else "FAIL"] for r in f],
                      title="GPU: cuBLAS x @ W.T (float16) vs ops.fused_linear "
                            "(x @ W.T + x @ dW.T)")
    print()
    d = g["delta_matmul"]
    if isinstance(d, dict):
        print(f"delta kernel: error {d['error']}")
    else:
        C.print_table(["dW", "density", "batch", "cuSPARSE ms", "ours ms", "ours GB/s",
                       "of copy", "ours/cuSPARSE", f">= {TARGET_DELTA_BW:.0%}"],
                      [[f"{r['shape'][0]}x{r['shape'][1]}", f"{100 * r['density']:g}%",
                        r["batch"], ms(r["cusparse_s"]), ms(r.get("ours_s")),
                        f"{r['GBps']:.1f}" if "GBps" in r else r.get("error", "n/a"),
                        f"{r['frac_copy']:.0%}" if r.get("frac_copy") is not None else "n/a",
                        f"{r['vs_cusparse']:.2f}x" if "vs_cusparse" in r else "n/a",
                        C.verdict(r["pass"]) if "pass" in r else "FAIL"] for r in d],
                      title="GPU delta kernel (float32, out += x @ dW.T) vs cupyx.scipy.sparse "
                            "CSR (csr @ x.T).T")
    print()
    rows = []
    m = g["merge"]
    rows.append([f"merge_layers {MERGE_LAYERS} x {MERGE_SHAPE[0]}x{MERGE_SHAPE[1]} float32, "
                 f"{100 * MERGE_DENSITY:g}%",
                 f"{m['median_s'] * 1e3:.3f} ms" if "median_s" in m else m["error"],
                 f"<= {TARGET_MERGE_MS} ms", C.verdict(m.get("pass", False))])
    w = g["window"]
    rows.append([f"DeviceHistory.window, {WINDOW_SHAPE[0]}x{WINDOW_SHAPE[1]}, state "
                 f"({w.get('changes', 0):,} changes)",
                 (f"{w['median_s'] * 1e3:.3f} ms, {w['GBps']:.0f} GB/s"
                  + (f" ({w['frac_copy']:.0%} of copy)" if w.get("frac_copy") else ""))
                 if "median_s" in w else w["error"],
                 f">= {TARGET_WINDOW_BW:.0%} of copy", C.verdict(w.get("pass", False))])
    C.print_table(["what", "measured", "target", "verdict"], rows, title="GPU merge and window")
    print()
    lin = g.get("linear")
    if isinstance(lin, dict):
        print(f"cuBLAS + delta: error {lin['error']}")
    elif lin:
        C.print_table(
            ["dW", "density", "dtype", "batch", "cuBLAS ms", "fused_linear ms", "ratio",
             "target", "picks", "rows / staged / merge ms", "fastest", "delta ms",
             "delta rows / staged ms", "cuSPARSE fp32 ms", "delta <= cuSPARSE"],
            [[f"{r['shape'][0]}x{r['shape'][1]}", f"{100 * r['density']:g}%", r["dtype"],
              r["batch"], ms(r.get("cublas_s")), ms(r.get("linear_s")),
              f"{r['ratio']:.2f}x" if "ratio" in r else r.get("error", "n/a"),
              (f"<= {TARGET_LINEAR_SMALL if r['batch'] <= 16 else TARGET_LINEAR_LARGE}x "
               + C.verdict(r["pass_linear"])) if "pass_linear" in r else "FAIL",
              r.get("plan", "n/a"),
              " / ".join(ms(r.get(f"linear_{m}_s")) for m in ("rows", "staged", "merge")),
              r.get("fastest", "n/a"), ms(r.get("delta_s")),
              " / ".join(ms(r.get(f"delta_{m}_s")) for m in ("rows", "staged")),
              ms(r.get("cusparse_s")),
              C.verdict(r["pass_delta"]) if "pass_delta" in r else "FAIL"] for r in lin],
            title="GPU: cuBLAS alone; ops.fused_linear by the rule (\"picks\") and by each way "
                  "forced (cuBLAS + the row or staged delta kernel into its output, or the delta "
                  "merged into a scratch W + one GEMM); the delta alone against cuSPARSE")
    o = g.get("overhead")
    if o:
        print(("host overhead per ops.delta_matmul call: " + (
            f"{o['ours_us']:.1f} us against {o['empty_us']:.1f} us for an empty CuPy kernel "
            f"launch: {o['above_us']:.1f} us above (<= {TARGET_OVERHEAD_US} us "
            f"{C.verdict(o['pass'])})" if "error" not in o else f"error {o['error']}")))
    sg = g.get("segments")
    if isinstance(sg, list):
        C.print_table(["batch", "deltas", "delta_matmul_segments ms", "picks",
                       "rows / staged ms", "one call per delta ms"],
                      [[r["batch"], r["deltas"], ms(r["segments_s"]), r.get("plan", "n/a"),
                        " / ".join(ms(r.get(f"segments_{m}_s")) for m in ("rows", "staged")),
                        ms(r["loop_s"])] for r in sg],
                      title=f"GPU mixed batch: {SEGMENT_COUNT} deltas of "
                            f"{100 * SEGMENT_DENSITY:g}% ({SEGMENT_SHAPE[0]}x{SEGMENT_SHAPE[1]}, "
                            "float16), rows dealt round-robin")
    elif isinstance(sg, dict):
        print(f"mixed batch: error {sg['error']}")


# ------------------------------------------------------------------------------ charts
def plot(path: str, results: dict) -> None:
    """The matmul tables as bar charts, a panel per section that ran: ours against scipy on
    the CPU, against cuBLAS (fused linear) and cuSPARSE (delta kernel) on a GPU."""
    def case(r: dict) -> str:
        return f"{r['shape'][0]}x{r['shape'][1]} {100 * r['density']:g}% b{r['batch']}"

    def ms_(x: float | None) -> float | None:
        return None if x is None else x * 1e3

    panels = []
    cpu, gpu = results.get("cpu", {}), results.get("gpu", {})
    if "matmul" in cpu:
        panels.append(C.BarPanel(
            "CPU y = x @ dW.T, float32: median ms (log scale)", "ms",
            {case(r): {"hyprvdb ops.delta_matmul": ms_(r.get("ours_s")),
                       "scipy CSR (csr @ x.T).T": ms_(r.get("scipy_s"))}
             for r in cpu["matmul"]}, log=True))
    for key, peer, what in (("fused_linear", "cuBLAS x @ W.T (float16)",
                             "GPU linear layer with its delta: ops.fused_linear"),
                            ("delta_matmul", "cuSPARSE CSR (csr @ x.T).T",
                             "GPU delta kernel, float32: ops.delta_matmul")):
        rows = gpu.get(key)
        if isinstance(rows, list):
            peer_key = "cublas_s" if key == "fused_linear" else "cusparse_s"
            panels.append(C.BarPanel(
                f"{what}: median ms (log scale)", "ms",
                {case(r): {f"hyprvdb ops.{key}": ms_(r.get("ours_s")),
                           peer: ms_(r.get(peer_key))} for r in rows}, log=True))
    if not panels:
        print(f"--plot: nothing to draw (no matmul section ran), {path} not written")
        return
    C.plot_bars(path, "bench/matmul.py: the sparse delta in the matmul, hyprvdb against its "
                      "peers", panels)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=9, help="timed calls per measurement")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU section")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU section")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--plot", metavar="PATH",
                    help="draw the matmul tables as bar charts into the PNG file PATH "
                         "(matplotlib)")
    a = ap.parse_args(argv)
    C.check_plot_arg(ap, a.plot)
    wall0 = time.perf_counter()
    load0 = os.getloadavg()
    print(f"machine: {os.cpu_count()} cpus, load average {load0[0]:.2f} / {load0[1]:.2f} / "
          f"{load0[2]:.2f}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"seed {a.seed}, {a.repeats} timed calls after a warm-up, medians", flush=True)
    rng = np.random.default_rng(a.seed)
    results: dict = {}
    summary_parts = []

    if a.no_cpu:
        results["cpu"] = {"skipped": "--no-cpu"}
        summary_parts.append("CPU skipped")
    else:
        t0 = time.perf_counter()
        mm = bench_cpu_matmul(rng, a.repeats)
        snap = bench_snapshot_build(rng, a.repeats)
        merge = bench_cpu_merge(rng, max(2, a.repeats - a.repeats % 2))
        results["cpu"] = {"matmul": mm, "snapshot_build": snap, "merge": merge,
                          "path": "cpu_ext" if _native.cpu() is not None else "numpy",
                          "scipy_skipped": SCIPY_SKIP, "wall_s": time.perf_counter() - t0}
        print()
        print_cpu(mm, snap, merge)
        judged = [r for r in mm if "pass" in r]
        slow = [r for r in judged if not r["pass"]]
        if judged:
            worst = max(judged, key=lambda r: r["ratio"])
            cpu_mm = (f"CPU delta matmul vs scipy {len(judged) - len(slow)}/{len(judged)} "
                      f"within {TARGET_CPU_RATIO}x (worst {worst['ratio']:.2f}x at "
                      f"{worst['shape'][0]}x{worst['shape'][1]} {100 * worst['density']:g}% "
                      f"b{worst['batch']})")
        else:
            cpu_mm = f"CPU delta matmul: scipy skipped ({SCIPY_SKIP})"
        summary_parts.append(
            f"{cpu_mm}; snapshot build {snap['median_s'] * 1e3:.2f}/{snap['max_s'] * 1e3:.2f} ms "
            f"median/max per matrix {C.verdict(snap['pass'])} (<= {TARGET_SNAP_MS} ms); merge "
            f"32 layers {merge['median_s'] * 1e3:.0f} ms (info)")
        print()

    reason = "--no-gpu" if a.no_gpu else gpu_reason()
    if reason:
        print(f"GPU section skipped: {reason}")
        results["gpu"] = {"skipped": reason}
        summary_parts.append(f"GPU skipped ({reason})")
    else:
        print("GPU section:", flush=True)
        g = bench_gpu(rng, max(a.repeats, 10))
        results["gpu"] = g
        print()
        print_gpu(g)
        verdicts = []
        for key, label in (("fused_linear", "fused/cuBLAS"), ("delta_matmul", "delta GB/s")):
            rows = g[key]
            if isinstance(rows, dict):
                verdicts.append(f"{label} error")
            else:
                ok = sum(bool(r.get("pass")) for r in rows)
                verdicts.append(f"{label} {ok}/{len(rows)} PASS")
        for key, label in (("merge", "merge"), ("window", "window")):
            ok = "error" if "error" in g[key] else C.verdict(g[key]["pass"])
            verdicts.append(f"{label} {ok}")
        lin = g.get("linear")
        if isinstance(lin, list):
            for k, label in (("pass_linear", "cuBLAS+delta"), ("pass_delta", "delta<=cuSPARSE")):
                verdicts.append(f"{label} {sum(bool(r.get(k)) for r in lin)}/{len(lin)} PASS")
            hits = sum(r.get("plan") == r.get("fastest") for r in lin)
            verdicts.append(f"rule picked the fastest way {hits}/{len(lin)}")
        o = g.get("overhead", {})
        if "above_us" in o:
            verdicts.append(f"host overhead +{o['above_us']:.1f} us {C.verdict(o['pass'])}")
        bwtxt = f"copy {g['copy']['GBps']:.0f} GB/s" if "GBps" in g["copy"] else "copy error"
        summary_parts.append(f"GPU {g['device']}: {bwtxt}, " + ", ".join(verdicts))

    wall = time.perf_counter() - wall0
    summary = "summary: " + " | ".join(summary_parts) + f" | wall {wall:.0f} s"
    if a.json:
        C.write_json(a.json, "matmul", {**results, "summary": summary, "wall_s": wall,
                                        "loadavg_start": load0},
                     config={"seed": a.seed, "repeats": a.repeats, "cpu_shapes": CPU_SHAPES,
                             "cpu_densities": CPU_DENSITIES, "cpu_batches": CPU_BATCHES,
                             "snap_density": SNAP_DENSITY, "merge_layers": MERGE_LAYERS,
                             "merge_shape": MERGE_SHAPE, "merge_density": MERGE_DENSITY})
    if a.plot:
        plot(a.plot, results)
    print()
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
