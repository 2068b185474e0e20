"""Random operation sequences on TemporalAdapter against a dense numpy reference.

The reference keeps every stored step's full matrix, computed in float64 from the deltas as
the history stores them: the entries of one ``store_delta`` call merged per coordinate in
float64 (a reset restarts the merge) and rounded once to float32; ``accumulate`` mimics the
float32 open buffer (repeats add in call order). Folding, rollback and the circular buffer
only drop matrices, since a float64 replay of float32 deltas of bounded range is exact.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from hyprvdb import HistoryRecoveryWarning, SparseAdapter, TemporalAdapter

SETTINGS = settings(deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Tiered scenarios are long; shrinking one takes minutes, so failures are reported unshrunk
# (the explicit examples below are already minimal).
TIER_SETTINGS = settings(SETTINGS, max_examples=30,
                         phases=[Phase.explicit, Phase.reuse, Phase.generate])
TIERS = [(3, 1), (9, 3), (None, 9)]
# save() always fsyncs; a RAM-backed folder keeps hundreds of saves fast where there is one.
TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# ---------------------------------------------------------------------------- reference
class Ref:
    """Dense float64 model of the whole history (no tiers)."""

    def __init__(self, rows: int, cols: int, max_history: int | None = None) -> None:
        self.shape = (rows, cols)
        self.max_history = max_history
        self.steps = [0]
        self.states = {0: np.zeros(self.shape, np.float64)}
        self.entries: dict[int, dict[tuple[int, int], tuple[bool, np.float32]]] = {}
        self.open: dict[tuple[int, int], np.float32] | None = None

    @property
    def latest(self) -> int:
        return self.steps[-1]

    @property
    def base_step(self) -> int:
        return self.steps[0]

    def resolve(self, t: int) -> int:
        return max(s for s in self.steps if s <= t)

    def store_base(self, rows, cols, values) -> None:
        base = np.zeros(self.shape, np.float64)
        for r, c, v in zip(rows, cols, values):
            base[r, c] += float(np.float32(v))
        self.states[0] = base

    @staticmethod
    def merge(rows, cols, deltas, resets):
        """One call's entries: per coordinate (reset?, float32 value), merged in float64."""
        acc: dict[tuple[int, int], tuple[bool, float]] = {}
        for r, c, d, rs in zip(rows, cols, deltas, resets):
            d = float(np.float32(d))
            was_reset, v = acc.get((r, c), (False, 0.0))
            acc[(r, c)] = (True, d) if rs else (was_reset, v + d)
        return {k: (rs, np.float32(v)) for k, (rs, v) in acc.items()}

    def append(self, t: int, entries) -> None:
        assert t > self.latest
        state = self.states[self.latest].copy()
        for (r, c), (rs, d) in entries.items():
            state[r, c] = float(d) if rs else state[r, c] + float(d)
        self.steps.append(t)
        self.states[t] = state
        self.entries[t] = entries
        if self.max_history is not None and len(self.steps) - 1 > self.max_history:
            self.fold(self.steps[len(self.steps) - 1 - self.max_history])

    def accumulate(self, rows, cols, grads) -> None:
        if self.open is None:
            self.open = {}
        for r, c, g in zip(rows, cols, grads):
            self.open[(r, c)] = np.float32(self.open.get((r, c), np.float32(0))
                                           + np.float32(g))

    def commit(self, t: int | None) -> int:
        t = self.latest + 1 if t is None else t
        entries = {k: (False, v) for k, v in (self.open or {}).items()}
        self.open = None
        self.append(t, entries)
        return t

    def fold(self, cut: int) -> None:
        for s in [s for s in self.steps if s < cut]:
            del self.states[s]
        for s in [s for s in self.entries if s <= cut]:
            del self.entries[s]
        self.steps = [s for s in self.steps if s >= cut]

    def prune(self, keep_last: int) -> int:
        n = len(self.steps) - 1
        if keep_last >= n:
            return self.base_step
        cut = self.steps[n - keep_last]
        self.fold(cut)
        return cut

    def rollback(self, t: int) -> int:
        step = self.resolve(t)
        for s in [s for s in self.steps if s > step]:
            del self.states[s]
            del self.entries[s]
        self.steps = [s for s in self.steps if s <= step]
        return step

    def change_count(self) -> int:
        return sum(len(e) for e in self.entries.values())

    def weight_history(self, r: int, c: int) -> list[tuple[int, np.float32]]:
        out = []
        b = self.states[self.base_step][r, c]
        if b != 0:
            out.append((self.base_step, np.float32(b)))
        for s in self.steps[1:]:
            if (r, c) in self.entries[s]:
                out.append((s, np.float32(self.states[s][r, c])))
        return out


