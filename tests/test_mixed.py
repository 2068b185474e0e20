"""Mixed batches in serving: ``AdaptiveEncoder.encode(texts, steps=[...])`` and
``encode(texts, adapters=[...])`` serve every text at its own step, or with its own adapter,
in one forward pass; each text's embedding equals serving it alone (the past step through its
window correction; an adapter as its own sparse delta on the pretrained weights) within 1e-5
(float32 sums in another order).
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import hyprvdb.jax as hj  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder, MiniLM  # noqa: E402

TOL = 1e-5
TEXTS = [f"text number {i} about {w}" for i, w in enumerate(
    ["json", "paths", "regex", "heaps", "sockets", "dates", "zip", "math", "uuid", "glob",
     "csv", "hashlib"])]
PAIRS = [("q one", "doc one"), ("q two", "doc two"), ("q three", "doc three")]


def model() -> MiniLM:
    return MiniLM.random(0, layers=2, hidden=32, heads=2, intermediate=64, vocab=512)


@pytest.fixture(scope="module")
def enc():
    e = AdaptiveEncoder(model(), query_tokens=8, doc_tokens=8, update_fraction=0.02)
    for _ in range(5):
        e.adapt(PAIRS)
    yield e
    e.close()


def test_a_batch_of_past_steps_equals_each_alone(enc):
    rng = np.random.default_rng(0)
    steps = [None if k == 6 else int(k) for k in rng.integers(0, 7, len(TEXTS))]
    emb, served = enc.encode(TEXTS, steps=steps)
    assert served == [enc.step if t is None else min(t, enc.step) for t in steps]
    for text, t, e in zip(TEXTS, served, emb):
        alone, s = enc.encode([text], step=t)
        assert s == t
        np.testing.assert_allclose(e, alone[0], atol=TOL, err_msg=f"{text!r} at step {t}")
    live, _ = enc.encode(TEXTS)
    all_live, served = enc.encode(TEXTS, steps=[None] * len(TEXTS))
    assert served == [enc.step] * len(TEXTS)
    np.testing.assert_allclose(all_live, live, atol=TOL)


def random_adapter(rng, shapes, density=0.01):
    out = {}
    for name, (r, c) in shapes.items():
        n = max(1, int(density * r * c))
        flat = rng.choice(r * c, n, replace=False)
        out[name] = (flat // c, flat % c, (rng.standard_normal(n) * 0.05).astype(np.float32))
    return out


def test_a_batch_of_adapters_equals_each_on_the_pretrained_model(enc):
    """Each adapter is served on the pretrained weights (the live adapter is not under it),
    whatever the live step, and equals the plain model with that adapter as a delta."""
    rng = np.random.default_rng(1)
    plain = model()
    adapters = {f"a{k}": random_adapter(rng, enc.shapes) for k in range(4)}
    for name, w in adapters.items():
        enc.add_adapter(name, w)
    names = [None if k == 4 else f"a{k}" for k in rng.integers(0, 5, len(TEXTS))]
    for _ in range(2):  # and again after the live step moved
        emb, served = enc.encode(TEXTS, adapters=names)
        assert served == names
        live, _ = enc.encode(TEXTS)
        for i, (text, name) in enumerate(zip(TEXTS, names)):
            if name is None:
                want = live[i]
            else:
                deltas = {layer: hj.SparseDelta.from_coo(*w, enc.shapes[layer])
                          for layer, w in adapters[name].items()}
                want = plain.encode([text], deltas)[0]
            np.testing.assert_allclose(emb[i], want, atol=TOL, err_msg=f"{text!r} with {name}")
        enc.adapt(PAIRS)


def test_mixed_batch_errors(enc):
    with pytest.raises(ValueError, match="one entry per text"):
        enc.encode(TEXTS[:2], steps=[1])
    with pytest.raises(ValueError, match="step and steps: give one"):
        enc.encode(TEXTS[:2], step=1, steps=[1, 2])
    with pytest.raises(TypeError, match=r"steps\[1\] must be an int or None"):
        enc.encode(TEXTS[:2], steps=[1, "2"])
    with pytest.raises(KeyError, match=r"adapters\[0\] = 'nope' is not an added adapter"):
        enc.encode(TEXTS[:1], adapters=["nope"])
    with pytest.raises(KeyError, match="no adapted matrix"):
        enc.add_adapter("x", {"not.a.layer": ([0], [0], [1.0])})
    with pytest.raises(IndexError, match="out of range"):
        enc.add_adapter("x", {next(iter(enc.shapes)): ([10**6], [0], [1.0])})
