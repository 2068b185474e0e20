"""Merged serving: the live weights are a merge from scratch, bit for bit, after any sequence
of commits, rollbacks, prunes and jumps between steps (float32 and bfloat16); moves write the
weights in place; and under concurrent requests every response comes from one whole committed
step, the one it reports.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

jax = pytest.importorskip("jax")
ml_dtypes = pytest.importorskip("ml_dtypes")
import jax.numpy as jnp  # noqa: E402

import hyprvdb  # noqa: E402
from conftest import dense_at  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder, MergedWeights, MiniLM, merge_from_scratch  # noqa: E402

SHAPES = {"q": (24, 40), "o": (40, 24), "up": (7, 130)}
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


def expected(pre: dict, g: hyprvdb.TemporalGroup, step: int, scale: float) -> dict:
    return {n: merge_from_scratch(pre[n], dense_at(g[n], step), scale) for n in pre}


def assert_merged(m: MergedWeights, pre: dict, g, scale: float, what: str) -> None:
    want = expected(pre, g, m.step, scale)
    for n, w in m.weights.items():
        got = np.asarray(w)
        assert got.dtype == pre[n].dtype
        same = bits(got) == bits(want[n])
        assert same.all(), (f"{what}: {n} at step {m.step}: {int((~same).sum())} weights differ "
                            f"from the merge from scratch")


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_ten_thousand_random_operations_stay_bitwise_equal_to_a_merge_from_scratch(dtype):
    """Commits of random sparse steps (increments and resets, repeats, large and tiny
    values), rollbacks, prunes and jumps to past steps and back: after every one of 10,000
    operations the live weights equal, bit for bit, W_pre + s * weights_at_time(step) merged
    from scratch."""
    rng = np.random.default_rng(12 if dtype == "float32" else 13)
    scale = 0.37
    g = hyprvdb.TemporalGroup(SHAPES, compact_every=5)
    pre = {n: (rng.standard_normal(s) * 2.0 ** rng.integers(-6, 6, s)).astype(DTYPES[dtype])
           for n, s in SHAPES.items()}
    m = MergedWeights({n: jnp.asarray(v) for n, v in pre.items()}, g, scale=scale)
    counts = {"commit": 0, "rollback": 0, "jump": 0, "prune": 0}
    for op in range(10_000):
        kind = rng.choice(["commit", "rollback", "jump", "prune"], p=[0.7, 0.12, 0.15, 0.03])
        if kind != "commit" and len(g.steps) < 3:
            kind = "commit"
        if kind == "commit":
            deltas, changed = {}, {}
            for n, (r, c) in SHAPES.items():
                k = int(rng.integers(0, 12))
                flat = np.unique(rng.integers(0, r * c, k))
                d = (rng.standard_normal(len(flat)) * 2.0 ** rng.integers(-12, 4, len(flat)))
                deltas[n] = (flat // c, flat % c, d.astype(np.float32),
                             rng.random(len(flat)) < 0.15)
                changed[n] = flat
            t = g.latest + 1
            g.store_deltas(t, deltas)
            m.move_to(t, changed)
        elif kind == "rollback":
            t = int(rng.choice(g.steps[:-1]))
            changed = m.changed_since(t)
            g.rollback(t)
            m.move_to(t, changed)
        elif kind == "jump":
            t = int(rng.choice(g.steps))
            m.move_to(t)
            assert_merged(m, pre, g, scale, f"op {op}: jump to {t}")
            m.move_to(g.latest)
        else:
            g.prune_history(int(rng.integers(1, len(g.steps))))
        counts[kind] += 1
        assert_merged(m, pre, g, scale, f"op {op}: {kind}")
    assert min(counts.values()) > 0, counts


def test_window_correction_reaches_the_past_step():
    """live + (S_t - S_live) is step t's merge, to float32 rounding."""
    rng = np.random.default_rng(5)
    g = hyprvdb.TemporalGroup(SHAPES)
    pre = {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}
    m = MergedWeights({n: jnp.asarray(v) for n, v in pre.items()}, g)
    for t in range(1, 8):
        g.store_deltas(t, {n: (rng.integers(0, r, 20), rng.integers(0, c, 20),
                               rng.standard_normal(20).astype(np.float32))
                           for n, (r, c) in SHAPES.items()})
        m.move_to(t)
    for t in range(0, 8):
        corr = m.window_correction(t)
        want = expected(pre, g, t, 1.0)
        for n, (r, c, v) in corr.items():
            live = np.asarray(m.weights[n]).copy()
            live[r, c] += v
            np.testing.assert_allclose(live, want[n], rtol=0, atol=4e-6 * np.abs(want[n]).max())
    assert m.step == 7


