"""Hand-made examples of every TemporalAdapter and DeltaDetector method."""

from __future__ import annotations

import doctest
import os
import time
import tracemalloc
from itertools import combinations

import numpy as np
import pytest

import hyprvdb.history._detector
import hyprvdb.history._group
import hyprvdb.history._temporal
from hyprvdb import CorrelatedPair, DeltaDetector, SparseAdapter, TemporalAdapter

TINY = 2.0 ** -30  # exact in float32, lost when added to 1.0 in float32


def dense(adapter: SparseAdapter) -> np.ndarray:
    assert adapter.to_dense().dtype == np.float32
    return adapter.to_dense()


def active(adapter: SparseAdapter) -> set[tuple[int, int]]:
    r, c, _ = adapter.active_weights()
    return set(zip(r.tolist(), c.tolist()))


def three_steps() -> TemporalAdapter:
    """base (0,0)=1; step 1: (0,0)+=2; step 2: (0,0) reset to 10, (1,1)+=1; step 4: (1,1)+=-1."""
    h = TemporalAdapter(2, 3)
    h.store_base(rows=[0], cols=[0], values=[1.0])
    h.store_delta(1, [0], [0], [2.0])
    h.store_delta(2, [0, 1], [0, 1], [10.0, 1.0], reset=np.array([True, False]))
    h.store_delta(4, [1], [1], [-1.0])
    return h


# ---------------------------------------------------------------------------- description
def test_new_history_is_empty():
    h = TemporalAdapter(3, 4)
    assert h.shape == (3, 4)
    assert h.steps == [0] and h.latest == 0 and h.base_step == 0
    assert h.path is None
    assert h.change_count() == 0 and h.history_bytes() == 0
    cur = h.current()
    assert isinstance(cur, SparseAdapter) and cur.shape == (3, 4) and cur.active_count() == 0
    assert repr(h).startswith("TemporalAdapter(3, 4, steps=0..0 (0 slices), changes=0")


def test_steps_is_a_copy():
    h = three_steps()
    h.steps.append(99)
    assert h.steps == [0, 1, 2, 4]


def test_repr_names_steps_and_changes():
    assert repr(three_steps()) == "TemporalAdapter(2, 3, steps=0..4 (3 slices), changes=4)"


# ---------------------------------------------------------------------------- store_base
def test_store_base_from_adapter():
    a = SparseAdapter(3, 4)
    a.batch_update([0, 2], [1, 3], [1.5, -2.0])
    h = TemporalAdapter(3, 4)
    h.store_base(a)
    np.testing.assert_array_equal(dense(h.weights_at_time(0)), a.to_dense())
    assert h.weight_history(0, 1) == [(0, 1.5)]
    assert h.change_count() == 0  # the base is not a change


def test_store_base_from_arrays_sums_repeats_and_drops_zeros():
    h = TemporalAdapter(2, 2)
    h.store_base(rows=[0, 0, 1], cols=[0, 0, 1], values=[1.0, 2.0, 0.0])
    w = h.weights_at_time(0)
    assert active(w) == {(0, 0)}
    assert w.get_weight(0, 0) == 3.0
    assert h.weight_history(1, 1) == []


def test_store_base_again_replaces_the_base():
    h = TemporalAdapter(2, 2)
    h.store_base(rows=[0], cols=[0], values=[1.0])
    h.store_base(rows=[1], cols=[1], values=[2.0])
    assert active(h.current()) == {(1, 1)}


# ---------------------------------------------------------------------------- store_delta
def test_store_delta_returns_t_and_allows_gaps():
    h = TemporalAdapter(2, 2)
    assert h.store_delta(1, [0], [0], [1.0]) == 1
    assert h.store_delta(5, [0], [0], [1.0]) == 5
    assert h.store_delta(np.int64(6), [0], [0], [1.0]) == 6
    assert h.steps == [0, 1, 5, 6] and h.latest == 6
    assert h.current().get_weight(0, 0) == 3.0


