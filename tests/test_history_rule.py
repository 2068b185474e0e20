"""The one rule for a weight's value at step t, in its two implementations: the C++ of
``kernels/history.cuh`` (through ``hyprvdb._cpu``: whole states, and values of chosen weights
found through run checkpoints) and its numpy twin (``hyprvdb/_zaxis.py``). They must agree
bit for bit, on histories with resets, compactions, tiers, folds and rollbacks, and both must
agree with a float64 replay of the stored changes.
"""

from __future__ import annotations

import numpy as np
import pytest

import hyprvdb
from hyprvdb import _native

pytestmark = pytest.mark.skipif(_native.cpu() is None, reason="hyprvdb._cpu is not built: "
                                "there is only the numpy twin to test")


def random_group(rng, *, tiers=None, compact_every=3, steps=40):
    g = hyprvdb.TemporalGroup({"a": (37, 70), "b": (5, 1000)}, tiers=tiers,
                              compact_every=compact_every)
    pools = {}
    for name, h in g.items():
        rows, cols = h.shape
        k = rows * cols // 20
        flat = np.sort(rng.choice(rows * cols, k, replace=False))
        h.store_base(rows=flat // cols, cols=flat % cols,
                     values=(rng.standard_normal(k) * 2.0 ** 30).astype(np.float32))
        # a pool of weights revisited often, so that runs hold many changes
        pools[name] = np.concatenate([flat[:150], rng.choice(rows * cols, 150, replace=False)])
    for t in range(1, steps + 1):
        deltas = {}
        for name, h in g.items():
            rows, cols = h.shape
            n = int(rng.integers(0, 60))
            flat = np.unique(rng.choice(pools[name], n, replace=False))
            n = len(flat)
            # magnitudes 2^-40 .. 2^40: float64 sums round, so the order of additions shows
            d = rng.standard_normal(n) * 2.0 ** rng.integers(-40, 40, n)
            deltas[name] = (flat // cols, flat % cols, d.astype(np.float32), rng.random(n) < 0.1)
        g.store_deltas(t, deltas)
    return g


def both(monkeypatch, fn):
    fast = fn()
    with monkeypatch.context() as m:
        m.setattr(_native, "cpu", lambda: None)
        slow = fn()
    return fast, slow


@pytest.mark.parametrize("kind", ["plain", "tiers", "fold", "rollback"])
def test_cpp_and_numpy_agree_bit_for_bit(kind, monkeypatch):
    rng = np.random.default_rng(hash(kind) % 2**32)
    g = random_group(rng, tiers=[(5, 1), (None, 4)] if kind == "tiers" else None)
    if kind == "fold":
        g.prune_history(17)
    if kind == "rollback":
        g.rollback(29)
    for name, h in g.items():
        rows, cols = h.shape
        query = np.unique(rng.integers(0, rows * cols, 3000))
        m = g._matrices[name]  # the float64 sums, before the one rounding to float32
        for t in g.steps:
            (fi, fv), (si, sv) = both(monkeypatch, lambda: m.state(t))
            assert np.array_equal(fi, si), (name, t)
            assert np.array_equal(fv.view(np.uint64), sv.view(np.uint64)), (name, t)
            fq, sq = both(monkeypatch, lambda: m.values(query, t))
            assert np.array_equal(fq.view(np.uint64), sq.view(np.uint64)), (name, t)
            (fr, fc, fv), (sr, sc, sv) = both(monkeypatch, lambda: h.active_weights(t))
            assert np.array_equal(fr, sr) and np.array_equal(fc, sc), (name, t)
            assert np.array_equal(fv.view(np.uint32), sv.view(np.uint32)), (name, t)
            fq, sq = both(monkeypatch, lambda: h.get_weights(query // cols, query % cols, t))
            assert np.array_equal(fq.view(np.uint32), sq.view(np.uint32)), (name, t)
            dense = np.zeros(rows * cols, np.float32)
            dense[fr * cols + fc] = fv
            assert np.array_equal(fq, dense[query]), (name, t)


@pytest.mark.parametrize("order", ["sparse", "shuffled", "descending", "repeats"])
def test_values_of_chosen_weights_in_any_order(order, monkeypatch):
    """Sorted queries walk on from each other through the runs, the base and the tail; a few
    far apart skip past checkpoints, and a query below the one before starts again: every
    order gives the numpy twin's values bit for bit."""
    rng = np.random.default_rng(5)
    g = random_group(rng, steps=25)
    for name, h in g.items():
        rows, cols = h.shape
        m = g._matrices[name]
        q = np.unique(rng.integers(0, rows * cols, 3000))
        q = {"sparse": q[::97], "shuffled": rng.permutation(q), "descending": q[::-1],
             "repeats": np.sort(np.concatenate([q[:500], q[:500]]))}[order]
        for t in g.steps[::4]:
            fq, sq = both(monkeypatch, lambda: m.values(q, t))
            assert np.array_equal(fq.view(np.uint64), sq.view(np.uint64)), (name, t)


def test_values_of_chosen_weights_walk_past_checkpoints():
    """Lookups land on every run position relative to the checkpoints (before the first,
    on one, between, after the last)."""
    rng = np.random.default_rng(7)
    stride = int(_native.cpu().RUN_STRIDE)
    h = hyprvdb.TemporalAdapter(1, 10 * stride, compact_every=1)
    cols = np.arange(1, 10 * stride, 3)  # runs at every third column, none at column 0
    h.store_delta(1, np.zeros(len(cols), np.int64), cols, rng.standard_normal(len(cols)))
    h.store_delta(2, np.zeros(len(cols), np.int64), cols, rng.standard_normal(len(cols)))
    every = np.arange(10 * stride)
    got = h.get_weights(np.zeros(len(every), np.int64), every)
    r, c, v = h.active_weights()
    want = np.zeros(10 * stride, np.float32)
    want[c] = v
    assert np.array_equal(got, want)


def test_the_rule_against_a_float64_replay():
    rng = np.random.default_rng(11)
    h = hyprvdb.TemporalAdapter(3, 4, compact_every=2)
    truth = np.zeros(12, np.float64)
    states = {0: truth.copy()}
    for t in range(1, 30):
        n = int(rng.integers(1, 6))
        flat = np.sort(rng.choice(12, n, replace=False))
        d = rng.standard_normal(n).astype(np.float32)
        reset = rng.random(n) < 0.3
        h.store_delta(t, flat // 4, flat % 4, d, reset=reset)
        truth[flat] = np.where(reset, d.astype(np.float64), truth[flat] + d.astype(np.float64))
        states[t] = truth.copy()
    for t, want in states.items():
        got = h.get_weights(np.arange(12) // 4, np.arange(12) % 4, t)
        assert np.array_equal(got, want.astype(np.float32)), t
