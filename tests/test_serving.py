"""hyprvdb.serving.AdaptiveEncoder: what it serves is exactly what its history holds.

One encoder (all-MiniLM-L6-v2, history in a file) is shared by the module: the first
``adapt`` compiles the gradient (tens of seconds on a small machine). Every ``adapt`` call
uses the same number of pairs and token lengths, so that it is compiled once.

- ``encode``: shapes, dtype, unit norm, the step it reports; at step 0 it is the plain model.
- ``adapt`` commits step t and the deltas it serves equal ``history[name].weights_at_time(t)``
  bit for bit (dense comparison through :func:`hyprvdb.jax.to_dense`).
- ``state_at(t)``, rebuilt from the history, equals the state that was served live at t and
  a new encoder's view of step t (``state_at`` and ``rollback`` on a copy of the file).
- A history file reopened by a new encoder serves the same step, deltas and embeddings.
- Bad inputs raise ``ValueError`` naming the problem and change nothing.
- ``rollback(t)`` serves t, discards the later steps (in memory and in the file), and the
  next ``adapt`` continues from t.

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

import hyprvdb.jax as hj  # noqa: E402
from conftest import dense_at  # noqa: E402
from hyprvdb import TemporalGroup  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder, MiniLM, ServingState  # noqa: E402

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


def dense(delta: hj.SparseDelta) -> np.ndarray:
    return np.asarray(hj.to_dense(delta))


def assert_state_is_history_step(state: ServingState, history: TemporalGroup, t: int,
                                 names=NAMES) -> None:
    """The served deltas at ``state`` are history[name].weights_at_time(t), exactly."""
    assert state.step == t
    for name in names:
        d = state.deltas[name]
        assert d.step == t, f"{name}: delta says step {d.step}, state says {t}"
        expected = dense_at(history[name], t)
        np.testing.assert_array_equal(dense(d), expected,
                                      err_msg=f"{name}: served delta != weights_at_time({t})")


def assert_same_deltas(a: ServingState, b: ServingState, names=None) -> None:
    assert a.step == b.step
    assert set(a.deltas) == set(b.deltas)
    for name in names or a.deltas:
        np.testing.assert_array_equal(dense(a.deltas[name]), dense(b.deltas[name]),
                                      err_msg=f"{name} at step {a.step}")


def assert_embeddings_close(a: np.ndarray, b: np.ndarray, what: str,
                            tol: float = EMB_TOL) -> None:
    err = float(np.max(np.abs(a - b)))
    assert err <= tol, f"{what}: embeddings differ by {err:.3g} (tolerance {tol:g})"


def file_bytes(path) -> int:
    return os.path.getsize(path)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model():
    return MiniLM.load()


@pytest.fixture(scope="module")
def live(model, tmp_path_factory):
    """An encoder with three committed steps; ``served[t]`` is the state it served at t."""
    path = tmp_path_factory.mktemp("serving") / "history.hvh"
    enc = AdaptiveEncoder(model, path, query_tokens=QUERY_TOKENS, doc_tokens=DOC_TOKENS,
                          update_fraction=UPDATE_FRACTION)
    served = {0: enc.state}
    embedded = {0: enc.encode(TEXTS)[0]}
    outs = []
    for _ in range(3):
        out = enc.adapt(PAIRS)
        outs.append(out)
        served[out["step"]] = enc.state
        embedded[out["step"]] = enc.encode(TEXTS)[0]
    yield SimpleNamespace(enc=enc, path=path, served=served, embedded=embedded, outs=outs)
    enc.history.close()


# ----------------------------------------------------------------------------- encode
def test_encode_shapes_norms_and_step(live, model):
    enc = live.enc
    emb, step = enc.encode(TEXTS)
    assert step == enc.step == enc.state.step
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


def test_encode_at_step_zero_is_the_plain_model(live, model):
    emb, step = live.enc.encode(TEXTS, state=live.served[0])
    assert step == 0
    assert_embeddings_close(emb, model.encode(TEXTS), "step 0 vs MiniLM without deltas")
    # ... and later steps are not: the adapter moved the embeddings.
    assert np.max(np.abs(live.embedded[3] - emb)) > 100 * EMB_TOL


def test_encode_reports_the_state_it_was_given(live):
    for t in (0, 1, 2):
        emb, step = live.enc.encode(TEXTS, state=live.served[t])
        assert step == t
        assert_embeddings_close(emb, live.embedded[t], f"encode(state=served[{t}])")


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


def test_served_deltas_equal_history_weights_at_time(live):
    for t, state in live.served.items():
        assert_state_is_history_step(state, live.enc.history, t)
    # All 36 matrices at the newest of these steps.
    assert_state_is_history_step(live.served[3], live.enc.history, 3,
                                 names=list(live.enc.shapes))


def test_steps_differ(live):
    for t in (1, 2, 3):
        before, after = live.served[t - 1], live.served[t]
        changed = [n for n in NAMES
                   if not np.array_equal(dense(before.deltas[n]), dense(after.deltas[n]))]
        assert changed == NAMES, f"step {t} left {set(NAMES) - set(changed)} unchanged"
        assert np.max(np.abs(live.embedded[t] - live.embedded[t - 1])) > 10 * EMB_TOL


# ----------------------------------------------------------------------------- time travel
def test_state_at_equals_what_was_served_live(live):
    enc = live.enc
    for t in (0, 1, 2, 3):
        st = enc.state_at(t)
        assert isinstance(st, ServingState) and st.step == t
        assert_same_deltas(st, live.served[t])
        emb, step = enc.encode(TEXTS, state=st)
        assert step == t
        assert_embeddings_close(emb, live.embedded[t], f"state_at({t})")
    assert enc.step == 3, "state_at must not change what is served"


def test_state_at_equals_a_fresh_encoders_view(live, model, tmp_path):
    copy = tmp_path / "copy.hvh"
    shutil.copyfile(live.path, copy)
    fresh = AdaptiveEncoder(model, copy, query_tokens=QUERY_TOKENS, doc_tokens=DOC_TOKENS)
    try:
        assert fresh.step == 3
        for t in (1, 2):
            assert_same_deltas(fresh.state_at(t), live.enc.state_at(t))
        # A new encoder that serves step 1 (after a rollback of its own file) serves what
        # the live encoder's state_at(1) serves.
        assert fresh.rollback(1) == 1
        assert fresh.step == 1
        assert_same_deltas(fresh.state, live.enc.state_at(1))
        emb, step = fresh.encode(TEXTS)
        assert step == 1
        assert_embeddings_close(emb, live.embedded[1], "fresh encoder rolled back to 1")
    finally:
        fresh.history.close()
    assert live.enc.step == 3 and live.enc.history.latest == 3


# ----------------------------------------------------------------------------- persistence
def test_reopened_history_serves_the_same_step(live, model):
    enc = live.enc
    again = AdaptiveEncoder(model, live.path, query_tokens=QUERY_TOKENS, doc_tokens=DOC_TOKENS)
    try:
        assert again.step == enc.step == again.history.latest
        assert again.history.steps == enc.history.steps
        assert_same_deltas(again.state, enc.state)
        emb, step = again.encode(TEXTS)
        assert step == enc.step
        assert_embeddings_close(emb, enc.encode(TEXTS)[0], "reopened history", tol=1e-6)
        assert_state_is_history_step(again.state, enc.history, enc.step)
    finally:
        again.history.close()


def test_history_file_holds_every_step(live):
    g = TemporalGroup.load(live.path)
    try:
        assert g.steps == live.enc.history.steps
        for t in (1, 2, 3):
            assert_state_is_history_step(live.served[t], g, t)
    finally:
        g.close()


def test_history_of_another_model_is_refused(model, tmp_path):
    path = tmp_path / "other.hvh"
    g = TemporalGroup({"q": (4, 4)})
    g.save(path)
    g.close()
    with pytest.raises(ValueError, match="other matrices"):
        AdaptiveEncoder(model, path)


# ----------------------------------------------------------------------------- bad inputs
BAD_CALLS = [
    ("one pair", lambda e: e.adapt(PAIRS[:1]), "at least 2"),
    ("no pairs", lambda e: e.adapt([]), "at least 2"),
    ("pairs not a list", lambda e: e.adapt("os path join"), "at least 2"),
    ("empty query", lambda e: e.adapt([("", "a doc")] + PAIRS[1:]), r"pairs\[0\]"),
    ("empty positive", lambda e: e.adapt(PAIRS[:2] + [("q", "")] + PAIRS[3:]), r"pairs\[2\]"),
    ("three strings", lambda e: e.adapt(PAIRS[:3] + [("a", "b", "c")]), r"pairs\[3\]"),
    ("not a string", lambda e: e.adapt(PAIRS[:1] + [("q", 3)] + PAIRS[2:]), r"pairs\[1\]"),
    ("lr = 0", lambda e: e.adapt(PAIRS, lr=0.0), "lr must be > 0, got 0"),
    ("lr < 0", lambda e: e.adapt(PAIRS, lr=-0.1), "lr must be > 0, got -0.1"),
    ("lr nan", lambda e: e.adapt(PAIRS, lr=float("nan")), "lr must be > 0, got nan"),
    ("rollback to a future step", lambda e: e.rollback(e.step + 5), "unknown"),
    ("rollback before the first step", lambda e: e.rollback(-1), "-1"),
    ("encode nothing", lambda e: e.encode([]), "must not be empty"),
]


@pytest.mark.parametrize("what,call,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_inputs_raise_and_change_nothing(live, what, call, message):
    enc = live.enc
    state, steps, size = enc.state, list(enc.history.steps), file_bytes(live.path)
    with pytest.raises(ValueError, match=message):
        call(enc)
    assert enc.state is state, f"{what}: the served state changed"
    assert enc.history.steps == steps, f"{what}: the history changed"
    assert file_bytes(live.path) == size, f"{what}: the history file changed"


@pytest.mark.parametrize("texts", ["one string", ["ok", 3], None])
def test_encode_wrong_kinds_are_type_errors(live, texts):
    with pytest.raises(TypeError, match="texts must be a list of str"):
        live.enc.encode(texts)


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": 0}, "lr must be > 0"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"update_fraction": 0}, "update_fraction must be in"),
    ({"update_fraction": 1.5}, "update_fraction must be in"),
    ({"capacity_fraction": 0}, "capacity_fraction must be in"),
])
def test_constructor_checks(model, tmp_path, kwargs, message):
    path = tmp_path / "never.hvh"
    with pytest.raises(ValueError, match=message):
        AdaptiveEncoder(model, path, **kwargs)
    assert not path.exists(), "a refused encoder must not create its history file"


# ----------------------------------------------------------------------------- rollback (last)
def test_rollback_serves_t_and_adapt_continues_from_it(live):
    enc = live.enc
    latest = enc.step
    assert latest >= 3
    t = latest - 2
    expected = enc.encode(TEXTS, state=enc.state_at(t))[0]
    assert enc.rollback(t) == t
    assert enc.step == t and enc.history.latest == t
    assert enc.history.steps[-1] == t and all(s <= t for s in enc.history.steps)
    emb, step = enc.encode(TEXTS)
    assert step == t
    assert_embeddings_close(emb, expected, f"after rollback({t})")
    assert_state_is_history_step(enc.state, enc.history, t, names=list(enc.shapes))

    g = TemporalGroup.load(live.path)
    try:
        assert g.latest == t and g.steps == enc.history.steps
    finally:
        g.close()

    # The next step is built from step t, not from the discarded steps.
    out = enc.adapt(PAIRS)
    assert out["step"] == t + 1 == enc.step
    assert_state_is_history_step(enc.state, enc.history, t + 1, names=list(enc.shapes))
    g = TemporalGroup.load(live.path)
    try:
        assert g.steps == enc.history.steps and g.latest == t + 1
        assert_state_is_history_step(enc.state, g, t + 1)
    finally:
        g.close()