def test_store_delta_from_mapping():
    h = TemporalAdapter(3, 4)
    h.store_delta(1, {(0, 1): 0.5, (2, 3): -1.0})
    expected = np.zeros((3, 4), np.float32)
    expected[0, 1], expected[2, 3] = 0.5, -1.0
    np.testing.assert_array_equal(dense(h.current()), expected)
    h.store_delta(2, {})
    assert h.steps == [0, 1, 2]
    np.testing.assert_array_equal(dense(h.current()), expected)


def test_store_delta_repeats_sum():
    h = TemporalAdapter(2, 2)
    h.store_delta(1, [0, 0, 1, 0], [0, 0, 1, 0], [1.0, 2.0, 5.0, 0.25])
    assert h.current().get_weight(0, 0) == 3.25
    assert h.change_count() == 2  # one stored change per weight per step
    assert h.weight_history(0, 0) == [(1, 3.25)]


def test_store_delta_repeats_merge_in_float64_then_round_once():
    h = TemporalAdapter(1, 1)
    h.store_delta(1, [0, 0, 0], [0, 0, 0], [1.0, TINY, -1.0])
    # float32 left to right would give 0; the merged change is 2^-30 exactly.
    assert h.current().get_weight(0, 0) == TINY


def test_reset_sets_the_value_and_reset_to_zero_switches_off():
    h = three_steps()
    assert h.weights_at_time(1).get_weight(0, 0) == 3.0
    assert h.weights_at_time(2).get_weight(0, 0) == 10.0
    h.store_delta(5, [0], [0], [0.0], reset=np.array([True]))
    assert (0, 0) not in active(h.current())
    h.store_delta(6, [0], [0], [4.0])
    assert h.current().get_weight(0, 0) == 4.0  # grows from 0 after the switch-off


def test_scalar_reset_applies_to_every_entry():
    h = TemporalAdapter(2, 2)
    h.store_base(rows=[0, 1], cols=[0, 1], values=[5.0, 6.0])
    h.store_delta(1, [0, 1], [0, 1], [1.0, 0.0], reset=True)
    w = h.current()
    assert active(w) == {(0, 0)} and w.get_weight(0, 0) == 1.0


def test_repeat_after_reset_builds_on_the_reset():
    h = TemporalAdapter(1, 2)
    h.store_base(rows=[0], cols=[0], values=[100.0])
    h.store_delta(1, [0, 0, 0, 0], [0, 0, 0, 1], [5.0, 1.0, 2.0, 7.0],
                  reset=np.array([False, True, False, False]))
    np.testing.assert_array_equal(dense(h.current()), [[3.0, 7.0]])


def test_states_are_float64_sums_rounded_once():
    h = TemporalAdapter(1, 1)
    h.store_base(rows=[0], cols=[0], values=[1.0])
    h.store_delta(1, [0], [0], [TINY])
    h.store_delta(2, [0], [0], [-1.0])
    assert h.weights_at_time(1).get_weight(0, 0) == 1.0
    assert h.current().get_weight(0, 0) == TINY
    assert h.weight_history(0, 0) == [(0, 1.0), (1, 1.0), (2, TINY)]


# ---------------------------------------------------------------------------- accumulate
def test_docstring_example():
    h = TemporalAdapter(4, 4)
    h.store_base(rows=[0, 1], cols=[0, 1], values=[1.0, 2.0])
    assert h.store_delta(1, [0, 2], [0, 2], [0.5, 3.0]) == 1
    h.accumulate([2], [2], [1.0])
    h.accumulate([2], [2], [1.0])
    assert h.commit() == 2
    np.testing.assert_array_equal(h.weights_at_time(1).get_weights([0, 1, 2], [0, 1, 2]),
                                  np.array([1.5, 2.0, 3.0], np.float32))
    assert h.weight_history(2, 2) == [(1, 3.0), (2, 5.0)]


