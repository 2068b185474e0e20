"""hyprvdb.serve.AdaptiveEncoder: what it serves is exactly what its history holds.

One encoder (all-MiniLM-L6-v2, history in a file) is shared by the module: the first
``adapt`` compiles the gradient (tens of seconds on a small machine). Every ``adapt`` call
uses the same number of pairs and token lengths, so that it is compiled once.

- ``encode``: shapes, dtype, unit norm, the step it reports; at step 0 it is the plain model.
- ``adapt`` commits step t, and the live weights are then the pretrained weights plus the
  history's ``weights_at_time(t)``, merged from scratch, bit for bit, for all 36 matrices.
- ``encode(texts, step=t)`` serves a past step (the live weights plus the window's sparse
  correction) with the embeddings step t had when it was live, without moving the live step.
- A history file reopened by a new encoder serves the same step, weights and embeddings.
- Bad inputs raise ``ValueError`` or ``TypeError`` naming the problem and change nothing.
- ``rollback(t)`` serves t, discards the later steps (in memory and in the file), rewrites
  only what they changed, and the next ``adapt`` continues from t.

The rollback test discards steps the other tests read, so it comes last in the file.
"""

from __future__ import annotations

import math
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("safetensors", reason="MiniLM.load needs safetensors")
pytest.importorskip("tokenizers", reason="MiniLM.load needs tokenizers")

from conftest import dense_at  # noqa: E402
from hyprvdb import TemporalGroup  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder, MiniLM, merge_from_scratch  # noqa: E402

QUERY_TOKENS, DOC_TOKENS = 16, 32
UPDATE_FRACTION = 5e-4
# Always four pairs: another count is another shape, and the gradient is compiled again.
PAIRS = [
    ("os path join", "Join two or more pathname components, inserting '/' as needed."),
    ("json dumps", "Serialize obj to a JSON formatted str."),
    ("math sqrt", "Return the square root of x."),
    ("re compile", "Compile a regular expression pattern, returning a Pattern object."),
]
TEXTS = ["the cat sat on the mat", "json dumps serializes an object",
         "Return the square root of x."]
NAMES = ["layer.0.attention.self.query", "layer.2.attention.self.value",
         "layer.3.intermediate.dense", "layer.4.attention.output.dense",
         "layer.5.output.dense"]
EMB_TOL = 1e-5


def assert_embeddings_close(a: np.ndarray, b: np.ndarray, what: str,
                            tol: float = EMB_TOL) -> None:
    err = float(np.max(np.abs(a - b)))
    assert err <= tol, f"{what}: embeddings differ by {err:.3g} (tolerance {tol:g})"


def assert_live_is_the_merge(enc: AdaptiveEncoder, pre: dict, history, t: int,
                             names=NAMES) -> None:
    """The live weights are W_pre + weights_at_time(t), merged from scratch, bit for bit."""
    assert enc.step == t
    for name in names:
        want = merge_from_scratch(pre[name], dense_at(history[name], t), 1.0)
        got = np.asarray(enc.model.weight(name))
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
            f"{name}: live weights != pretrained + weights_at_time({t})"


def file_bytes(path) -> int:
    return os.path.getsize(path)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def plain():
    """The model without any adapter (never handed to an encoder)."""
    return MiniLM.load()


@pytest.fixture(scope="module")
def pre(plain):
    return {n: np.asarray(plain.weight(n)).copy() for n in plain.linear_shapes()}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """An encoder with three committed steps; ``embedded[t]`` is what it served at t."""
    path = tmp_path_factory.mktemp("serving") / "history.hvh"
    enc = AdaptiveEncoder(MiniLM.load(), path, query_tokens=QUERY_TOKENS, doc_tokens=DOC_TOKENS,
                          update_fraction=UPDATE_FRACTION)
    embedded = {0: enc.encode(TEXTS)[0]}
    outs = []
    for _ in range(3):
        out = enc.adapt(PAIRS)
        outs.append(out)
        embedded[out["step"]] = enc.encode(TEXTS)[0]
    yield SimpleNamespace(enc=enc, path=path, embedded=embedded, outs=outs)
    enc.close()


def new_encoder(path) -> AdaptiveEncoder:
    return AdaptiveEncoder(MiniLM.load(), path, query_tokens=QUERY_TOKENS, doc_tokens=DOC_TOKENS)


# ----------------------------------------------------------------------------- encode
def test_encode_shapes_norms_and_step(live):
    enc = live.enc
    emb, step = enc.encode(TEXTS)
    assert step == enc.step == 3
    assert isinstance(emb, np.ndarray) and emb.dtype == np.float32
    assert emb.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # One text, and five (padded to a batch of 8): each row is the text's own embedding.
    one, s1 = enc.encode(TEXTS[:1])
    assert one.shape == (1, 384) and s1 == step
    assert_embeddings_close(one[0], emb[0], "one text alone vs in a batch of 3")
    five, _ = enc.encode(TEXTS + TEXTS[:2])
    assert five.shape == (5, 384)
    assert_embeddings_close(five[:3], emb, "batch of 5 vs batch of 3")
    assert_embeddings_close(five[3:], emb[:2], "repeated texts")


