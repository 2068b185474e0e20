"""A small seeded history to chart with ``hyprvdb plot``: sparse adapters on the linear layers of
MiniLM-L6's first layers, learning online and pruned now and then.

The adapters start empty (as ``hyprvdb demo``'s do). Each step changes a few weights of every
matrix: a matrix has an activity of its own (log-normal), and the steps change fewer weights
as the run goes on (the rate falls from 1.3 to 0.3 of ``RATE`` of a matrix's weights); 40% of a
step's weights come from a small set of weights the matrix keeps coming back to, the rest
anywhere. Every ``PRUNE_EVERY``-th step prunes instead of learning: each matrix resets its
smallest ``PRUNE_FRACTION`` of active weights (by magnitude) to 0. Nothing here needs OpenVDB.

Run:  python bench/example_history.py OUT.hvh [--seed 0] [--steps 50] [--layers 2]
It prints the ``hyprvdb plot`` command that draws the history, with the weight that changed
most often as ``--weight``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import hyprvdb

HIDDEN, INTERMEDIATE = 384, 1536
LINEARS = {"query": (HIDDEN, HIDDEN), "key": (HIDDEN, HIDDEN), "value": (HIDDEN, HIDDEN),
           "attention_output": (HIDDEN, HIDDEN), "intermediate": (INTERMEDIATE, HIDDEN),
           "output": (HIDDEN, INTERMEDIATE)}
RATE = 2e-4             # a step's changed weights, as a share of a matrix's weights
HOT = 0.4               # share of a step's weights drawn from the matrix's favourite weights
HOT_WEIGHTS = 64        # how many favourites a matrix has
DELTA_SIGMA = 1e-3
PRUNE_EVERY = 10
PRUNE_FRACTION = 0.3


def shapes(layers: int) -> dict[str, tuple[int, int]]:
    return {f"layer.{i}.{n}": s for i in range(layers) for n, s in LINEARS.items()}


def learning_step(rng: np.random.Generator, t: int, steps: int, shape: tuple[int, int],
                  activity: float, hot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = shape
    rate = RATE * activity * (0.3 + np.exp(-4.0 * t / steps))
    n = max(1, int(rng.poisson(rate * rows * cols)))
    n_hot = int(rng.binomial(n, HOT))
    flat = np.unique(np.concatenate([rng.choice(hot, min(n_hot, len(hot)), replace=False),
                                     rng.integers(0, rows * cols, n - n_hot)]))
    deltas = rng.normal(0.0, DELTA_SIGMA, len(flat)).astype(np.float32)
    return flat // cols, flat % cols, deltas


def pruning_step(h: hyprvdb.TemporalAdapter) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
    rows, cols, values = h.active_weights()
    k = int(PRUNE_FRACTION * len(values))
    smallest = np.sort(np.argsort(np.abs(values), kind="stable")[:k])
    return (rows[smallest], cols[smallest], np.zeros(k, np.float32), np.ones(k, bool))


def build(seed: int, steps: int, layers: int) -> hyprvdb.TemporalGroup:
    rng = np.random.default_rng(seed)
    sh = shapes(layers)
    g = hyprvdb.TemporalGroup(sh)
    activity = {name: float(rng.lognormal(0.0, 0.6)) for name in sh}
    hot = {name: rng.choice(r * c, HOT_WEIGHTS, replace=False) for name, (r, c) in sh.items()}
    for t in range(1, steps + 1):
        if t % PRUNE_EVERY == 0:
            g.store_deltas(t, {name: pruning_step(h) for name, h in g.items()})
        else:
            g.store_deltas(t, {name: learning_step(rng, t, steps, shape, activity[name],
                                                   hot[name])
                               for name, shape in sh.items()})
    return g


def most_changed(g: hyprvdb.TemporalGroup) -> tuple[str, int, int]:
    """The weight with the most stored changes (the first matrix's, on a tie the first)."""
    best = (-1, "", 0)
    for name, h in g.items():
        idx = h.change_log().idx
        if len(idx):
            counts = np.bincount(idx)
            i = int(np.argmax(counts))
            if counts[i] > best[0]:
                best = (int(counts[i]), name, i)
    _, name, i = best
    cols = g[name].shape[1]
    return name, i // cols, i % cols


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", metavar="OUT.hvh", help="the history file to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--layers", type=int, default=2, help="MiniLM layers (6 matrices each)")
    a = ap.parse_args(argv)
    if a.steps < 1:
        ap.error(f"--steps must be >= 1, got {a.steps}")
    if not 1 <= a.layers <= 6:
        ap.error(f"--layers must be in 1..6 (MiniLM-L6 has 6), got {a.layers}")
    g = build(a.seed, a.steps, a.layers)
    g.save(a.out)
    g.close()
    name, row, col = most_changed(g)
    print(f"wrote {a.out}: {len(g)} matrices, steps {g.base_step}..{g.latest}, "
          f"{g.change_count():,} changes, {os.path.getsize(a.out):,} bytes")
    print(f"chart it: hyprvdb plot {a.out} -o history.png --weight {name} {row} {col}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