def test_accumulate_sums_in_a_float32_buffer_until_commit():
    h = TemporalAdapter(2, 2)
    h.accumulate([0, 0], [0, 0], [1.0, 2.0 ** -25])
    h.accumulate([1], [1], [2.0])
    assert h.steps == [0]  # nothing committed yet
    assert h.current().active_count() == 0
    assert h.commit(7) == 7
    w = h.current()
    assert w.get_weight(0, 0) == 1.0  # 1 + 2^-25 rounds to 1 in float32
    assert w.get_weight(1, 1) == 2.0
    assert h.steps == [0, 7]


def test_commit_without_accumulate_stores_an_empty_step():
    h = three_steps()
    before = dense(h.current())
    assert h.commit() == 5
    assert h.steps == [0, 1, 2, 4, 5]
    assert h.change_count() == 4
    np.testing.assert_array_equal(dense(h.current()), before)
    assert h.delta_at(5).active_count() == 0


def test_discard_open_drops_the_open_step():
    h = TemporalAdapter(2, 2)
    h.accumulate([0], [0], [1.0])
    h.discard_open()
    assert h.commit() == 1
    assert h.current().active_count() == 0
    assert h.change_count() == 0


def test_committed_zero_sum_is_stored_as_a_change():
    h = TemporalAdapter(1, 2)
    h.store_base(rows=[0], cols=[0], values=[2.0])
    h.accumulate([0, 0], [0, 0], [1.0, -1.0])
    h.commit()
    assert h.current().get_weight(0, 0) == 2.0
    assert h.weight_history(0, 0) == [(0, 2.0), (1, 2.0)]


# ---------------------------------------------------------------------------- queries
def test_weights_at_time_returns_new_adapters():
    h = three_steps()
    w = h.weights_at_time(1)
    w.set_weight(1, 2, 9.0)
    assert (1, 2) not in active(h.weights_at_time(1))
    expected = {0: [[1, 0, 0], [0, 0, 0]], 1: [[3, 0, 0], [0, 0, 0]],
                2: [[10, 0, 0], [0, 1, 0]], 4: [[10, 0, 0], [0, 0, 0]]}
    for t, e in expected.items():
        np.testing.assert_array_equal(dense(h.weights_at_time(t)), np.array(e, np.float32))
    assert active(h.weights_at_time(4)) == {(0, 0)}  # (1,1) went back to 0: inactive


def test_resolve_and_return_step_between_stored_steps():
    h = three_steps()
    assert [h.resolve(t) for t in range(5)] == [0, 1, 2, 2, 4]
    w, s = h.weights_at_time(3, return_step=True)
    assert s == 2
    np.testing.assert_array_equal(dense(w), dense(h.weights_at_time(2)))
    w, s = h.weights_at_time(4, return_step=True)
    assert s == 4


def test_current_is_the_latest_step():
    h = three_steps()
    np.testing.assert_array_equal(dense(h.current()), dense(h.weights_at_time(4)))


def test_window_delta():
    h = three_steps()
    w = h.window_delta(0, 2)
    assert active(w) == {(0, 0), (1, 1)}
    assert w.get_weight(0, 0) == 9.0 and w.get_weight(1, 1) == 1.0
    assert h.window_delta(2, 2).active_count() == 0
    # (1,1) went up and back down: no net change, so not in the window delta.
    w = h.window_delta(1, 4)
    assert active(w) == {(0, 0)} and w.get_weight(0, 0) == 7.0
    # Steps between stored ones resolve.
    np.testing.assert_array_equal(dense(h.window_delta(1, 3)), dense(h.window_delta(1, 2)))


def test_delta_at_and_recent_deltas():
    h = three_steps()
    d = h.delta_at(2)
    assert d.get_weight(0, 0) == 7.0 and d.get_weight(1, 1) == 1.0
    assert h.delta_at(1).get_weight(0, 0) == 2.0
    assert active(h.delta_at(4)) == {(1, 1)} and h.delta_at(4).get_weight(1, 1) == -1.0
    recent = h.recent_deltas(2)
    assert [t for t, _ in recent] == [2, 4]
    for t, dd in recent:
        np.testing.assert_array_equal(dense(dd), dense(h.delta_at(t)))
    assert [t for t, _ in h.recent_deltas(10)] == [1, 2, 4]