def test_step_zero_is_the_plain_model(live, plain):
    assert_embeddings_close(live.embedded[0], plain.encode(TEXTS), "step 0 vs the plain model")
    # ... and later steps are not: the adapter moved the embeddings.
    assert np.max(np.abs(live.embedded[3] - live.embedded[0])) > 100 * EMB_TOL


def test_past_steps_are_served_as_they_were_live(live):
    enc = live.enc
    for t in (0, 1, 2, 3):
        emb, step = enc.encode(TEXTS, step=t)
        assert step == t
        assert_embeddings_close(emb, live.embedded[t], f"encode(step={t})")
    assert enc.step == 3, "serving a past step must not move the live step"


# ----------------------------------------------------------------------------- adapt
def test_adapt_commits_consecutive_steps(live):
    assert [o["step"] for o in live.outs] == [1, 2, 3]
    per_step = sum(max(1, int(UPDATE_FRACTION * r * c)) for r, c in live.enc.shapes.values())
    for o in live.outs:
        assert set(o) == {"step", "loss", "changes", "swap_ms"}
        assert math.isfinite(o["loss"]) and o["loss"] >= 0
        assert o["changes"] == per_step
        assert o["swap_ms"] >= 0
    h = live.enc.history
    assert h.steps[:4] == [0, 1, 2, 3]
    assert len(live.enc.shapes) == 36 and set(h) == set(live.enc.shapes)


def test_each_step_changes_top_k_weights_of_every_matrix(live):
    h = live.enc.history
    for name, (r, c) in live.enc.shapes.items():
        k = max(1, int(UPDATE_FRACTION * r * c))
        for t in (1, 2, 3):
            assert int((h[name].change_log().t == t).sum()) == k, f"{name} at step {t}"


def test_live_weights_are_the_merge_from_scratch(live, pre):
    assert_live_is_the_merge(live.enc, pre, live.enc.history, 3, names=list(live.enc.shapes))


def test_steps_differ(live):
    for t in (1, 2, 3):
        assert np.max(np.abs(live.embedded[t] - live.embedded[t - 1])) > 10 * EMB_TOL


# ----------------------------------------------------------------------------- persistence
def test_reopened_history_serves_the_same_step(live, pre):
    enc = live.enc
    copy = live.path.with_name("copy.hvh")
    shutil.copyfile(live.path, copy)
    again = new_encoder(copy)
    try:
        assert again.step == enc.step == again.history.latest
        assert again.history.steps == enc.history.steps
        assert_live_is_the_merge(again, pre, enc.history, enc.step)
        emb, step = again.encode(TEXTS)
        assert step == enc.step
        assert_embeddings_close(emb, enc.encode(TEXTS)[0], "reopened history", tol=1e-6)
        # ... and a rollback of its own copy serves what the live encoder served at step 1.
        assert again.rollback(1) == 1
        assert_live_is_the_merge(again, pre, again.history, 1)
        assert_embeddings_close(again.encode(TEXTS)[0], live.embedded[1], "rolled back to 1")
    finally:
        again.close()
    assert enc.step == 3 and enc.history.latest == 3


def test_history_file_holds_every_step(live):
    g = TemporalGroup.load(live.path)
    try:
        assert g.steps == live.enc.history.steps
        for t in (1, 2, 3):
            for name in NAMES:
                np.testing.assert_array_equal(dense_at(g[name], t),
                                              dense_at(live.enc.history[name], t))
    finally:
        g.close()


def test_history_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.hvh"
    g = TemporalGroup({"q": (4, 4)})
    g.save(path)
    g.close()
    with pytest.raises(ValueError, match="other matrices"):
        AdaptiveEncoder(MiniLM.random(0, layers=1, hidden=8, heads=2, intermediate=16,
                                      vocab=2000), path)


