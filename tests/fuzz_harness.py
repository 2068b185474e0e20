"""Random and adversarial inputs into every public function of ``hyprvdb.ops``, ``Snapshot``,
the history and the adapter.

Run as a child process (``python tests/fuzz_harness.py N SEED``), so that a crash ends the
child, not the test run that reads its report. Each case calls one function with inputs drawn
to be valid, nearly valid or hostile (wrong dtypes and shapes, out-of-range and huge
coordinates, NaN and infinity, empty and non-contiguous arrays, lists, None, strings, damaged
CSR arrays and file bytes). An outcome is one of:

- a result, checked against a numpy reference computed from the same inputs (a wrong value is
  a failure: "silently wrong");
- a refusal with one of the documented exception types (ValueError, TypeError, IndexError,
  KeyError, hyprvdb.HyprVDBError), whose message is not empty;
- anything else (another exception type, an empty message, a wrong result) is a failure; a
  crash is a dead child.

The last line printed is a JSON report: cases, results checked, refusals, failures (the first
few, with the call and the exception).
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np

import hyprvdb
from hyprvdb import CorruptFileError, ForeignFileError, HyprVDBError, Snapshot, ops

REFUSALS = (ValueError, TypeError, IndexError, KeyError, HyprVDBError)


class Wrong(AssertionError):
    """A result that differs from the numpy reference."""


# ----------------------------------------------------------------------------- inputs
def coords(rng, n: int, hi: int):
    """Mostly valid coordinates below ``hi``, sometimes hostile ones."""
    k = rng.integers(0, 14)
    if k < 8:
        return rng.integers(0, hi, n)
    return [
        lambda: rng.integers(-3, hi + 3, n),                       # a few outside
        lambda: rng.integers(0, hi, n).astype(np.float64) + 0.5,   # floats
        lambda: [2**70] * max(n, 1),                               # beyond int64
        lambda: np.full(max(n, 1), 2**40, np.int64),               # huge
        lambda: rng.integers(0, hi, (2, max(n, 1))),               # 2-D
        lambda: rng.integers(0, 2, n).astype(bool),                # booleans
    ][k - 8]()


def values(rng, n: int):
    k = rng.integers(0, 12)
    v = rng.standard_normal(n).astype(np.float32)
    if k < 8:
        return v
    if k == 8:
        v[rng.integers(0, max(n, 1)) % max(n, 1):] = np.nan if n else 0
        return v
    if k == 9:
        return np.full(n, 3e38, np.float64)
    if k == 10:
        return v.astype(np.complex64)
    return list(v[: max(0, n - 1)])                                 # one short


def scale(rng):
    return [1.0, -0.5, 2.0, float("nan"), float("inf"), "2", None, True, 3,
            np.float32(0.25)][rng.integers(0, 10)]


def array2d(rng, shape, dtype=np.float32):
    k = rng.integers(0, 10)
    a = rng.standard_normal(shape).astype(dtype)
    if k < 6:
        return a
    return [lambda: a.astype(np.float64), lambda: a[:, ::-1], lambda: a.tolist(),
            lambda: a.reshape(-1)][k - 6]()


# ----------------------------------------------------------------------------- references
def dense_of(rows, cols, vals, shape):
    d = np.zeros(shape, np.float64)
    d[np.asarray(rows), np.asarray(cols)] = np.asarray(vals, np.float64)
    return d


def close(got, want, mag, what: str) -> None:
    got = np.asarray(got, np.float64)
    if got.shape != want.shape or not np.all(np.abs(got - want) <= 1e-4 * mag + 1e-6):
        raise Wrong(f"{what}: differs from numpy by {np.max(np.abs(got - want)):.3g}")


class Env:
    """Snapshots, deltas and histories reused across cases (with numpy references)."""

    def __init__(self, rng):
        self.shapes = [(6, 10), (33, 70), (1, 1)]
        self.snaps = []
        for shape in self.shapes:
            n = max(1, shape[0] * shape[1] // 7)
            flat = rng.choice(shape[0] * shape[1], n, replace=False)
            r, c = np.divmod(flat, shape[1])
            v = rng.standard_normal(n).astype(np.float32)
            self.snaps.append((Snapshot.from_coo(r, c, v, shape), dense_of(r, c, v, shape)))
        self.tmp = Path(tempfile.mkdtemp(prefix="hyprvdb-fuzz-"))
        self.history_bytes = self._history_file(rng)
        self.nvdb_bytes = self._nvdb_file()

    def _history_file(self, rng) -> bytes:
        p = self.tmp / "h.hvz"
        h = hyprvdb.TemporalAdapter(5, 7, compact_every=2)
        h.store_base(rows=[0, 4], cols=[0, 6], values=[1.0, -1.0])
        h.save(p)
        for t in range(1, 6):
            h.store_delta(t, rng.integers(0, 5, 3), rng.integers(0, 7, 3),
                          rng.standard_normal(3))
        h.close()
        return p.read_bytes()

    def _nvdb_file(self) -> bytes:
        p = self.tmp / "s.nvdb"
        self.snaps[0][0].save_nvdb(p)
        return p.read_bytes()


# ----------------------------------------------------------------------------- targets
def t_delta_matmul(rng, env):
    snap, dense = env.snaps[rng.integers(0, len(env.snaps))]
    rows, k = snap.shape
    x = array2d(rng, (int(rng.integers(0, 5)), k if rng.random() < 0.9 else k + 1))
    s = scale(rng)
    y = ops.delta_matmul(x, snap, s)
    xf = np.asarray(x, np.float64)
    close(y, float(s) * xf @ dense.T, np.abs(xf) @ np.abs(dense).T * abs(float(s)) + 1,
          "delta_matmul")


def t_fused_linear(rng, env):
    snap, dense = env.snaps[rng.integers(0, len(env.snaps))]
    rows, k = snap.shape
    x = array2d(rng, (int(rng.integers(0, 4)), k))
    W = array2d(rng, (rows, k) if rng.random() < 0.9 else (rows + 1, k))
    bias = None if rng.random() < 0.5 else np.asarray(array2d(rng, (1, rows))).reshape(-1) \
        if rng.random() < 0.8 else [0.0] * rows
    s = scale(rng)
    y = ops.fused_linear(x, W, snap, s, bias)
    xf, Wf = np.asarray(x, np.float64), np.asarray(W, np.float64)
    want = xf @ (Wf + float(s) * dense).T + (0 if bias is None else np.asarray(bias))
    close(y, want, np.abs(xf) @ (np.abs(Wf) + abs(float(s)) * np.abs(dense)).T + 1,
          "fused_linear")


def t_gather(rng, env):
    snap, dense = env.snaps[rng.integers(0, len(env.snaps))]
    n = int(rng.integers(0, 20))
    r, c = coords(rng, n, snap.shape[0]), coords(rng, n, snap.shape[1])
    got = ops.gather(snap, r, c)
    want = dense[np.asarray(r).ravel(), np.asarray(c).ravel()].astype(np.float32)
    if not np.array_equal(got, want):
        raise Wrong("gather")


def t_merge(rng, env):
    snap, dense = env.snaps[rng.integers(0, len(env.snaps))]
    W = array2d(rng, snap.shape)
    before = np.array(W, np.float64, copy=True) if isinstance(W, np.ndarray) else None
    s = scale(rng)
    fn = [ops.merge, ops.unmerge][rng.integers(0, 2)]
    try:
        fn(W, snap, s)
    except REFUSALS:
        if before is not None and not np.array_equal(np.asarray(W, np.float64), before):
            raise Wrong(f"{fn.__name__}: refused, but W changed") from None
        raise
    sign = 1.0 if fn is ops.merge else -1.0
    close(W, before + sign * float(s) * dense, np.abs(before) + abs(float(s)) * np.abs(dense),
          fn.__name__)


def t_from_csr(rng, env):
    snap, dense = env.snaps[rng.integers(0, len(env.snaps))]
    up = ops.DeviceDelta.upload(snap, "cpu")
    arrays = [up.indptr.copy(), up.indices.copy(), up.data.copy(), up.rows.copy()]
    k = int(rng.integers(0, 4))
    a = arrays[k]
    if len(a) and rng.random() < 0.8:
        i = int(rng.integers(0, len(a)))
        a[i] = [rng.integers(-5, 10**6), rng.integers(-2, snap.shape[1] + 2), np.nan,
                rng.integers(-2, snap.shape[0] + 2)][k] if k != 2 or rng.random() < 0.5 \
            else rng.standard_normal()
    d = ops.DeviceDelta.from_csr(*arrays, snap.shape, "cpu")
    # accepted: the arrays are a valid CSR; the product must follow them
    x = rng.standard_normal((3, snap.shape[1])).astype(np.float32)
    ref = np.zeros(snap.shape)
    np.add.at(ref, (d.rows, d.indices), d.data)  # a column twice in a row: the kernels sum
    close(ops.delta_matmul(x, d), x @ ref.T, np.abs(x) @ np.abs(ref).T + 1, "from_csr")


def t_window(rng, env):
    h = hyprvdb.TemporalAdapter(4, 5, compact_every=2)
    truth = {0: np.zeros((4, 5))}
    cur = np.zeros((4, 5))
    for t in range(1, int(rng.integers(1, 6))):
        r, c = rng.integers(0, 4, 3), rng.integers(0, 5, 3)
        d = rng.standard_normal(3).astype(np.float32)
        h.store_delta(t, r, c, d)
        for i in range(3):
            cur[r[i], c[i]] += float(d[i])
        truth[t] = cur.copy()
    dh = ops.DeviceHistory(h, "cpu")
    t0 = [0, h.latest, 0.5, True, -1, h.latest + 1][rng.integers(0, 6)]
    t1 = [h.latest, 0, 2.7, None, h.latest][rng.integers(0, 5)]
    mode = ["delta", "state", "both"][rng.integers(0, 3)]
    got = dh.window(t0, t1, mode=mode)
    want = truth[t1] - truth[t0] if mode == "delta" else truth[t1]
    close(got, want, np.abs(want) + 1, "window")


def t_snapshot(rng, env):
    shape = [(5, 9), (1, 3), (0, 4), (2**31, 2), (3, 2**20)][rng.integers(0, 5)]
    n = int(rng.integers(0, 12))
    r = coords(rng, n, max(shape[0], 1))
    c = coords(rng, n, max(shape[1], 1))
    v = values(rng, n)
    step = [None, 3, -1, 2**70, True, 1.5][rng.integers(0, 6)]
    s = Snapshot.from_coo(r, c, v, shape, step=step)
    rr, cc = np.asarray(r).ravel(), np.asarray(c).ravel()
    if len(set(zip(rr.tolist(), cc.tolist()))) != len(rr):
        raise Wrong("from_coo accepted repeated coordinates")
    dense = dense_of(rr, cc, np.asarray(v, np.float32), shape)
    q = int(rng.integers(0, 10))
    qr, qc = coords(rng, q, shape[0]), coords(rng, q, shape[1])
    got = s.lookup(qr, qc)
    if not np.array_equal(got, dense[np.asarray(qr).ravel(), np.asarray(qc).ravel()]
                          .astype(np.float32)):
        raise Wrong("lookup")
    w = s.with_values(rr[:1], cc[:1], values(rng, 1)) if len(rr) else s
    if w.nnz != s.nnz:
        raise Wrong("with_values changed the topology")


def t_nvdb_bytes(rng, env):
    data = bytearray(env.nvdb_bytes)
    for _ in range(int(rng.integers(1, 4))):
        data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
    if rng.random() < 0.2:
        data = data[: int(rng.integers(0, len(data)))]
    p = env.tmp / "fuzz.nvdb"
    p.write_bytes(bytes(data))
    s = Snapshot.load_nvdb(p)
    orig = env.snaps[0][0]
    r, c, v = orig.active_weights()
    if s.shape != orig.shape or s.nnz != orig.nnz or not np.array_equal(s.lookup(r, c), v):
        raise Wrong("a damaged .nvdb loaded as another snapshot")


def t_history(rng, env):
    shape = [(4, 6), (2**31 + 1, 2), (3, 0), (1, 1)][rng.integers(0, 4)] \
        if rng.random() < 0.2 else (4, 6)
    h = hyprvdb.TemporalAdapter(*shape, compact_every=int(rng.integers(1, 4)))
    cur = np.zeros(shape, np.float64)
    for t in range(1, int(rng.integers(2, 6))):
        n = int(rng.integers(0, 5))
        r, c, d = coords(rng, n, shape[0]), coords(rng, n, shape[1]), values(rng, n)
        reset = None if rng.random() < 0.7 else (rng.random(n) < 0.5
                                                 if rng.random() < 0.8 else [True] * n)
        try:
            h.store_delta(t, r, c, d, reset=reset)
        except REFUSALS:
            continue
        rr, cc = np.asarray(r).ravel(), np.asarray(c).ravel()
        dd = np.asarray(d, np.float32).astype(np.float64)
        rs = np.zeros(len(rr), bool) if reset is None else np.asarray(reset)
        # A step stores one float32 change per weight: its repeats merged in float64 (a
        # repeat after a reset builds on it), then the change applied to the float64 sum.
        merged: dict = {}
        for i in range(len(rr)):
            key = (int(rr[i]), int(cc[i]))
            v, was_reset = merged.get(key, (0.0, False))
            merged[key] = (dd[i], True) if rs[i] else (v + dd[i], was_reset)
        for (a, b), (v, was_reset) in merged.items():
            v = float(np.float32(v))
            cur[a, b] = v if was_reset else cur[a, b] + v
    got = h.get_weights(np.repeat(np.arange(shape[0]), shape[1]), np.tile(np.arange(shape[1]),
                                                                          shape[0]))
    if not np.array_equal(got, cur.astype(np.float32).ravel()):
        raise Wrong("history state")
    q = [h.latest, -1, h.latest + 3, 0.5, "1"][rng.integers(0, 5)]
    h.resolve(q)
    r, c = coords(rng, 1, shape[0]), coords(rng, 1, shape[1])
    h.weight_history(int(np.asarray(r).ravel()[0]) if np.asarray(r).size else 0,
                     int(np.asarray(c).ravel()[0]) if np.asarray(c).size else 0)


def t_history_bytes(rng, env):
    data = bytearray(env.history_bytes)
    for _ in range(int(rng.integers(1, 3))):
        data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
    if rng.random() < 0.3:
        data = data[: int(rng.integers(0, len(data)))]
    p = env.tmp / "fuzz.hvz"
    p.write_bytes(bytes(data))
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = hyprvdb.TemporalAdapter.load(p)
    try:
        if not caught:  # loaded without a word: it must be the history as written
            ref = env.tmp / "ref.hvz"
            ref.write_bytes(env.history_bytes)
            g = hyprvdb.TemporalAdapter.load(ref)
            same = g.steps == h.steps and all(
                all(np.array_equal(a, b) for a, b in zip(g.active_weights(t),
                                                         h.active_weights(t)))
                for t in g.steps)
            g.close()
            if not same:
                raise Wrong("a damaged history loaded, silently, as another history")
    finally:
        h.close()


def apply_to_model(model: dict, op: int, r, c, v) -> None:
    """What a write that an adapter accepted does to a {(row, col): value} model: op 0 sets
    (last wins), 1 adds in float32, 2 removes."""
    rr, cc = np.asarray(r).ravel().tolist(), np.asarray(c).ravel().tolist()
    vv = np.asarray(v, np.float32).tolist()
    for i in range(len(rr)):
        if op == 0:
            model[(rr[i], cc[i])] = vv[i]
        elif op == 1:
            model[(rr[i], cc[i])] = float(np.float32(model.get((rr[i], cc[i]), 0.0))
                                          + np.float32(vv[i]))
        else:
            model.pop((rr[i], cc[i]), None)


def t_adapter(rng, env):
    shape = (5, 9) if rng.random() < 0.9 else [(0, 3), (2**31, 1), (3, -1)][rng.integers(0, 3)]
    a = hyprvdb.SparseAdapter(*shape)
    model = {}
    for _ in range(int(rng.integers(1, 5))):
        n = int(rng.integers(0, 6))
        r, c, v = coords(rng, n, shape[0]), coords(rng, n, shape[1]), values(rng, n)
        op = rng.integers(0, 3)
        try:
            [a.batch_update, a.add_weights, lambda r, c, v: a.remove_weights(r, c)][op](r, c, v)
        except REFUSALS:
            continue
        apply_to_model(model, op, r, c, v)
    r, c, v = a.active_weights()
    got = {(int(x), int(y)): float(z) for x, y, z in zip(r, c, v)}
    if {k: np.float32(x) for k, x in got.items()} != {k: np.float32(x) for k, x in model.items()}:
        raise Wrong("adapter state")


def t_adapter_set(rng, env):
    """Random writes to the members of one AdapterSet (one shared tree); every member must
    hold exactly its own writes, and the set must survive its file."""
    shapes = {"a": (5, 9), "b": (3, 130), "c": (70, 65)}
    if rng.random() < 0.1:
        shapes["d"] = [(0, 3), (2**31, 1), (3, -1), (2.5, 3)][rng.integers(0, 4)]
    s = hyprvdb.AdapterSet(shapes)
    models = {name: {} for name in s}
    for _ in range(int(rng.integers(1, 8))):
        name = list(s)[int(rng.integers(0, len(s)))]
        a, model, shape = s[name], models[name], s[name].shape
        n = int(rng.integers(0, 40))
        r, c, v = coords(rng, n, shape[0]), coords(rng, n, shape[1]), values(rng, n)
        op = int(rng.integers(0, 4))
        try:
            if op == 3:
                tol = float(abs(rng.standard_normal()))
                a.optimize(tol)
                for k in [k for k, x in model.items() if abs(np.float32(x)) <= tol]:
                    del model[k]
                continue
            [a.batch_update, a.add_weights, lambda r, c, v: a.remove_weights(r, c)][op](r, c, v)
        except REFUSALS:
            continue
        apply_to_model(model, op, r, c, v)
    if rng.random() < 0.2:
        p = env.tmp / "set.vdb"
        s.save(p)
        s = hyprvdb.AdapterSet.load(p)
    for name, model in models.items():
        r, c, v = s[name].active_weights()
        got = {(int(x), int(y)): np.float32(z) for x, y, z in zip(r, c, v)}
        if got != {k: np.float32(x) for k, x in model.items()}:
            raise Wrong(f"AdapterSet member {name!r} state")


TARGETS = [t_delta_matmul, t_fused_linear, t_gather, t_merge, t_from_csr, t_window,
           t_snapshot, t_nvdb_bytes, t_history, t_history_bytes]
WRITE_PATH = [t_adapter, t_adapter_set]


def main(n: int, seed: int) -> dict:
    warnings.simplefilter("ignore")  # references built from hostile inputs (complex, inf)
    rng = np.random.default_rng(seed)
    env = Env(rng)
    targets = list(TARGETS)
    try:
        hyprvdb.SparseAdapter(1, 1)
        targets += WRITE_PATH
    except ImportError:  # a serving build: no OpenVDB, no adapter to fuzz
        pass
    report = {"cases": 0, "results": 0, "refused": 0, "failures": [], "by_target": {}}
    for i in range(n):
        fn = targets[int(rng.integers(0, len(targets)))]
        tally = report["by_target"].setdefault(fn.__name__, 0)
        report["by_target"][fn.__name__] = tally + 1
        report["cases"] += 1
        try:
            fn(rng, env)
            report["results"] += 1
        except Wrong as exc:
            report["failures"].append(f"case {i} {fn.__name__}: wrong result: {exc}")
        except REFUSALS as exc:
            if not str(exc):
                report["failures"].append(f"case {i} {fn.__name__}: {type(exc).__name__} "
                                          f"with no message")
            report["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - the failures this harness is for
            tb = traceback.format_exc(limit=-3)
            report["failures"].append(f"case {i} {fn.__name__}: {type(exc).__name__}: {exc}\n"
                                      f"{tb}")
    report["failures"] = report["failures"][:20]
    return report


if __name__ == "__main__":
    n, seed = int(sys.argv[1]), int(sys.argv[2])
    out = main(n, seed)
    print(json.dumps(out))
    sys.exit(1 if out["failures"] else 0)