def test_weight_history():
    h = three_steps()
    assert h.weight_history(0, 0) == [(0, 1.0), (1, 3.0), (2, 10.0)]
    assert h.weight_history(1, 1) == [(2, 1.0), (4, 0.0)]
    assert h.weight_history(0, 2) == []
    assert h.weight_history(np.int32(0), np.int64(0)) == h.weight_history(0, 0)
    for _, v in h.weight_history(0, 0):
        assert type(v) is float


# ---------------------------------------------------------------------------- surgery
def test_rollback_discards_later_steps():
    h = three_steps()
    assert h.rollback(3) == 2  # answers for the stored step at or before 3
    assert h.steps == [0, 1, 2] and h.latest == 2
    np.testing.assert_array_equal(dense(h.current()), [[10, 0, 0], [0, 1, 0]])
    assert h.weight_history(1, 1) == [(2, 1.0)]
    # Later steps can be written again, differently.
    h.store_delta(3, [1], [2], [5.0])
    assert h.steps == [0, 1, 2, 3]
    assert active(h.current()) == {(0, 0), (1, 1), (1, 2)}


def test_rollback_to_latest_and_to_base():
    h = three_steps()
    assert h.rollback(4) == 4 and h.steps == [0, 1, 2, 4]
    assert h.rollback(0) == 0 and h.steps == [0]
    assert h.change_count() == 0
    np.testing.assert_array_equal(dense(h.current()), [[1, 0, 0], [0, 0, 0]])


def test_prune_history_folds_exactly():
    h = TemporalAdapter(1, 2)
    h.store_base(rows=[0], cols=[0], values=[1.0])
    h.store_delta(1, [0], [0], [TINY])
    h.store_delta(2, [0], [1], [3.0])
    h.store_delta(3, [0], [0], [-1.0])
    assert h.prune_history(1) == 2
    assert h.steps == [2, 3] and h.base_step == 2
    # The folded base holds 1 + 2^-30 in float64, so step 3 still lands on 2^-30.
    np.testing.assert_array_equal(dense(h.current()), np.array([[TINY, 3.0]], np.float32))
    np.testing.assert_array_equal(dense(h.weights_at_time(2)), [[1.0, 3.0]])
    assert h.weight_history(0, 0) == [(2, 1.0), (3, TINY)]
    assert h.change_count() == 1
    with pytest.raises(ValueError, match="t = 1"):
        h.weights_at_time(1)


def test_prune_history_keeping_more_than_stored_changes_nothing():
    h = three_steps()
    assert h.prune_history(3) == 0
    assert h.prune_history(10) == 0
    assert h.steps == [0, 1, 2, 4]


def test_prune_history_to_nothing():
    h = three_steps()
    before = dense(h.current())
    assert h.prune_history(0) == 4
    assert h.steps == [4] and h.change_count() == 0 and h.history_bytes() == 0
    np.testing.assert_array_equal(dense(h.current()), before)
    assert h.weight_history(0, 0) == [(4, 10.0)]
    assert h.weight_history(1, 1) == []
    h.store_delta(5, [1], [1], [2.0])
    assert h.weights_at_time(5).get_weight(1, 1) == 2.0


def test_max_history_is_a_circular_buffer():
    h = TemporalAdapter(2, 2, max_history=3)
    for t in range(1, 6):
        h.store_delta(t, [0], [0], [float(t)])
        assert len(h.steps) - 1 == min(t, 3)
    assert h.steps == [2, 3, 4, 5] and h.base_step == 2
    assert h.weights_at_time(2).get_weight(0, 0) == 3.0
    assert h.current().get_weight(0, 0) == 15.0
    assert h.weight_history(0, 0) == [(2, 3.0), (3, 6.0), (4, 10.0), (5, 15.0)]
    with pytest.raises(ValueError, match="t = 1 is no longer stored"):
        h.weights_at_time(1)