def assert_state(adapter: SparseAdapter, dense64: np.ndarray, what: str = "") -> None:
    """``adapter`` holds float32(dense64) within 2 ulp, active exactly where it is nonzero."""
    expected = dense64.astype(np.float32)
    assert isinstance(adapter, SparseAdapter), what
    assert adapter.shape == expected.shape, what
    got = adapter.to_dense()
    assert got.dtype == np.float32, what
    np.testing.assert_array_max_ulp(got, expected, maxulp=2)
    r, c, _ = adapter.active_weights()
    active = np.zeros(expected.shape, bool)
    active[r, c] = True
    np.testing.assert_array_equal(active, expected != 0, err_msg=f"active set {what}")


def check_states(h: TemporalAdapter, ref: Ref) -> None:
    """Step list, change count and the weights at every stored step."""
    assert h.steps == ref.steps
    assert (h.latest, h.base_step) == (ref.latest, ref.base_step)
    assert h.change_count() == ref.change_count()
    for s in ref.steps:
        assert_state(h.weights_at_time(s), ref.states[s], f"weights_at_time({s})")
    assert_state(h.current(), ref.states[ref.latest], "current()")


def check_all(h: TemporalAdapter, ref: Ref) -> None:
    """Every query of ``h`` against the reference."""
    check_states(h, ref)
    for t in range(ref.base_step, ref.latest + 1):
        assert h.resolve(t) == ref.resolve(t)
        a, s = h.weights_at_time(t, return_step=True)
        assert s == ref.resolve(t)
        assert_state(a, ref.states[s], f"weights_at_time({t})")
    # Window deltas over stored steps and over steps between them (which resolve).
    probes = sorted(set(ref.steps) | {ref.base_step + (ref.latest - ref.base_step) // 2,
                                      max(ref.base_step, ref.latest - 1)})
    pairs = {(probes[0], t) for t in probes} | {(t, t) for t in probes}
    pairs |= set(zip(probes, probes[1:])) | set(zip(probes, probes[2:]))
    for t0, t1 in sorted(pairs):
        diff = ref.states[ref.resolve(t1)] - ref.states[ref.resolve(t0)]
        assert_state(h.window_delta(t0, t1), diff, f"window_delta({t0}, {t1})")
    slices = ref.steps[1:]
    for prev, t in zip(ref.steps, slices):
        assert_state(h.delta_at(t), ref.states[t] - ref.states[prev], f"delta_at({t})")
    for k in sorted({1, 2, len(slices) + 1}):
        got = h.recent_deltas(k)
        want = slices[-k:]
        assert [t for t, _ in got] == want
        for t, d in got:
            prev = ref.steps[ref.steps.index(t) - 1]
            assert_state(d, ref.states[t] - ref.states[prev], f"recent_deltas({k}) at {t}")
    rows, cols = ref.shape
    for r in range(rows):
        for c in range(cols):
            got = h.weight_history(r, c)
            want = ref.weight_history(r, c)
            assert [t for t, _ in got] == [t for t, _ in want], (r, c)
            assert all(isinstance(v, float) for _, v in got)
            if want:
                np.testing.assert_array_max_ulp(np.array([v for _, v in got], np.float32),
                                                np.array([v for _, v in want], np.float32),
                                                maxulp=2)


# ---------------------------------------------------------------------------- strategies
# Magnitudes within [2^-10, 2^7] keep every float64 sum of float32 values exact, so the
# reference does not depend on summation order; 0 is allowed (resets to 0 switch off).
VALUES = st.one_of(
    st.just(0.0),
    st.builds(lambda m, s: s * m, st.floats(2.0 ** -10, 2.0 ** 7, width=32),
              st.sampled_from([1.0, -1.0])),
)


