"""Weight history: hyprvdb TemporalAdapter against full checkpoints, numpy COO deltas and TileDB.

Workload (the same data for every contender, generated up front from one seed): the 36 weight
matrices of a small transformer -- per layer four 384 x 384 (q, k, v, o), one 1536 x 384 (up)
and one 384 x 1536 (down); 6 layers, 10,616,832 tracked weights. Base Z[0] of each matrix: a
sparse adapter with 1% of its entries active (float32 values ~ N(0, 0.02)). Then 120 steps;
each step changes 0.05% of every matrix's weights (float32 deltas ~ N(0, 1e-3)); 17% of a
step's coordinates are drawn from the previous step's coordinates of that matrix, the rest
uniformly from the other positions. The reference for exactness is a float64 replay of the
stored deltas (base + cumulative deltas in float64, in step order), rounded to float32.

Contenders
----------
hyprvdb      one ``TemporalAdapter`` per matrix; ``save`` right after ``store_base``, then 120
             ``store_delta`` commits appended to the files (default ``sync=True``: an fsync per
             commit). Disk = file bytes after the 120 commits minus file bytes right after the
             base was saved; memory = ``history_bytes()`` (history alone, not the base).
checkpoints  one dense float32 ``np.save`` file per matrix per step. Only a few steps are
             written for real (fsync'd); the 120-step size is their measured size x 120.
             state@t = ``np.load`` of the 36 files of one step (page cache warm).
COO deltas   one uncompressed ``np.savez`` per step holding two arrays over the whole model:
             int32 global linear index (matrix offset + row * cols + col) and float32 delta
             (fsync'd). state@t = load the base file and replay steps 1..t into a dense
             float64 vector, rounded to float32 (grows with t).
TileDB       one sparse 1-D array over the whole model: int64 dimension = global linear index
             (one space tile), float32 attribute, ``allows_duplicates=False``, default filters
             (coordinates zstd-compressed by TileDB's default, attribute unfiltered). The base
             is written at timestamp 1 and step t at timestamp t + 1 (one fragment per step)
             holding the new cumulative values of the changed cells; state@t = open at that
             timestamp and read every cell (time travel). A 2-D (matrix, index) array, a 3-D
             (matrix, row, col) array and one 2-D array per matrix were tried while writing this
             script: all were larger on disk and slower to write, none faster to read.

Run:  python bench/temporal.py [--quick] [--no-tiledb] [--profile] [--json PATH]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import hyprvdb  # noqa: E402

# ------------------------------------------------------------------------------ config
D_MODEL, D_FF = 384, 1536
STEPS = 120
CHANGE_FRAC = 0.0005          # 0.05% of each matrix's weights per step
OVERLAP = 0.17                # share of a step's coordinates taken from the previous step
BASE_DENSITY = 0.01
DELTA_SIGMA = 1e-3
BASE_SIGMA = 0.02

STATE_TS = (1, 10, 30, 60, 90, 120)
TABLE_TS = (1, 60, 120)
EXACT_TS = (1, 37, 60, 120)
CKPT_WRITE_STEPS = (1, 2, 3)

TARGET_DISK = 6.0             # B per stored change on disk
TARGET_MEM = 10.0             # B per stored change in memory
TARGET_COMMIT_MS = 5.0
TARGET_STATE_MS = 10.0
TARGET_HISTORY_MS = 1.0
TARGET_ULP = 2


def model_shapes(layers: int) -> list[tuple[str, int, int]]:
    out = []
    for layer in range(layers):
        for name in ("q", "k", "v", "o"):
            out.append((f"L{layer}.{name}", D_MODEL, D_MODEL))
        out.append((f"L{layer}.up", D_FF, D_MODEL))
        out.append((f"L{layer}.down", D_MODEL, D_FF))
    return out


# ------------------------------------------------------------------------------ data
@dataclass
class Trajectory:
    shapes: list[tuple[str, int, int]]
    offsets: np.ndarray                       # global offset of each matrix, plus the total
    base: list[tuple[np.ndarray, np.ndarray]]  # per matrix: sorted linear idx, float32 values
    steps: list[list[tuple[np.ndarray, np.ndarray]]]  # [t-1][m]: sorted idx, float32 delta
    g: list[np.ndarray]                       # [t-1]: sorted global idx (int64)
    d: list[np.ndarray]                       # [t-1]: float32 deltas, aligned with g
    v: list[np.ndarray]                       # [t-1]: new cumulative float32 values at g
    ref: dict[int, np.ndarray]                # t -> float32 state of the whole model (flat)
    overlap: float                            # measured share of coordinates repeated

    @property
    def n_weights(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_changes(self) -> int:
        return int(sum(len(x) for x in self.g))

    def base_global(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate([self.offsets[m] + b[0] for m, b in enumerate(self.base)]),
                np.concatenate([b[1] for b in self.base]))


def _fresh(rng: np.random.Generator, n: int, k: int, exclude: np.ndarray) -> np.ndarray:
    """``k`` distinct uniform positions of ``range(n)`` not in ``exclude``."""
    out = np.zeros(0, np.int64)
    while len(out) < k:
        cand = rng.integers(0, n, size=2 * (k - len(out)) + 16)
        cand = cand[~np.isin(cand, exclude)]
        _, first = np.unique(cand, return_index=True)
        cand = cand[np.sort(first)]
        cand = cand[~np.isin(cand, out)]
        out = np.concatenate([out, cand[:k - len(out)]])
    return out


def make_trajectory(seed: int, layers: int, steps: int, keep_ref: set[int]) -> Trajectory:
    rng = np.random.default_rng(seed)
    shapes = model_shapes(layers)
    sizes = np.array([r * c for _, r, c in shapes], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    running = np.zeros(int(offsets[-1]), np.float64)
    base = []
    for m, (_, r, c) in enumerate(shapes):
        n = r * c
        idx = np.sort(rng.choice(n, int(round(BASE_DENSITY * n)), replace=False)).astype(np.int64)
        val = (rng.standard_normal(len(idx)) * BASE_SIGMA).astype(np.float32)
        val[val == 0] = np.float32(BASE_SIGMA)
        base.append((idx, val))
        running[offsets[m] + idx] = val.astype(np.float64)
    ref = {0: running.astype(np.float32)} if 0 in keep_ref else {}
    traj_steps, gs, ds, vs = [], [], [], []
    prev: list[np.ndarray | None] = [None] * len(shapes)
    repeated = total = 0
    for t in range(1, steps + 1):
        per = []
        for m, (_, r, c) in enumerate(shapes):
            n = r * c
            k = int(round(CHANGE_FRAC * n))
            if prev[m] is None:
                idx = _fresh(rng, n, k, np.zeros(0, np.int64))
            else:
                n_keep = int(round(OVERLAP * k))
                keep = rng.choice(prev[m], n_keep, replace=False)
                idx = np.concatenate([keep, _fresh(rng, n, k - n_keep, prev[m])])
                repeated += int(np.isin(idx, prev[m]).sum())
                total += k
            idx = np.sort(idx)
            d = (rng.standard_normal(k) * DELTA_SIGMA).astype(np.float32)
            per.append((idx, d))
            prev[m] = idx
        g = np.concatenate([offsets[m] + p[0] for m, p in enumerate(per)])
        d = np.concatenate([p[1] for p in per])
        running[g] += d.astype(np.float64)
        traj_steps.append(per)
        gs.append(g)
        ds.append(d)
        vs.append(running[g].astype(np.float32))
        if t in keep_ref:
            ref[t] = running.astype(np.float32)
    return Trajectory(shapes, offsets, base, traj_steps, gs, ds, vs, ref,
                      repeated / total if total else 0.0)


# ------------------------------------------------------------------------------ helpers
def ulp_diff(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 units in the last place between ``a`` and ``b``."""
    def ordered(x: np.ndarray) -> np.ndarray:
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -2147483648 - i, i)
    if a.size == 0:
        return 0
    return int(np.max(np.abs(ordered(a.ravel()) - ordered(b.ravel()))))