def test_tiers_merge_old_steps():
    h = TemporalAdapter(1, 1, tiers=[(2, 1), (None, 2)], compact_every=1)
    for t in range(1, 7):
        h.store_delta(t, [0], [0], [1.0])
    # Steps older than 2 are kept at resolution 2, stamped with the end of their span.
    assert h.steps == [0, 2, 4, 5, 6]
    for t, (step, value) in {1: (0, 0.0), 2: (2, 2.0), 3: (2, 2.0), 4: (4, 4.0),
                             5: (5, 5.0), 6: (6, 6.0)}.items():
        w, s = h.weights_at_time(t, return_step=True)
        assert (s, w.get_weight(0, 0)) == (step, value), t
    assert h.weight_history(0, 0) == [(2, 2.0), (4, 4.0), (5, 5.0), (6, 6.0)]
    assert h.change_count() == 4



def test_rollback_to_a_tier_stamp_survives_a_reload(tmp_path):
    # Merged steps are stamped with the end of their span, a step that was never committed
    # (here 4): rolling back to it is recorded, and the file must load to the same history.
    path = tmp_path / "h.hvz"
    h = TemporalAdapter(1, 1, tiers=[(2, 1), (None, 2)], compact_every=1)
    h.save(path, sync=False)
    for t in (1, 3, 5, 7, 9, 11):
        h.store_delta(t, [0], [0], [1.0])
    assert h.steps == [0, 2, 4, 6, 8, 9, 11]
    assert h.rollback(5) == 4
    h.close()
    back = TemporalAdapter.load(path)
    assert (back.latest, back.current().get_weight(0, 0)) == (4, 2.0)
    back.store_delta(6, [0], [0], [1.0])
    back.close()
    assert TemporalAdapter.load(path).current().get_weight(0, 0) == 3.0

# ---------------------------------------------------------------------------- correlations
def brute_force_pairs(changed: dict[int, set[tuple[int, int]]], steps: list[int], *,
                      min_score: float, min_together: int):
    """(a, b, score, together) of every pair, from per-step sets of changed weights."""
    count: dict[tuple[int, int], int] = {}
    for s in steps:
        for w in changed[s]:
            count[w] = count.get(w, 0) + 1
    often = sorted(w for w, n in count.items() if n >= min_together)
    out = set()
    for a, b in combinations(often, 2):
        together = sum(1 for s in steps if a in changed[s] and b in changed[s])
        if together < min_together:
            continue
        score = together / (count[a] + count[b] - together)
        if score >= min_score:
            out.add((a, b, score, together))
    return out


def planted_history(rows: int, cols: int, scale: int = 1, seed: int = 5):
    """24 steps. The window of the last 16 (steps 9..24) holds two planted pairs, each
    changing together in 12 steps (9..20 and 13..24) and never apart; before the window one
    weight of each pair also changed alone. 40 noise weights change at random."""
    rng = np.random.default_rng(seed)
    h = TemporalAdapter(rows, cols)
    pairs = [((1, 2), (7, 3)), ((4, 4), (0, 9))]
    spans = [range(9, 21), range(13, 25)]
    noise = {(int(r), int(c)) for r, c in zip(rng.integers(0, 10, 60), rng.integers(10, 20, 60))}
    noise = sorted(noise)[:40]
    changed: dict[int, set[tuple[int, int]]] = {}
    for t in range(1, 25):
        ws = {w for w in noise if rng.random() < 0.15}
        for (a, b), span in zip(pairs, spans):
            if t in span:
                ws |= {a, b}
        if t < 9:
            ws |= {pairs[0][0], pairs[1][1]}
        changed[t] = ws
        lst = sorted(ws)
        r = np.array([w[0] for w in lst], np.int64) * scale
        c = np.array([w[1] for w in lst], np.int64) * scale
        h.store_delta(t, r, c, rng.normal(size=len(lst)).astype(np.float32) + 2.0)
    return h, pairs, changed