@st.composite
def scenario(draw, *, tiers: bool = False):
    # Tiered histories need long runs with repeated weights to reach the coarse tiers.
    rows = draw(st.integers(1, 2 if tiers else 5))
    cols = draw(st.integers(1, 3 if tiers else 6))
    coord = st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1))
    entry = st.tuples(coord, VALUES, st.booleans())
    delta = st.tuples(st.just("delta"), st.integers(1, 3), st.lists(entry, max_size=8),
                      st.sampled_from(["none", "array", "all", "scalar_false"]))
    acc = st.tuples(st.just("acc"), st.one_of(st.none(), st.integers(1, 3)),
                    st.lists(st.lists(st.tuples(coord, VALUES), max_size=5), max_size=3))
    empty = st.tuples(st.just("empty_commit"), st.integers(1, 2))
    rollback = st.tuples(st.just("rollback"), st.floats(0, 1))
    prune = st.tuples(st.just("prune"), st.integers(0, 4))
    files = st.sampled_from([("save",), ("reload",)])
    if tiers:
        op = st.one_of(delta, delta, delta, acc, empty, rollback, files)
    else:
        op = st.one_of(delta, delta, delta, acc, empty, rollback, prune, files)
    return {
        "rows": rows, "cols": cols,
        "compact_every": draw(st.integers(1, 5)),
        "max_history": None if tiers else draw(st.one_of(st.none(), st.integers(1, 6))),
        "base": draw(st.lists(st.tuples(coord, VALUES), max_size=8)),
        "ops": draw(st.lists(op, min_size=8 if tiers else 0, max_size=30 if tiers else 14)),
        "more_ops": draw(st.lists(st.one_of(delta, acc, empty, rollback,
                                            prune if not tiers else delta),
                                  min_size=1, max_size=5)),
        "save_first": draw(st.booleans()),
    }


class Runner:
    """Applies scenario operations to the history and to the reference side by side."""

    def __init__(self, sc, path: str, ref: Ref, h: TemporalAdapter) -> None:
        self.sc, self.path, self.ref, self.h = sc, path, ref, h
        self.saved = False

    def load(self) -> TemporalAdapter:
        with warnings.catch_warnings():
            warnings.simplefilter("error", HistoryRecoveryWarning)
            return TemporalAdapter.load(self.path, sync=False)

    def apply(self, op) -> None:
        h, ref = self.h, self.ref
        kind = op[0]
        if kind == "delta":
            _, gap, entries, mode = op
            t = ref.latest + gap
            rows = [e[0][0] for e in entries]
            cols = [e[0][1] for e in entries]
            deltas = [e[1] for e in entries]
            if mode == "none":
                resets = [False] * len(entries)
                got = h.store_delta(t, rows, cols, deltas)
            elif mode == "array":
                resets = [e[2] for e in entries]
                got = h.store_delta(t, np.array(rows, np.int64), np.array(cols, np.int32),
                                    np.array(deltas, np.float64),
                                    reset=np.array(resets, bool))
            elif mode == "all":
                resets = [True] * len(entries)
                got = h.store_delta(t, rows, cols, deltas, reset=np.True_)
            else:
                resets = [False] * len(entries)
                got = h.store_delta(t, rows, cols, deltas, reset=np.asarray(False))
            assert got == t
            ref.append(t, Ref.merge(rows, cols, deltas, resets))
        elif kind == "acc":
            _, gap, calls = op
            for call in calls:
                rows = [e[0][0] for e in call]
                cols = [e[0][1] for e in call]
                grads = [e[1] for e in call]
                h.accumulate(rows, cols, grads)
                ref.accumulate(rows, cols, grads)
            t = None if gap is None else ref.latest + gap
            assert h.commit(t) == ref.commit(t)
        elif kind == "empty_commit":
            t = ref.latest + op[1]
            assert h.commit(t) == t
            ref.append(t, {})
        elif kind == "rollback":
            t = ref.base_step + int(round(op[1] * (ref.latest - ref.base_step)))
            assert h.rollback(t) == ref.rollback(t)
        elif kind == "prune":
            assert h.prune_history(op[1]) == ref.prune(op[1])
        elif kind == "save":
            h.save(self.path, sync=False)
            self.saved = True
        elif kind == "reload":
            if self.saved:
                h.close()
                self.h = self.load()
        else:  # pragma: no cover
            raise AssertionError(kind)