def test_moves_write_in_place():
    """A move reuses the weights' buffers (donated to the scatter): no second copy of the
    model exists, even for a moment, beyond the changed values."""
    g = hyprvdb.TemporalGroup({"w": (256, 256)})
    m = MergedWeights({"w": jnp.zeros((256, 256), jnp.float32)}, g)
    before = m.weights["w"].unsafe_buffer_pointer()
    for t in range(1, 6):
        g.store_deltas(t, {"w": ([t], [2 * t], [1.0])})
        m.move_to(t)
        assert m.weights["w"].unsafe_buffer_pointer() == before, "the move copied the weights"


def test_refusals():
    g = hyprvdb.TemporalGroup({"w": (4, 4)})
    with pytest.raises(KeyError, match="no member 'x'"):
        MergedWeights({"x": jnp.zeros((4, 4))}, g)
    with pytest.raises(ValueError, match=r"has shape \(4, 5\)"):
        MergedWeights({"w": jnp.zeros((4, 5))}, g)
    with pytest.raises(TypeError, match="must be one of"):
        MergedWeights({"w": jnp.zeros((4, 4), jnp.int32)}, g)
    with pytest.raises(ValueError, match="scale = nan is not finite"):
        MergedWeights({"w": jnp.zeros((4, 4))}, g, scale=float("nan"))
    with pytest.raises(TypeError, match="history must be a TemporalGroup"):
        MergedWeights({"w": jnp.zeros((4, 4))}, object())


# ----------------------------------------------------------------------------- concurrency
TINY = dict(layers=2, hidden=32, heads=4, intermediate=64, vocab=3000)
TEXTS = ["the cat sat on the mat", "json dumps serializes an object", "square root of x",
         "a history of sparse weights"]
PAIRS = [("os path join", "join two pathname components"),
         ("json dumps", "serialize an object to json"),
         ("math sqrt", "the square root of x"),
         ("re compile", "compile a regular expression")]


def test_requests_see_one_whole_committed_step_under_commits_and_rollbacks():
    """8 client threads encode while 200 steps are committed and 20 rollbacks happen; every
    response's embeddings equal (to float32 rounding across batch shapes) the embeddings
    computed offline for the step it reports, at a moment that step was live."""
    model = MiniLM.random(3, **TINY)
    pre = {n: np.asarray(model.weight(n)).copy() for n in model.linear_shapes()}
    enc = AdaptiveEncoder(model, lr=5.0, update_fraction=0.02, query_tokens=16,
                          doc_tokens=16)
    epochs = [(time.perf_counter(), 0, {n: np.zeros(s, np.float32)
                                        for n, s in model.linear_shapes().items()})]
    responses = []
    errors = []
    stop = threading.Event()

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        while not stop.is_set():
            texts = list(rng.choice(TEXTS, int(rng.integers(1, 4))))
            t0 = time.perf_counter()
            try:
                emb, step = enc.encode(texts)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
                return
            responses.append((t0, time.perf_counter(), texts, step, emb))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    rng = np.random.default_rng(99)
    try:
        rollbacks = 0
        for i in range(220):
            if i % 11 == 10 and enc.step > 2:
                enc.rollback(int(rng.integers(max(0, enc.step - 5), enc.step)))
                rollbacks += 1
            else:
                enc.adapt(PAIRS)
            epochs.append((time.perf_counter(), enc.step,
                           {n: dense_at(enc.history[n], enc.step) for n in pre}))
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    enc.close()
    assert not errors, errors[:3]
    assert rollbacks == 20 and len(epochs) == 221
    assert len(responses) > 100

    # Offline: each epoch's weights merged from scratch, a plain forward of each text alone.
    offline = MiniLM.random(3, **TINY)
    cache: dict[int, dict[str, np.ndarray]] = {}

    def embed(e: int, text: str) -> np.ndarray:
        if e not in cache:
            for n in pre:
                offline.params[f"encoder.{n}.weight"] = jnp.asarray(
                    merge_from_scratch(pre[n], epochs[e][2][n], 1.0))
            cache.clear()
            cache[e] = {t: offline.encode([t])[0] for t in TEXTS}
        return cache[e][text]

    starts = [e[0] for e in epochs]
    checked = 0
    for t0, t1, texts, step, emb in sorted(responses, key=lambda r: r[0]):
        # epochs live at some moment of [t0, t1]: the one live at t0 and every one published
        # before t1 (an epoch is published just before its time is taken)
        first = max(0, int(np.searchsorted(starts, t0, side="right")) - 1)
        last = int(np.searchsorted(starts, t1, side="right"))
        candidates = [e for e in range(first, min(last + 1, len(epochs)))
                      if epochs[e][1] == step]
        assert candidates, f"step {step} was not live during the request"
        ok = any(all(np.max(np.abs(embed(e, txt) - emb[j])) <= 1e-5
                     for j, txt in enumerate(texts)) for e in candidates)
        assert ok, f"a response reporting step {step} matches no state of that step"
        checked += 1
    assert checked == len(responses)