def test_correlated_changes_finds_planted_pairs():
    h, pairs, changed = planted_history(20, 20)
    got = h.correlated_changes(window=16, min_score=0.9, min_together=3)
    assert all(isinstance(p, CorrelatedPair) for p in got)
    found = {(p.a, p.b): (p.score, p.together) for p in got}
    for a, b in pairs:
        key = (min(a, b), max(a, b))
        assert found.pop(key) == (1.0, 12)
    assert found == {}  # no noise pair is that tightly correlated


def test_correlated_changes_matches_brute_force():
    h, _, changed = planted_history(20, 20)
    for t, window, min_score, min_together in [(24, 16, 0.5, 2), (24, 8, 0.3, 2),
                                               (20, 24, 0.0, 3), (12, 4, 0.5, 1)]:
        got = h.correlated_changes(t, window=window, min_score=min_score,
                                   min_together=min_together, max_pairs=None)
        steps = [s for s in range(1, t + 1)][-window:]
        want = brute_force_pairs(changed, steps, min_score=min_score,
                                 min_together=min_together)
        assert {(p.a, p.b, p.score, p.together) for p in got} == want
        keys = [(-p.score, -p.together) for p in got]
        assert keys == sorted(keys)  # by score, then by shared steps
        assert all(p.a < p.b for p in got)


def test_correlated_changes_max_pairs_and_empty():
    h, _, _ = planted_history(20, 20)
    all_pairs = h.correlated_changes(min_score=0.0, max_pairs=None)
    assert len(all_pairs) > 5
    assert h.correlated_changes(min_score=0.0, max_pairs=5) == all_pairs[:5]
    assert TemporalAdapter(3, 3).correlated_changes() == []
    assert h.correlated_changes(0) == []  # no slices up to the base


