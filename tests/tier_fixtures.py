"""Histories written by the full build (OpenVDB open steps through ``accumulate``), with the
state of every matrix at every step, for the tests that read them where OpenVDB is absent.

``python tests/tier_fixtures.py FOLDER`` writes them (CI does this with the full build, then
runs ``tests/test_tiers.py`` in the serving environment, which has no ``hyprvdb._core``);
:func:`write` is what the tests call when the full build is the one running them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# all-MiniLM-L6-v2's 36 adapted matrices, (out_features, in_features), in forward order.
MINILM_LINEARS = (("attention.self.query", (384, 384)), ("attention.self.key", (384, 384)),
                  ("attention.self.value", (384, 384)), ("attention.output.dense", (384, 384)),
                  ("intermediate.dense", (1536, 384)), ("output.dense", (384, 1536)))
MINILM_SHAPES = {f"layer.{i}.{n}": s for i in range(6) for n, s in MINILM_LINEARS}

SMALL = "small.hvh"       # three matrices, accumulate + store_deltas with resets, surgery
MINILM = "minilm.hvh"     # MiniLM's 36 matrices, a few online steps through accumulate


def _states(g) -> dict[str, np.ndarray]:
    out = {"steps": np.asarray(g.steps, np.int64)}
    for name, h in g.items():
        for t in g.steps:
            r, c, v = h.active_weights(t)
            w = h.weights_at_time(t)  # the OpenVDB path: both must agree here
            wr, wc, wv = w.active_weights()
            assert np.array_equal(r, wr) and np.array_equal(c, wc)
            assert np.array_equal(v.view(np.uint32), wv.view(np.uint32))
            out[f"{name}@{t}"] = np.stack([r, c, v.view(np.uint32).astype(np.int64)])
    return out


def write(folder: str | Path) -> Path:
    """Write both histories and ``<name>.npz`` of their states into ``folder``."""
    import hyprvdb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261204)

    g = hyprvdb.TemporalGroup({"q": (40, 70), "v": (70, 40), "o": (8, 300)}, compact_every=3)
    for name, h in g.items():
        rows, cols = h.shape
        k = rows * cols // 50
        flat = rng.choice(rows * cols, k, replace=False)
        h.store_base(rows=flat // cols, cols=flat % cols,
                     values=rng.standard_normal(k).astype(np.float32))
    g.save(folder / SMALL)
    for step in range(1, 15):
        if step % 4 == 0:  # a step of resets and increments from a detector-like source
            deltas = {}
            for name, h in g.items():
                rows, cols = h.shape
                flat = rng.choice(rows * cols, 30, replace=False)
                deltas[name] = (flat // cols, flat % cols,
                                rng.standard_normal(30).astype(np.float32),
                                rng.random(30) < 0.3)
            g.store_deltas(step, deltas)
        else:  # gradient accumulation in the open step (an OpenVDB tree), two micro-batches
            for name, h in g.items():
                rows, cols = h.shape
                for _ in range(2):
                    r = rng.integers(0, rows, 25)
                    c = rng.integers(0, cols, 25)
                    g.accumulate(name, r, c, (0.01 * rng.standard_normal(25)).astype(np.float32))
            g.commit(step)
        if step == 9:
            g.rollback(7)
    g.prune_history(8)
    g.close()
    np.savez(folder / (SMALL + ".npz"), **_states(hyprvdb.TemporalGroup.load(folder / SMALL)))

    m = hyprvdb.TemporalGroup(MINILM_SHAPES)
    m.save(folder / MINILM)
    for step in range(1, 5):
        for name, (rows, cols) in MINILM_SHAPES.items():
            n = max(1, rows * cols // 2000)
            m.accumulate(name, rng.integers(0, rows, n), rng.integers(0, cols, n),
                         (0.02 * rng.standard_normal(n)).astype(np.float32))
        m.commit()
    m.close()
    np.savez(folder / (MINILM + ".npz"), **_states(hyprvdb.TemporalGroup.load(folder / MINILM)))
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/tier_fixtures.py FOLDER")
    print(write(sys.argv[1]))