def build(sc, path: str, *, tiers=None) -> Runner:
    h = TemporalAdapter(sc["rows"], sc["cols"], compact_every=sc["compact_every"],
                        max_history=sc["max_history"], tiers=tiers)
    ref = Ref(sc["rows"], sc["cols"], sc["max_history"])
    if sc["base"]:
        rows = [b[0][0] for b in sc["base"]]
        cols = [b[0][1] for b in sc["base"]]
        vals = [b[1] for b in sc["base"]]
        h.store_base(rows=rows, cols=cols, values=vals)
        ref.store_base(rows, cols, vals)
    return Runner(sc, path, ref, h)


# ---------------------------------------------------------------------------- tests
@SETTINGS
@given(sc=scenario())
def test_random_histories_match_dense_reference(sc):
    with tempfile.TemporaryDirectory(dir=TMP) as d:
        run = build(sc, os.path.join(d, "h.hvz"))
        if sc["save_first"]:
            run.apply(("save",))
        check_all(run.h, run.ref)
        for op in sc["ops"]:
            run.apply(op)
            check_states(run.h, run.ref)
        check_all(run.h, run.ref)

        # Every record appended since the last save replays to the same history ...
        if run.saved:
            run.h.close()
            run.h = run.load()
            check_all(run.h, run.ref)
        # ... the whole history survives save + load ...
        run.h.save(run.path, sync=False)
        run.saved = True
        run.h.close()
        run.h = run.load()
        check_all(run.h, run.ref)
        # ... and so do later commits appended to the loaded file.
        for op in sc["more_ops"]:
            run.apply(op)
        check_all(run.h, run.ref)
        run.h.close()
        run.h = run.load()
        check_all(run.h, run.ref)
        run.h.close()


def check_tiered(h: TemporalAdapter, true_states: dict[int, np.ndarray]) -> None:
    """With tiers a query answers for resolve(t), a stored step <= t; the answer must be the
    true state at that step (every commit up to it applied)."""
    steps = h.steps
    assert steps == sorted(steps)
    assert h.latest == max(true_states)
    for t in range(h.base_step, h.latest + 1):
        s = h.resolve(t)
        assert s in steps and s <= t
        assert s == max(x for x in steps if x <= t)
        adapter, s2 = h.weights_at_time(t, return_step=True)
        assert s2 == s
        truth = true_states[max(x for x in true_states if x <= s)]
        assert_state(adapter, truth, f"weights_at_time({t}) answering for {s}")