def test_correlated_changes_cost_does_not_grow_with_the_matrix():
    """Time and memory follow the changes in the window, never rows x cols: the same
    history on a 200000 x 200000 matrix (any dense structure would need tens of GB)."""
    results = []
    for n, scale in ((2000, 100), (200_000, 10_000)):
        h, pairs, _ = planted_history(n, n, scale=scale)
        h.correlated_changes(window=16)  # warm-up
        tracemalloc.start()
        t0 = time.perf_counter()
        got = h.correlated_changes(window=16, min_score=0.9, min_together=3)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 1.0
        assert peak < 2_000_000
        results.append({((p.a[0] // scale, p.a[1] // scale), (p.b[0] // scale,
                                                              p.b[1] // scale), p.score)
                        for p in got})
    assert results[0] == results[1]
    assert len(results[0]) == 2


def test_correlated_changes_with_many_changes_per_step_stays_fast():
    rng = np.random.default_rng(0)
    n = 2000
    h = TemporalAdapter(n, n)
    a, b = (5, 7), (1500, 1999)
    for t in range(1, 65):
        r = rng.integers(0, n, 400)
        c = rng.integers(0, n, 400)
        hot = rng.choice(200, 50, replace=False)  # 200 weights that often change
        r = np.concatenate([r, hot, [a[0], b[0]]])
        c = np.concatenate([c, hot * 3, [a[1], b[1]]])
        h.store_delta(t, r, c, rng.normal(size=len(r)).astype(np.float32))
    tracemalloc.start()
    t0 = time.perf_counter()
    got = h.correlated_changes(window=16, min_score=0.9)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert got[0] == CorrelatedPair(a, b, 1.0, 16)
    assert elapsed < 2.0
    assert peak < 16_000_000  # a dense float64 rows x cols array alone would be 32 MB


# ---------------------------------------------------------------------------- memory
def test_memory_accounting():
    h = TemporalAdapter(100, 100, compact_every=10)
    assert h.change_count() == 0 and h.history_bytes() == 0
    empty = h.memory_usage()
    assert empty >= 0
    h.store_base(rows=np.arange(50), cols=np.arange(50), values=np.ones(50))
    assert h.history_bytes() == 0
    assert h.memory_usage() >= empty + 50 * 12  # index and value per base weight
    sizes = []
    for t in range(1, 10):
        h.store_delta(t, np.arange(20), np.arange(20) * 2, np.full(20, 0.5))
        assert h.change_count() == 20 * t
        sizes.append(h.history_bytes())
        assert h.memory_usage() >= h.history_bytes()
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    tail_bytes = h.history_bytes()
    h.store_delta(10, np.arange(20), np.arange(20) * 2, np.full(20, 0.5))  # compacts
    assert h.change_count() == 200
    assert h.history_bytes() < tail_bytes  # Z-runs are narrower than the tail
    assert h.history_bytes() <= 8 * h.change_count()
    before = h.memory_usage()
    h.accumulate(np.arange(30), np.arange(30), np.ones(30))
    assert h.memory_usage() > before  # the open step is counted
    h.discard_open()
    assert h.memory_usage() == before
    h.prune_history(0)
    assert h.change_count() == 0 and h.history_bytes() == 0


def test_memory_does_not_grow_with_the_matrix():
    small = TemporalAdapter(10, 10)
    huge = TemporalAdapter(100_000, 100_000)
    for h, s in ((small, 1), (huge, 10_000)):
        for t in range(1, 6):
            h.store_delta(t, np.arange(5) * s, np.arange(5) * s, np.ones(5))
    assert huge.memory_usage() < 20_000
    assert huge.change_count() == small.change_count() == 25


# ---------------------------------------------------------------------------- files
def test_save_load_close_and_path(tmp_path):
    p = tmp_path / "h.hvz"
    h = three_steps()
    h.save(p)
    assert h.path == os.fspath(p)
    size = p.stat().st_size
    h.store_delta(6, [0], [2], [4.0])
    assert p.stat().st_size > size  # the commit was appended
    g = TemporalAdapter.load(p)
    assert g.path == os.fspath(p)
    assert g.shape == h.shape and g.name == h.name and g.steps == h.steps
    for t in h.steps:
        np.testing.assert_array_equal(dense(g.weights_at_time(t)), dense(h.weights_at_time(t)))
    h.close()
    assert h.path is None
    size = p.stat().st_size
    h.store_delta(7, [0], [2], [4.0])
    assert p.stat().st_size == size
    g.close()


def test_save_keeps_constructor_settings(tmp_path):
    h = TemporalAdapter(3, 5, max_history=4, compact_every=3, name="layer.7.q")
    h.store_delta(1, [0], [0], [1.0])
    h.save(tmp_path / "h.hvz")
    g = TemporalAdapter.load(tmp_path / "h.hvz")
    assert g.name == "layer.7.q" and g.shape == (3, 5)
    for t in range(2, 8):
        g.store_delta(t, [1], [1], [1.0])
    assert g.steps == [3, 4, 5, 6, 7]  # max_history 4 survived the round trip


# ---------------------------------------------------------------------------- detector
def test_delta_detector_docstring_example():
    det = DeltaDetector(2, 2, threshold=0.1)
    h = TemporalAdapter(2, 2)
    r, c, d, reset = det.update(np.array([[1.0, 0.0], [0.05, 0.0]]))
    assert h.store_delta(1, r, c, d, reset=reset) == 1
    assert (r.tolist(), c.tolist()) == ([0, 1], [0, 0])
    assert reset.tolist() == [True, True]  # both switched on from 0
    assert d.dtype == np.float32 and reset.dtype == bool
    np.testing.assert_array_equal(det.stored, dense(h.current()))


def drifting_states(rows: int, cols: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    true = np.where(rng.random((rows, cols)) < 0.3, rng.normal(size=(rows, cols)), 0.0)
    true = true.astype(np.float32)
    for _ in range(steps):
        true = true + (rng.normal(scale=0.02, size=true.shape) * (true != 0)).astype(np.float32)
        on = (rng.random(true.shape) < 0.03) & (true == 0)
        true[on] = rng.normal(size=int(on.sum())).astype(np.float32)
        off = rng.random(true.shape) < 0.03
        true[off] = 0.0
        tiny = (rng.random(true.shape) < 0.01) & (true == 0)  # switched on below threshold
        true[tiny] = np.float32(0.001)
        yield true.copy()


@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.05])
def test_delta_detector_history_tracks_truth_within_threshold(threshold):
    rows, cols = 24, 40
    det = DeltaDetector(rows, cols, threshold=threshold)
    h = TemporalAdapter(rows, cols, compact_every=5)
    truths = {}
    for t, true in enumerate(drifting_states(rows, cols, 60, seed=11), start=1):
        state = true if t % 2 else SparseAdapter.from_dense(true)
        r, c, d, reset = det.update(state)
        h.store_delta(t, r, c, d, reset=reset)
        truths[t] = true
    emitted = h.change_count()
    assert 0 < emitted
    for t, true in truths.items():
        w = h.weights_at_time(t)
        recon = dense(w)
        err = np.abs(true.astype(np.float64) - recon.astype(np.float64))
        assert err.max() <= threshold + 4 * np.finfo(np.float32).eps * np.abs(true).max(), t
        np.testing.assert_array_equal(recon != 0, true != 0)
        assert active(w) == set(zip(*np.nonzero(true)))
    np.testing.assert_array_max_ulp(det.stored, dense(h.current()), maxulp=2)
    if threshold > 0:
        assert emitted < sum(int((v != 0).sum()) for v in truths.values())


def test_delta_detector_sub_threshold_drift_does_not_accumulate():
    thr = 0.05
    det = DeltaDetector(3, 3, threshold=thr)
    h = TemporalAdapter(3, 3)
    true = np.zeros((3, 3), np.float32)
    true[1, 2] = 1.0
    true[0, 0] = -2.0
    r, c, d, reset = det.update(true)
    h.store_delta(1, r, c, d, reset=reset)
    for t in range(2, 12):
        true[1, 2] += np.float32(0.4 * thr)
        r, c, d, reset = det.update(true)
        h.store_delta(t, r, c, d, reset=reset)
        assert abs(float(true[1, 2]) - h.current().get_weight(1, 2)) <= thr
        assert h.current().get_weight(0, 0) == -2.0
    # Ten steps of 0.4 * threshold: every third one crossed the threshold and was stored.
    changes = h.weight_history(1, 2)
    assert [t for t, _ in changes] == [1, 4, 7, 10]
    assert h.weight_history(0, 0) == [(1, -2.0)]
    assert abs(float(true[1, 2]) - h.current().get_weight(1, 2)) <= thr


def test_delta_detector_switches_weights_on_and_off_with_resets():
    det = DeltaDetector(1, 3, threshold=1.0)
    r, c, d, reset = det.update(np.array([[0.5, 0.0, 3.0]], np.float32))
    assert (c.tolist(), d.tolist(), reset.tolist()) == ([0, 2], [0.5, 3.0], [True, True])
    r, c, d, reset = det.update(np.array([[0.0, 0.2, 3.5]], np.float32))
    assert (c.tolist(), reset.tolist()) == ([0, 1], [True, True])
    np.testing.assert_array_equal(d, np.array([0.0, 0.2], np.float32))
    r, c, d, reset = det.update(np.array([[0.0, 0.2, 5.0]], np.float32))
    assert (c.tolist(), d.tolist(), reset.tolist()) == ([2], [2.0], [False])
    np.testing.assert_array_equal(det.stored, np.array([[0.0, 0.2, 5.0]], np.float32))


def test_delta_detector_threshold_zero_emits_every_change():
    det = DeltaDetector(2, 2, threshold=0)
    det.update(np.ones((2, 2)))
    r, c, d, reset = det.update(np.array([[1.0, 1.0], [1.0, 1.0 + 2 ** -20]]))
    assert (r.tolist(), c.tolist(), reset.tolist()) == ([1], [1], [False])
    r, c, d, reset = det.update(np.array([[1.0, 1.0], [1.0, 1.0 + 2 ** -20]]))
    assert len(r) == 0


# ---------------------------------------------------------------------------- docs
@pytest.mark.parametrize("module", [hyprvdb.history._temporal, hyprvdb.history._group,
                                    hyprvdb.history._detector])
def test_module_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0