# ----------------------------------------------------------------------------- bad inputs
BAD_CALLS = [
    ("one pair", lambda e: e.adapt(PAIRS[:1]), ValueError, "at least 2"),
    ("no pairs", lambda e: e.adapt([]), ValueError, "at least 2"),
    ("pairs not a list", lambda e: e.adapt("os path join"), ValueError, "at least 2"),
    ("empty query", lambda e: e.adapt([("", "a doc")] + PAIRS[1:]), ValueError, r"pairs\[0\]"),
    ("empty positive", lambda e: e.adapt(PAIRS[:2] + [("q", "")] + PAIRS[3:]), ValueError,
     r"pairs\[2\]"),
    ("three strings", lambda e: e.adapt(PAIRS[:3] + [("a", "b", "c")]), ValueError,
     r"pairs\[3\]"),
    ("not a string", lambda e: e.adapt(PAIRS[:1] + [("q", 3)] + PAIRS[2:]), ValueError,
     r"pairs\[1\]"),
    ("lr = 0", lambda e: e.adapt(PAIRS, lr=0.0), ValueError, "lr must be a finite number > 0, "
     "got 0.0"),
    ("lr < 0", lambda e: e.adapt(PAIRS, lr=-0.1), ValueError, "got -0.1"),
    ("lr nan", lambda e: e.adapt(PAIRS, lr=float("nan")), ValueError, "got nan"),
    ("lr inf", lambda e: e.adapt(PAIRS, lr=float("inf")), ValueError, "got inf"),
    ("lr bool", lambda e: e.adapt(PAIRS, lr=True), ValueError, "got True"),
    ("lr 1e30", lambda e: e.adapt(PAIRS, lr=1e30), ValueError,
     r"lr = 1e\+30: the step would make the model's embeddings non-finite .* nothing was "
     r"committed"),
    ("commit inf", lambda e: e.commit({NAMES[0]: ([0], [0], [np.inf])}), ValueError,
     "not finite; nothing was committed"),
    ("commit unknown matrix", lambda e: e.commit({"nope": ([0], [0], [1.0])}), KeyError,
     "no adapted matrix 'nope'"),
    ("encode a lone surrogate", lambda e: e.encode(["ok", "bad \ud800"]), ValueError,
     r"texts\[1\] is not valid Unicode text: surrogates not allowed at position 4"),
    ("rollback to a future step", lambda e: e.rollback(e.step + 5), ValueError, "unknown"),
    ("rollback before the first step", lambda e: e.rollback(-1), ValueError, "-1"),
    ("encode nothing", lambda e: e.encode([]), ValueError, "must not be empty"),
    ("encode a future step", lambda e: e.encode(TEXTS, step=e.step + 1), ValueError, "unknown"),
    ("encode step True", lambda e: e.encode(TEXTS, step=True), TypeError,
     "step must be an int or None, got bool True"),
    ("encode step '1'", lambda e: e.encode(TEXTS, step="1"), TypeError, "got str '1'"),
]


@pytest.mark.parametrize("what,call,exc,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_inputs_raise_and_change_nothing(live, what, call, exc, message):
    enc = live.enc
    step, steps, size = enc.step, list(enc.history.steps), file_bytes(live.path)
    weights = np.asarray(enc.model.weight(NAMES[0])).copy()
    with pytest.raises(exc, match=message):
        call(enc)
    assert enc.step == step, f"{what}: the served step changed"
    assert enc.history.steps == steps, f"{what}: the history changed"
    assert file_bytes(live.path) == size, f"{what}: the history file changed"
    assert np.array_equal(np.asarray(enc.model.weight(NAMES[0])), weights), \
        f"{what}: the live weights changed"


@pytest.mark.parametrize("texts", ["one string", ["ok", 3], None])
def test_encode_wrong_kinds_are_type_errors(live, texts):
    with pytest.raises(TypeError, match="texts must be a list of str"):
        live.enc.encode(texts)


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": 0}, "lr must be a finite number > 0"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"update_fraction": 0}, "update_fraction must be in"),
    ({"update_fraction": 1.5}, "update_fraction must be in"),
])
def test_constructor_checks(tmp_path, kwargs, message):
    path = tmp_path / "never.hvh"
    with pytest.raises(ValueError, match=message):
        AdaptiveEncoder(MiniLM.random(0, layers=1, hidden=8, heads=2, intermediate=16,
                                      vocab=2000), path, **kwargs)
    assert not path.exists(), "a refused encoder must not create its history file"


# ----------------------------------------------------------------------------- rollback (last)
def test_rollback_serves_t_and_adapt_continues_from_it(live, pre):
    enc = live.enc
    latest = enc.step
    assert latest >= 3
    t = latest - 2
    expected = enc.encode(TEXTS, step=t)[0]
    assert enc.rollback(t) == t
    assert enc.step == t and enc.history.latest == t
    assert enc.history.steps[-1] == t and all(s <= t for s in enc.history.steps)
    emb, step = enc.encode(TEXTS)
    assert step == t
    assert_embeddings_close(emb, expected, f"after rollback({t})")
    assert_live_is_the_merge(enc, pre, enc.history, t, names=list(enc.shapes))

    g = TemporalGroup.load(live.path)
    try:
        assert g.latest == t and g.steps == enc.history.steps
    finally:
        g.close()

    # The next step is built from step t, not from the discarded steps.
    out = enc.adapt(PAIRS)
    assert out["step"] == t + 1 == enc.step
    assert_live_is_the_merge(enc, pre, enc.history, t + 1, names=list(enc.shapes))
    g = TemporalGroup.load(live.path)
    try:
        assert g.steps == enc.history.steps and g.latest == t + 1
        assert_live_is_the_merge(enc, pre, g, t + 1)
    finally:
        g.close()