def tree_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def f1(x: float | None, nd: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


class NoGC:
    def __enter__(self):
        gc.collect()
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def warm_up_hyprvdb(tmp: str) -> None:
    """Load the extension and run every timed code path once on a small throwaway history."""
    rng = np.random.default_rng(12345)
    a = hyprvdb.SparseAdapter(64, 64)
    a.batch_update(rng.integers(0, 64, 40), rng.integers(0, 64, 40),
                   rng.standard_normal(40).astype(np.float32))
    h = hyprvdb.TemporalAdapter(64, 64)
    h.store_base(a)
    path = os.path.join(tmp, "warmup.hvz")
    h.save(path)
    for t in range(1, 40):
        h.store_delta(t, rng.integers(0, 64, 5), rng.integers(0, 64, 5),
                      rng.standard_normal(5).astype(np.float32))
    for t in (1, 20, 39):
        h.weights_at_time(t).to_dense()
    h.weight_history(3, 3)
    h.close()
    hyprvdb.TemporalAdapter.load(path).close()


# ------------------------------------------------------------------------------ hyprvdb
def bench_hyprvdb(tr: Trajectory, tmp: str, repeats: int, profile: bool) -> dict:
    warm_up_hyprvdb(tmp)
    n_m = len(tr.shapes)

    def build(sub: str, sync: bool) -> tuple[list, list[str]]:
        folder = os.path.join(tmp, sub)
        os.makedirs(folder)
        hs, paths = [], []
        for m, (name, r, c) in enumerate(tr.shapes):
            idx, val = tr.base[m]
            a = hyprvdb.SparseAdapter(r, c, name=name)
            a.batch_update(idx // c, idx % c, val)
            h = hyprvdb.TemporalAdapter(r, c, name=name)
            h.store_base(a)
            p = os.path.join(folder, f"m{m:02d}.hvz")
            h.save(p, sync=sync)
            hs.append(h)
            paths.append(p)
        return hs, paths

    # commits: 120 whole-model steps, each 36 store_delta calls (rows/cols prepared outside)
    args = [[(idx // c, idx % c, d) for (idx, d), (_, r, c) in zip(per, tr.shapes)]
            for per in tr.steps]

    def commit_all(hs: list, prof: cProfile.Profile | None = None):
        step_s = np.zeros(len(tr.steps))
        step_cpu = np.zeros(len(tr.steps))
        per_s = np.zeros((len(tr.steps), n_m))
        with NoGC():
            for i, per in enumerate(args):
                t = i + 1
                if prof:
                    prof.enable()
                c0 = time.process_time()
                t0 = time.perf_counter()
                for m, (rr, cc, dd) in enumerate(per):
                    s0 = time.perf_counter()
                    hs[m].store_delta(t, rr, cc, dd)
                    per_s[i, m] = time.perf_counter() - s0
                step_s[i] = time.perf_counter() - t0
                step_cpu[i] = time.process_time() - c0
                if prof:
                    prof.disable()
        return step_s, step_cpu, per_s

    # first without fsync (save(sync=False)): the commit's own cost; then the default
    hs_nosync, _ = build("hyprvdb_nosync", sync=False)
    ns_step, ns_cpu, ns_per = commit_all(hs_nosync)
    for h in hs_nosync:
        h.close()
    del hs_nosync
    hs, paths = build("hyprvdb", sync=True)
    base_sizes = [os.path.getsize(p) for p in paths]
    base_file_bytes = sum(base_sizes)
    prof = cProfile.Profile() if profile else None
    step_s, step_cpu, per_s = commit_all(hs, prof)
    commit_profile = _profile_text(prof) if prof else None
    total_changes = sum(h.change_count() for h in hs)
    assert total_changes == tr.n_changes, (total_changes, tr.n_changes)
    file_bytes = sum(os.path.getsize(p) for p in paths)
    by_shape: dict[str, list[int]] = {}
    for m, (_, r, c) in enumerate(tr.shapes):
        e = by_shape.setdefault(f"{r}x{c}", [0, 0, 0])
        e[0] += os.path.getsize(paths[m]) - base_sizes[m]
        e[1] += hs[m].change_count()
        e[2] += hs[m].history_bytes()
    disk_by_shape = {k: {"disk_bytes_per_change": v[0] / v[1],
                         "mem_bytes_per_change": v[2] / v[1],
                         "changes_per_record": v[1] / len(tr.steps) / sum(
                             1 for _, r, c in tr.shapes if f"{r}x{c}" == k)}
                     for k, v in by_shape.items()}
    hist_bytes = sum(h.history_bytes() for h in hs)
    mem_total = sum(h.memory_usage() for h in hs)
    # compaction commits (every compact_every-th) are the slow ones: show them apart
    compact_every = 16
    is_compact = np.array([(i + 1) % compact_every == 0 for i in range(len(tr.steps))])

    # weights_at_time: whole model (36 calls) and per matrix, at a spread of t
    ts = [t for t in STATE_TS if t <= len(tr.steps)]
    if len(tr.steps) not in ts:
        ts.append(len(tr.steps))
    for m in range(n_m):                         # warm-up on the real histories
        hs[m].weights_at_time(ts[-1])
    whole = {t: [] for t in ts}
    whole_cpu = {t: [] for t in ts}
    per_m = {t: np.zeros((repeats, n_m)) for t in ts}
    per_m_cpu = {t: np.zeros((repeats, n_m)) for t in ts}
    rng = np.random.default_rng(7)
    with NoGC():
        for rep in range(repeats):
            for t in rng.permutation(ts):
                t = int(t)
                c0 = time.process_time()
                t0 = time.perf_counter()
                for m in range(n_m):
                    q0 = time.process_time()
                    s0 = time.perf_counter()
                    hs[m].weights_at_time(t)
                    per_m[t][rep, m] = time.perf_counter() - s0
                    per_m_cpu[t][rep, m] = time.process_time() - q0
                whole[t].append(time.perf_counter() - t0)
                whole_cpu[t].append(time.process_time() - c0)
    state = {}
    for t in ts:
        pm = np.median(per_m[t], axis=0)
        pmc = np.median(per_m_cpu[t], axis=0)
        state[t] = {"whole_model_median_s": statistics.median(whole[t]),
                    "whole_model_times_s": whole[t],
                    "whole_model_cpu_median_s": statistics.median(whole_cpu[t]),
                    "active_weights": int(sum(hs[m].weights_at_time(t).active_count()
                                              for m in range(n_m))),
                    "per_matrix_median_s": float(np.median(pm)),
                    "per_matrix_max_s": float(np.max(pm)),
                    "per_matrix_cpu_median_s": float(np.median(pmc)),
                    "per_matrix_cpu_max_s": float(np.max(pmc)),
                    "slowest_matrix": tr.shapes[int(np.argmax(pm))][0]}
    state_profile = None
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for m in range(n_m):
            hs[m].weights_at_time(ts[-1])
        prof.disable()
        state_profile = _profile_text(prof)

    # weight_history: changed weights and uniform random weights
    hrng = np.random.default_rng(11)
    picks = []
    for _ in range(100):                          # weights that changed at least once
        t = int(hrng.integers(0, len(tr.steps)))
        m = int(hrng.integers(0, n_m))
        idx = tr.steps[t][m][0]
        picks.append(("changed", m, int(idx[hrng.integers(0, len(idx))])))
    for _ in range(100):
        m = int(hrng.integers(0, n_m))
        _, r, c = tr.shapes[m]
        picks.append(("random", m, int(hrng.integers(0, r * c))))
    for kind, m, li in picks[:10]:                # warm-up
        hs[m].weight_history(li // tr.shapes[m][2], li % tr.shapes[m][2])
    htimes = {"changed": [], "random": []}
    hist_ok = True
    with NoGC():
        for kind, m, li in picks:
            c = tr.shapes[m][2]
            t0 = time.perf_counter()
            hist = hs[m].weight_history(li // c, li % c)
            htimes[kind].append(time.perf_counter() - t0)
            if kind == "changed":                 # last value must equal the final state
                ref_last = tr.ref.get(len(tr.steps))
                if ref_last is not None and hist:
                    hist_ok &= np.float32(hist[-1][1]) == ref_last[tr.offsets[m] + li]
    history = {k: {"median_s": statistics.median(v), "max_s": max(v), "n": len(v)}
               for k, v in htimes.items()}
    history_profile = None
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for kind, m, li in picks[:50]:
            hs[m].weight_history(li // tr.shapes[m][2], li % tr.shapes[m][2])
        prof.disable()
        history_profile = _profile_text(prof, 12)

    # exactness, live and after loading the files
    def check(adapters: list) -> dict[int, int]:
        out = {}
        for t in EXACT_TS:
            if t not in tr.ref:
                continue
            worst = 0
            for m, (_, r, c) in enumerate(tr.shapes):
                dense = adapters[m].weights_at_time(t).to_dense()
                ref = tr.ref[t][tr.offsets[m]:tr.offsets[m + 1]].reshape(r, c)
                worst = max(worst, ulp_diff(dense, ref))
            out[t] = worst
        return out

    exact_live = check(hs)
    for h in hs:
        h.close()
    t0 = time.perf_counter()
    loaded = [hyprvdb.TemporalAdapter.load(p) for p in paths]
    load_s = time.perf_counter() - t0
    load_profile = None
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for p in paths:
            hyprvdb.TemporalAdapter.load(p).close()
        prof.disable()
        load_profile = _profile_text(prof, 12)
    exact_loaded = check(loaded)
    loaded_changes = sum(h.change_count() for h in loaded)
    for h in loaded:
        h.close()

    return {
        "files": n_m,
        "base_file_bytes": base_file_bytes,
        "file_bytes": file_bytes,
        "history_file_bytes": file_bytes - base_file_bytes,
        "total_changes": total_changes,
        "disk_bytes_per_change": (file_bytes - base_file_bytes) / total_changes,
        "by_shape": disk_by_shape,
        "history_bytes": hist_bytes,
        "mem_bytes_per_change": hist_bytes / total_changes,
        "memory_usage_total": mem_total,
        "commit": {
            "whole_model_step_median_s": float(np.median(step_s)),
            "whole_model_step_p95_s": float(np.percentile(step_s, 95)),
            "whole_model_step_max_s": float(np.max(step_s)),
            "whole_model_step_median_noncompact_s": float(np.median(step_s[~is_compact])),
            "whole_model_step_median_compact_s": (float(np.median(step_s[is_compact]))
                                                  if is_compact.any() else None),
            "per_matrix_median_s": float(np.median(per_s)),
            "per_matrix_p95_s": float(np.percentile(per_s, 95)),
            "per_matrix_max_s": float(np.max(per_s)),
            "whole_model_step_cpu_median_s": float(np.median(step_cpu)),
            "step_times_s": step_s.tolist(),
            "fsync_per_commit": True,
            "no_fsync": {
                "whole_model_step_median_s": float(np.median(ns_step)),
                "whole_model_step_max_s": float(np.max(ns_step)),
                "whole_model_step_cpu_median_s": float(np.median(ns_cpu)),
                "per_matrix_median_s": float(np.median(ns_per)),
                "per_matrix_max_s": float(np.max(ns_per)),
            },
        },
        "state": state,
        "state_ratio_last_over_first": (state[ts[-1]]["whole_model_median_s"]
                                        / state[ts[0]]["whole_model_median_s"]),
        "history": history,
        "history_final_value_matches": bool(hist_ok),
        "exact_max_ulp_live": exact_live,
        "exact_max_ulp_loaded": exact_loaded,
        "load_all_s": load_s,
        "loaded_changes_match": loaded_changes == total_changes,
        "profiles": {"commit": commit_profile, "weights_at_time": state_profile,
                     "weight_history": history_profile, "load": load_profile},
    }


def _profile_text(prof: cProfile.Profile, n: int = 18) -> str:
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(n)
    return s.getvalue()


# ------------------------------------------------------------------------------ checkpoints
def _save_synced(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def bench_checkpoints(tr: Trajectory, tmp: str, repeats: int) -> dict:
    folder = os.path.join(tmp, "ckpt")
    os.makedirs(folder)
    steps = [t for t in CKPT_WRITE_STEPS if t in tr.ref]
    commit, written = [], {}
    for t in steps:
        state = tr.ref[t]
        mats = [state[tr.offsets[m]:tr.offsets[m + 1]].reshape(r, c)
                for m, (_, r, c) in enumerate(tr.shapes)]
        files = [os.path.join(folder, f"t{t:04d}_m{m:02d}.npy") for m in range(len(mats))]
        with NoGC():
            t0 = time.perf_counter()
            for p, a in zip(files, mats):
                _save_synced(p, a)
            commit.append(time.perf_counter() - t0)
        written[t] = files
    step_bytes = [sum(os.path.getsize(p) for p in fs) for fs in written.values()]
    per_step = statistics.median(step_bytes)
    total = per_step * len(tr.steps)
    t_read = steps[0]

    def read():
        return [np.load(p) for p in written[t_read]]

    read_t = C.time_call(read, repeats=repeats, warmup=1)
    got = np.concatenate([a.ravel() for a in read_t["result"]])
    exact = ulp_diff(got, tr.ref[t_read])
    # weight_history: one element from each step's file (memory-mapped), measured on the
    # files written and scaled to all steps
    m, li = 4, 12345
    c = tr.shapes[m][2]

    def hist_few():
        return [float(np.load(written[t][m], mmap_mode="r")[li // c, li % c]) for t in steps]

    hist_t = C.time_call(hist_few, repeats=repeats, warmup=1)
    return {
        "written_steps": steps,
        "bytes_per_step_measured": per_step,
        "bytes_total_extrapolated": total,
        "disk_bytes_per_change": total / tr.n_changes,
        "commit_median_s": statistics.median(commit),
        "commit_times_s": commit,
        "read_step_s": C.strip_result(read_t),
        "history_estimated_s": hist_t["median_s"] / len(steps) * len(tr.steps),
        "exact_max_ulp": exact,
        "note": (f"{len(steps)} checkpoints written for real (np.save + fsync); the 120-step "
                 "size is the measured per-step size x 120; read = np.load of the 36 files of "
                 "one step with the page cache warm; history = per-file mmap read measured on "
                 "the written files x 120 steps"),
    }


# ------------------------------------------------------------------------------ COO deltas
def bench_coo(tr: Trajectory, tmp: str, repeats: int, ts: list[int]) -> dict:
    folder = os.path.join(tmp, "coo")
    os.makedirs(folder)
    bg, bv = tr.base_global()
    base_path = os.path.join(folder, "base.npz")
    with open(base_path, "wb") as f:
        np.savez(f, idx=bg.astype(np.int32), val=bv)
    paths, commit = [], []
    with NoGC():
        for i, (g, d) in enumerate(zip(tr.g, tr.d)):
            p = os.path.join(folder, f"step{i + 1:04d}.npz")
            t0 = time.perf_counter()
            with open(p, "wb") as f:
                np.savez(f, idx=g.astype(np.int32), d=d)
                f.flush()
                os.fsync(f.fileno())
            commit.append(time.perf_counter() - t0)
            paths.append(p)
    disk = sum(os.path.getsize(p) for p in paths)
    mem = sum(g.astype(np.int32).nbytes + d.nbytes for g, d in zip(tr.g, tr.d))
    n = tr.n_weights

    def state_at(t: int) -> np.ndarray:
        with np.load(base_path) as z:
            s = np.zeros(n, np.float64)
            s[z["idx"]] = z["val"]
        for p in paths[:t]:
            with np.load(p) as z:
                s[z["idx"]] += z["d"]
        return s.astype(np.float32)

    state, exact = {}, {}
    for t in ts:
        r = C.time_call(lambda t=t: state_at(t), repeats=repeats, warmup=1 if t == ts[0] else 0)
        state[t] = C.strip_result(r)
        if t in tr.ref:
            exact[t] = ulp_diff(r["result"], tr.ref[t])

    g0 = int(tr.g[-1][len(tr.g[-1]) // 2])

    def history(g: int = g0) -> list:
        out, value = [], 0.0
        with np.load(base_path) as z:
            j = np.searchsorted(z["idx"], g)
            if j < len(z["idx"]) and z["idx"][j] == g:
                value = float(z["val"][j])
                out.append((0, value))
        for t, p in enumerate(paths, 1):
            with np.load(p) as z:
                idx = z["idx"]
                j = np.searchsorted(idx, g)
                if j < len(idx) and idx[j] == g:
                    value += float(z["d"][j])
                    out.append((t, float(np.float32(value))))
        return out

    hist = C.time_call(history, repeats=repeats, warmup=1)
    return {
        "disk_bytes": disk,
        "disk_bytes_per_change": disk / tr.n_changes,
        "mem_bytes_per_change": mem / tr.n_changes,
        "commit_median_s": statistics.median(commit),
        "commit_max_s": max(commit),
        "state": state,
        "history_s": C.strip_result(hist),
        "exact_max_ulp": exact,
        "note": ("one uncompressed np.savez per step (int32 global index + float32 delta), "
                 "fsync'd; state@t = load base + replay steps 1..t into a dense float64 vector, "
                 "rounded to float32 (the whole model, dense)"),
    }


# ------------------------------------------------------------------------------ TileDB
def bench_tiledb(tr: Trajectory, tmp: str, repeats: int, ts: list[int]) -> dict:
    try:
        import tiledb
    except ImportError as exc:
        return {"skipped": f"tiledb not importable: {exc}"}
    uri = os.path.join(tmp, "tiledb_model")
    n = tr.n_weights
    dom = tiledb.Domain(tiledb.Dim("i", domain=(0, n - 1), tile=n, dtype=np.int64))
    schema = tiledb.ArraySchema(domain=dom, sparse=True, allows_duplicates=False,
                                attrs=[tiledb.Attr("v", dtype=np.float32)])
    tiledb.Array.create(uri, schema)
    bg, bv = tr.base_global()
    with tiledb.open(uri, "w", timestamp=1) as A:
        A[bg] = bv
    base_bytes = tree_bytes(uri)
    commit = []
    with NoGC():
        for i, (g, v) in enumerate(zip(tr.g, tr.v)):
            t0 = time.perf_counter()
            with tiledb.open(uri, "w", timestamp=i + 2) as A:
                A[g] = v
            commit.append(time.perf_counter() - t0)
    disk = tree_bytes(uri) - base_bytes

    def state_at(t: int):
        with tiledb.open(uri, "r", timestamp=t + 1) as A:
            return A.query(order="U")[:]

    state_at(1)                                   # warm-up
    state, exact = {}, {}
    for t in ts:
        r = C.time_call(lambda t=t: state_at(t), repeats=repeats, warmup=0)
        state[t] = C.strip_result(r)
        if t in tr.ref:
            got = np.zeros(n, np.float32)
            got[r["result"]["i"]] = r["result"]["v"]
            exact[t] = ulp_diff(got, tr.ref[t])
            state[t]["cells"] = int(len(r["result"]["v"]))

    g0 = int(tr.g[-1][len(tr.g[-1]) // 2])

    def history(g: int = g0) -> list:
        out = []
        for t in range(0, len(tr.steps) + 1):     # one fragment per step: open each alone
            with tiledb.open(uri, "r", timestamp=(t + 1, t + 1)) as A:
                res = A.multi_index[g:g]
            if len(res["v"]):
                out.append((t, float(res["v"][0])))
        return out

    hist = C.time_call(history, repeats=1, warmup=0)
    hist_ok = (hist["result"] and hist["result"][-1][1]
               == float(tr.ref.get(len(tr.steps), np.zeros(n, np.float32))[g0]))
    return {
        "version": tiledb.__version__,
        "libtiledb": ".".join(map(str, tiledb.libtiledb.version())),
        "design": ("one sparse 1-D array, int64 dim = global linear index (one space tile), "
                   "float32 attr, allows_duplicates=False, default filters; base at timestamp "
                   "1, step t at timestamp t+1 with the new cumulative values"),
        "coords_filters": str(schema.coords_filters),
        "base_bytes": base_bytes,
        "disk_bytes": disk,
        "disk_bytes_per_change": disk / tr.n_changes,
        "commit_median_s": statistics.median(commit),
        "commit_max_s": max(commit),
        "state": state,
        "history_s": C.strip_result(hist),
        "history_final_value_matches": bool(hist_ok),
        "exact_max_ulp": exact,
    }


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--repeats", type=int, default=5, help="repeats for hyprvdb, COO, ckpt")
    ap.add_argument("--tiledb-repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--no-tiledb", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the fsync'd commits, weights_at_time, weight_history and "
                         "load, and print the top functions (the commit timings of such a "
                         "run include the profiler's overhead)")
    ap.add_argument("--dir", default=None, help="folder for the temporary files")
    ap.add_argument("--keep", action="store_true", help="keep the temporary files")
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats, a.tiledb_repeats = 2, 1
    if a.steps < max(CKPT_WRITE_STEPS):
        ap.error(f"--steps must be at least {max(CKPT_WRITE_STEPS)}")
    wall0 = time.perf_counter()
    load0 = os.getloadavg()

    keep_ref = set(EXACT_TS) | set(CKPT_WRITE_STEPS) | set(STATE_TS) | {0, a.steps}
    keep_ref = {t for t in keep_ref if t <= a.steps}
    t0 = time.perf_counter()
    tr = make_trajectory(a.seed, a.layers, a.steps, keep_ref)
    gen_s = time.perf_counter() - t0
    ts_table = sorted({t for t in TABLE_TS if t <= a.steps} | {a.steps})
    print(f"workload: {len(tr.shapes)} matrices, {tr.n_weights:,} weights, {a.steps} steps, "
          f"{tr.n_changes:,} changes ({tr.n_changes / a.steps:,.0f} per step, "
          f"{100 * tr.overlap:.1f}% repeated from the step before), base "
          f"{sum(len(b[0]) for b in tr.base):,} active; generated in {gen_s:.1f} s")

    tmp = tempfile.mkdtemp(prefix="hyprvdb_bench_temporal_", dir=a.dir)
    res: dict = {}
    timings: dict = {}
    try:
        t0 = time.perf_counter()
        res["hyprvdb"] = hv = bench_hyprvdb(tr, tmp, a.repeats, a.profile)
        timings["hyprvdb"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res["checkpoints"] = ck = bench_checkpoints(tr, tmp, a.repeats)
        timings["checkpoints"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res["coo"] = coo = bench_coo(tr, tmp, max(1, a.repeats // 2 + 1), ts_table)
        timings["coo"] = time.perf_counter() - t0
        if a.no_tiledb:
            res["tiledb"] = td = {"skipped": "--no-tiledb"}
        else:
            t0 = time.perf_counter()
            res["tiledb"] = td = bench_tiledb(tr, tmp, a.tiledb_repeats, ts_table)
            timings["tiledb"] = time.perf_counter() - t0
    finally:
        if a.keep:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ report
    if a.profile:
        for k, txt in hv["profiles"].items():
            print(f"\n---- cProfile: hyprvdb {k} (sorted by own time) ----")
            print(txt.strip())
        print()

    last = ts_table[-1]
    hvc = hv["commit"]
    hst = hv["state"]
    h_hist = max(hv["history"]["changed"]["median_s"], hv["history"]["random"]["median_s"])
    ulp_live = max(hv["exact_max_ulp_live"].values())
    ulp_load = max(hv["exact_max_ulp_loaded"].values())

    def state_cell(st: dict, key: str) -> str:
        return " / ".join(f1(ms(st[t][key]) if t in st else None) for t in ts_table)

    rows = [
        ["hyprvdb TemporalAdapter", f1(hv["disk_bytes_per_change"], 2),
         f1(hv["mem_bytes_per_change"], 2),
         f"{hvc['whole_model_step_median_s'] * 1e3:.2f} "
         f"(max {hvc['whole_model_step_max_s'] * 1e3:.1f})",
         state_cell(hst, "whole_model_median_s"),
         f"{hv['history']['random']['median_s'] * 1e3:.3f}",
         f"{max(ulp_live, ulp_load)} ulp"],
        ["full checkpoints/step", f"{ck['disk_bytes_per_change']:,.0f}", "n/a",
         f"{ck['commit_median_s'] * 1e3:.1f}",
         f"{ck['read_step_s']['median_s'] * 1e3:.1f} (any t)",
         f"{ck['history_estimated_s'] * 1e3:.1f} (est)", f"{ck['exact_max_ulp']} ulp"],
        ["numpy COO deltas/step", f1(coo["disk_bytes_per_change"], 2),
         f1(coo["mem_bytes_per_change"], 2), f"{coo['commit_median_s'] * 1e3:.2f}",
         state_cell(coo["state"], "median_s"), f"{coo['history_s']['median_s'] * 1e3:.1f}",
         f"{max(coo['exact_max_ulp'].values())} ulp"],
    ]
    if "skipped" in td:
        rows.append(["TileDB (skipped)", "n/a", "n/a", "n/a", "n/a", "n/a", td["skipped"]])
    else:
        rows.append(["TileDB 1-D sparse, fragment/step", f1(td["disk_bytes_per_change"], 2),
                     "n/a", f"{td['commit_median_s'] * 1e3:.1f}",
                     state_cell(td["state"], "median_s"),
                     f"{td['history_s']['median_s'] * 1e3:.0f}",
                     f"{max(td['exact_max_ulp'].values())} ulp"])
    tcols = "/".join(str(t) for t in ts_table)
    print()
    C.print_table(["contender", "disk B/change", "mem B/change", "commit ms/step",
                   f"state@t ms (t={tcols})", "history ms", "exactness"], rows,
                  title=f"Weight history, whole model ({len(tr.shapes)} matrices, "
                        f"{tr.n_weights / 1e6:.1f}M weights, {a.steps} steps, "
                        f"{tr.n_changes:,} changes)")
    print("  hyprvdb state@t: 36 weights_at_time calls (SparseAdapter out); checkpoints: "
          "np.load of 36 dense files;\n  COO: replay into a dense vector; TileDB: time-travel "
          "read of all cells. history: hyprvdb weight_history (uniform random weight);\n"
          "  COO: scan of every step file; TileDB: one open per fragment; checkpoints: "
          "mmap read per file x steps (estimated).")

    print()
    flat_rows = []
    t1 = hst[min(hst)]["whole_model_median_s"]
    for t in sorted(hst):
        s = hst[t]
        flat_rows.append([t, f"{s['active_weights']:,}", f"{s['whole_model_median_s'] * 1e3:.1f}",
                          f"{s['whole_model_cpu_median_s'] * 1e3:.1f}",
                          f"{s['per_matrix_median_s'] * 1e3:.2f}",
                          f"{s['per_matrix_max_s'] * 1e3:.2f}",
                          f"{s['per_matrix_cpu_max_s'] * 1e3:.2f}", s["slowest_matrix"],
                          f"{s['whole_model_median_s'] / t1:.2f}x"])
    C.print_table(["t", "active weights", "whole model ms", "(cpu ms)", "per-matrix median ms",
                   "per-matrix max ms", "(cpu ms)", "slowest", "vs t=1"], flat_rows,
                  title="hyprvdb weights_at_time(t): flatness")

    print()
    C.print_table(
        ["what", "median", "p95", "max"],
        [["commit, whole-model step (36 store_delta)",
          f"{hvc['whole_model_step_median_s'] * 1e3:.2f} ms",
          f"{hvc['whole_model_step_p95_s'] * 1e3:.2f} ms",
          f"{hvc['whole_model_step_max_s'] * 1e3:.2f} ms"],
         ["  its cpu time (process_time)",
          f"{hvc['whole_model_step_cpu_median_s'] * 1e3:.2f} ms", "", ""],
         ["  steps without compaction",
          f"{hvc['whole_model_step_median_noncompact_s'] * 1e3:.2f} ms", "", ""],
         ["  compaction steps (every 16th)",
          f"{(hvc['whole_model_step_median_compact_s'] or 0) * 1e3:.2f} ms", "", ""],
         ["commit, whole-model step, save(sync=False)",
          f"{hvc['no_fsync']['whole_model_step_median_s'] * 1e3:.2f} ms", "",
          f"{hvc['no_fsync']['whole_model_step_max_s'] * 1e3:.2f} ms"],
         ["  its cpu time (process_time)",
          f"{hvc['no_fsync']['whole_model_step_cpu_median_s'] * 1e3:.2f} ms", "", ""],
         ["commit, per matrix, save(sync=False)",
          f"{hvc['no_fsync']['per_matrix_median_s'] * 1e3:.3f} ms", "",
          f"{hvc['no_fsync']['per_matrix_max_s'] * 1e3:.3f} ms"],
         ["commit, per matrix (one store_delta, fsync)",
          f"{hvc['per_matrix_median_s'] * 1e3:.3f} ms",
          f"{hvc['per_matrix_p95_s'] * 1e3:.3f} ms", f"{hvc['per_matrix_max_s'] * 1e3:.3f} ms"],
         ["weight_history, changed weight",
          f"{hv['history']['changed']['median_s'] * 1e3:.3f} ms", "",
          f"{hv['history']['changed']['max_s'] * 1e3:.3f} ms"],
         ["weight_history, random weight",
          f"{hv['history']['random']['median_s'] * 1e3:.3f} ms", "",
          f"{hv['history']['random']['max_s'] * 1e3:.3f} ms"],
         ["load 36 history files", f"{hv['load_all_s'] * 1e3:.1f} ms", "", ""]],
        title="hyprvdb commit / history / load (default: each commit fsyncs its file)")
    print(f"  exactness (max ulp vs float64 replay) live: {hv['exact_max_ulp_live']}, "
          f"after load: {hv['exact_max_ulp_loaded']}; disk: {hv['history_file_bytes']:,} B "
          f"history + {hv['base_file_bytes']:,} B base; memory_usage (all): "
          f"{hv['memory_usage_total']:,} B")
    print("  disk B/change by matrix shape (one record per matrix per step): " + ", ".join(
        f"{k}: {v['disk_bytes_per_change']:.2f} B ({v['changes_per_record']:.0f} changes/record)"
        for k, v in hv["by_shape"].items()))

    # targets
    commit_whole = hvc["whole_model_step_median_s"] * 1e3
    commit_pm = hvc["per_matrix_median_s"] * 1e3
    commit_nosync = hvc["no_fsync"]["whole_model_step_median_s"] * 1e3
    state_whole = max(hst[t]["whole_model_median_s"] for t in hst) * 1e3
    state_pm = max(hst[t]["per_matrix_max_s"] for t in hst) * 1e3
    targets = [
        ("disk", f"<= {TARGET_DISK} B/change", f"{hv['disk_bytes_per_change']:.2f} B",
         hv["disk_bytes_per_change"] <= TARGET_DISK),
        ("mem", f"<= {TARGET_MEM} B/change", f"{hv['mem_bytes_per_change']:.2f} B",
         hv["mem_bytes_per_change"] <= TARGET_MEM),
        ("commit/step (whole model)", f"<= {TARGET_COMMIT_MS} ms", f"{commit_whole:.2f} ms",
         commit_whole <= TARGET_COMMIT_MS),
        ("commit/step (whole model, no fsync)", f"<= {TARGET_COMMIT_MS} ms",
         f"{commit_nosync:.2f} ms", commit_nosync <= TARGET_COMMIT_MS),
        ("commit/matrix (median)", f"<= {TARGET_COMMIT_MS} ms", f"{commit_pm:.3f} ms",
         commit_pm <= TARGET_COMMIT_MS),
        ("state (whole model, worst t)", f"<= {TARGET_STATE_MS} ms", f"{state_whole:.1f} ms",
         state_whole <= TARGET_STATE_MS),
        ("state (per matrix, worst)", f"<= {TARGET_STATE_MS} ms", f"{state_pm:.2f} ms",
         state_pm <= TARGET_STATE_MS),
        ("history (median)", f"<= {TARGET_HISTORY_MS} ms", f"{h_hist * 1e3:.3f} ms",
         h_hist * 1e3 <= TARGET_HISTORY_MS),
        ("exactness (live, loaded)", f"<= {TARGET_ULP} ulp", f"{ulp_live}, {ulp_load} ulp",
         max(ulp_live, ulp_load) <= TARGET_ULP),
    ]
    print()
    C.print_table(["target", "goal", "measured", "verdict"],
                  [[n, g, m_, C.verdict(ok)] for n, g, m_, ok in targets],
                  title="hyprvdb targets")

    wall = time.perf_counter() - wall0
    ratio = hv["state_ratio_last_over_first"]
    act_ratio = hst[last]["active_weights"] / hst[min(hst)]["active_weights"]
    if "skipped" in td:
        peer = f"TileDB skipped ({td['skipped']})"
    else:
        peer = (f"TileDB {td['disk_bytes_per_change']:.1f} B, "
                f"{td['state'][ts_table[0]]['median_s'] * 1e3:.0f}->"
                f"{td['state'][last]['median_s'] * 1e3:.0f} ms growing (t={ts_table[0]}->{last})")
    short = ["disk", "mem", "commit/step", "commit/step-nofsync", "commit/matrix",
             "state/model", "state/matrix", "history", "exact"]
    verdicts = " ".join(f"{k} {'PASS' if ok else 'FAIL'}"
                        for k, (_, _, _, ok) in zip(short, targets))
    summary = (f"summary: hyprvdb {hv['disk_bytes_per_change']:.1f} B/change disk, "
               f"{hv['mem_bytes_per_change']:.1f} B/change mem, commit "
               f"{commit_whole:.1f} ms/step ({commit_nosync:.1f} without fsync, "
               f"{commit_pm:.2f} ms/matrix), state "
               f"{hst[last]['whole_model_median_s'] * 1e3:.0f} ms/model "
               f"({hst[last]['per_matrix_max_s'] * 1e3:.1f} ms max/matrix) "
               f"{'flat' if ratio <= 1.5 else 'GROWING'} (x{ratio:.2f} t{last}/t{min(hst)} "
               f"while the state grows x{act_ratio:.1f}), history {h_hist * 1e3:.2f} ms, "
               f"{max(ulp_live, ulp_load)} ulp vs {peer}; targets: {verdicts}; "
               f"wall {wall:.0f} s")

    if a.json:
        hv_json = dict(hv)
        if not a.profile:
            hv_json.pop("profiles", None)
        C.write_json(a.json, "temporal", {
            **res, "hyprvdb": hv_json,
            "targets": [{"name": n, "goal": g, "measured": m_, "pass": ok}
                        for n, g, m_, ok in targets],
            "section_wall_s": timings, "generate_s": gen_s, "wall_s": wall,
            "loadavg_start": load0, "loadavg_end": os.getloadavg(),
            "summary": summary,
        }, config={"seed": a.seed, "layers": a.layers, "steps": a.steps,
                   "repeats": a.repeats, "tiledb_repeats": a.tiledb_repeats,
                   "shapes": [list(s) for s in tr.shapes], "n_weights": tr.n_weights,
                   "n_changes": tr.n_changes, "change_frac": CHANGE_FRAC,
                   "overlap_target": OVERLAP, "overlap_measured": tr.overlap,
                   "base_density": BASE_DENSITY, "delta_sigma": DELTA_SIGMA,
                   "base_sigma": BASE_SIGMA, "hyprvdb_version": hyprvdb.__version__,
                   "tiledb_version": td.get("version"), "tmp_dir": tmp})
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