def true_states_of(ref: Ref, history: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Every original commit still live in the reference (after rollbacks)."""
    return {s: history[s] for s in history if s <= ref.latest}


def _tiny(ce: int, ops: list) -> dict:
    return {"rows": 1, "cols": 1, "compact_every": ce, "max_history": None, "base": [],
            "ops": ops, "more_ops": [], "save_first": False}


ONE = [((0, 0), 1.0, False)]


@TIER_SETTINGS
@given(sc=scenario(tiers=True))
# Steps 4, 5, 8: at the compaction after 8, step 4 (age 4) is merged into 6 while step 5
# (age 3) stays exact, so the state at 5 must still include step 4.
@example(sc=_tiny(1, [("delta", 4, ONE, "none"), ("empty_commit", 1), ("empty_commit", 3)]))
def test_tiered_queries_answer_for_a_stored_step_with_its_true_state(sc):
    with tempfile.TemporaryDirectory(dir=TMP) as d:
        run = build(sc, os.path.join(d, "h.hvz"), tiers=TIERS)
        # The reference sees every original commit; the history merges old ones, so only
        # the tier-aware invariant is checked, not the step list.
        history = {0: run.ref.states[0].copy()}
        for op in sc["ops"]:
            if op[0] == "rollback":
                t = run.h.base_step + int(round(op[1] * (run.h.latest - run.h.base_step)))
                expected = run.h.resolve(t)
                step = run.h.rollback(t)
                assert step == expected <= t
                assert run.h.latest == step
                history = {s: v for s, v in history.items() if s <= step}
                history[step] = history[max(history)]
                run.ref.steps = sorted(history)
                run.ref.states = dict(history)
                run.ref.entries = {s: {} for s in run.ref.steps[1:]}
            else:
                run.apply(op)
                history[run.ref.latest] = run.ref.states[run.ref.latest]
            check_tiered(run.h, history)


@TIER_SETTINGS
@given(sc=scenario(tiers=True))
@example(sc=_tiny(5, [("delta", 1, ONE, "none")] * 6))
def test_tiered_history_round_trips_through_its_file(sc):
    with tempfile.TemporaryDirectory(dir=TMP) as d:
        run = build(sc, os.path.join(d, "h.hvz"), tiers=TIERS)
        for op in sc["ops"]:
            if op[0] in ("save", "reload", "rollback"):
                continue
            run.apply(op)
        h = run.h
        h.save(run.path, sync=False)
        loaded = run.load()
        assert loaded.steps == h.steps
        for t in range(h.base_step, h.latest + 1):
            a, s = h.weights_at_time(t, return_step=True)
            b, s2 = loaded.weights_at_time(t, return_step=True)
            assert s2 == s
            np.testing.assert_array_equal(b.to_dense(), a.to_dense())
        loaded.close()
        h.close()


@pytest.mark.parametrize("compact_every", [1, 2, 5])
def test_long_history_matches_reference(compact_every):
    """A longer seeded run than hypothesis explores, crossing many compactions."""
    rng = np.random.default_rng(1234 + compact_every)
    rows, cols = 7, 9
    h = TemporalAdapter(rows, cols, compact_every=compact_every)
    ref = Ref(rows, cols)
    for t in range(1, 80):
        n = int(rng.integers(0, 12))
        r = rng.integers(0, rows, n)
        c = rng.integers(0, cols, n)
        d = (rng.choice([-1, 1], n) * 2.0 ** rng.uniform(-10, 7, n)).astype(np.float32)
        reset = rng.random(n) < 0.15
        h.store_delta(t, r, c, d, reset=reset)
        ref.append(t, Ref.merge(r.tolist(), c.tolist(), d.tolist(), reset.tolist()))
    check_all(h, ref)


def test_tier_merge_keeps_the_float64_sum():
    """Merging steps 1 and 2 into the span ending at 3 must not round their sum to float32
    before the base is added: the state at 3 is float32(-1 + 1 + 2^-30) = 2^-30, active."""
    h = TemporalAdapter(1, 1, tiers=TIERS, compact_every=1)
    h.store_base(rows=[0], cols=[0], values=[-1.0])
    h.store_delta(1, [0], [0], [1.0])
    h.store_delta(2, [0], [0], [2.0 ** -30])
    h.commit(7)
    w, s = h.weights_at_time(3, return_step=True)
    assert s in (2, 3)
    assert w.get_weight(0, 0) == 2.0 ** -30
    assert w.active_count() == 1


@pytest.mark.parametrize("compact_every", [1, 2, 3, 4, 5])
def test_long_tiered_history_answers_with_true_states(compact_every):
    """A seeded tiered run long enough to reach every tier, with gaps between steps."""
    rng = np.random.default_rng(99 + compact_every)
    rows, cols = 2, 3
    h = TemporalAdapter(rows, cols, tiers=TIERS, compact_every=compact_every)
    ref = Ref(rows, cols)
    for _ in range(60):
        t = ref.latest + int(rng.integers(1, 4))
        n = int(rng.integers(1, 4))
        r = rng.integers(0, rows, n)
        c = rng.integers(0, cols, n)
        d = rng.integers(1, 9, n).astype(np.float32)
        reset = rng.random(n) < 0.2
        h.store_delta(t, r, c, d, reset=reset)
        ref.append(t, Ref.merge(r.tolist(), c.tolist(), d.tolist(), reset.tolist()))
        check_tiered(h, ref.states)
