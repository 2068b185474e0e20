"""Bad input to TemporalAdapter and DeltaDetector: refused with a message that names the
argument and shows the bad value, and nothing changes (in memory or in the history file)."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from hyprvdb import DeltaDetector, SparseAdapter, TemporalAdapter, TemporalGroup


def history(tmp_path) -> TemporalAdapter:
    """4 x 3, steps 0, 1, 2, 4, saved so every commit appends to a file."""
    h = TemporalAdapter(4, 3)
    h.store_base(rows=[0, 1], cols=[0, 1], values=[1.0, 2.0])
    h.store_delta(1, [0], [0], [2.0])
    h.store_delta(2, [2, 3], [1, 2], [1.0, -1.0])
    h.store_delta(4, [0], [2], [5.0])
    h.save(tmp_path / "h.hvz")
    return h


@pytest.fixture
def h(tmp_path):
    out = history(tmp_path)
    yield out
    out.close()


def snapshot(h: TemporalAdapter):
    return {
        "steps": h.steps,
        "change_count": h.change_count(),
        "states": {t: h.weights_at_time(t).to_dense() for t in h.steps},
        "file": os.path.getsize(h.path) if h.path else None,
    }


def assert_same(before, after) -> None:
    assert after["steps"] == before["steps"]
    assert after["change_count"] == before["change_count"]
    assert after["file"] == before["file"]
    for t, d in before["states"].items():
        np.testing.assert_array_equal(after["states"][t], d)


def refused(h, exc, match, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ``exc`` matching ``match`` and leaves ``h`` as it was."""
    before = snapshot(h)
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert_same(before, snapshot(h))
    return info


# ---------------------------------------------------------------------------- steps
@pytest.mark.parametrize("t", [4, 3, 0, -2])
def test_store_delta_steps_must_increase(h, t):
    refused(h, ValueError, rf"t = {t} is out of order.*newest committed step is 4",
            h.store_delta, t, [0], [0], [1.0])


@pytest.mark.parametrize("t", [4, 1])
def test_commit_step_must_increase_and_keeps_the_open_step(h, t):
    h.accumulate([1], [2], [3.0])
    refused(h, ValueError, rf"t = {t} is out of order", h.commit, t)
    assert h.commit() == 5
    assert h.current().get_weight(1, 2) == 3.0


@pytest.mark.parametrize("call", [
    lambda h, t: h.resolve(t),
    lambda h, t: h.weights_at_time(t),
    lambda h, t: h.window_delta(0, t),
    lambda h, t: h.window_delta(t, t),
    lambda h, t: h.delta_at(t),
    lambda h, t: h.rollback(t),
    lambda h, t: h.correlated_changes(t),
])
def test_unknown_step(h, call):
    refused(h, ValueError, r"t = 5 is unknown: the newest committed step is 4", call, h, 5)
    refused(h, ValueError, r"t = 1000000 is unknown", call, h, 10 ** 6)


@pytest.mark.parametrize("t", [-1, -100])
def test_negative_step(h, t):
    for fn in (h.resolve, h.weights_at_time, h.delta_at, h.rollback):
        refused(h, ValueError, rf"t = {t}\b", fn, t)


def test_folded_steps_are_gone(h):
    assert h.prune_history(1) == 2
    for fn in (h.resolve, h.weights_at_time, h.rollback):
        refused(h, ValueError, r"t = 1 is no longer stored: history up to step 2 was folded",
                fn, 1)
    refused(h, ValueError, r"t = 1 is no longer stored", h.window_delta, 1, 4)


@pytest.mark.parametrize("t, shown", [(1.5, "float 1.5"), (4.0, "float 4.0"), ("2", "str '2'"),
                                      (True, "bool True"), (None, "NoneType None"),
                                      (np.float64(2.0), "2.0")])
def test_steps_must_be_ints(h, t, shown):
    pat = rf"t must be an int, got .*{re.escape(shown)}"
    refused(h, TypeError, pat, h.weights_at_time, t)
    refused(h, TypeError, pat, h.resolve, t)
    refused(h, TypeError, pat, h.rollback, t)
    refused(h, TypeError, pat, h.delta_at, t)
    if t is not None:  # commit(None) means "the next step"
        refused(h, TypeError, pat, h.commit, t)


@pytest.mark.parametrize("t", [5.0, True, "5"])
def test_store_delta_step_must_be_an_int(h, t):
    refused(h, TypeError, r"t must be an int", h.store_delta, t, [0], [0], [1.0])


def test_steps_are_limited_to_int32(h):
    refused(h, ValueError, r"t = 2147483648 is too large \(steps are limited to 2147483647\)",
            h.store_delta, 2 ** 31, [0], [0], [1.0])
    h.accumulate([0], [0], [1.0])
    refused(h, ValueError, r"t = 2147483648 is too large", h.commit, 2 ** 31)
    assert h.commit(2 ** 31 - 1) == 2 ** 31 - 1
    assert h.weights_at_time(2 ** 31 - 1).get_weight(0, 0) == 4.0
    assert h.resolve(2 ** 31 - 2) == 4


def test_window_must_not_run_backwards(h):
    refused(h, ValueError, r"t0 = 4 must not be after t1 = 1", h.window_delta, 4, 1)


@pytest.mark.parametrize("t", [0, 3])
def test_delta_at_needs_a_stored_slice(h, t):
    refused(h, ValueError,
            rf"t = {t} is not a stored slice; stored steps after the base: \[1, 2, 4\]",
            h.delta_at, t)


# ---------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("args, match", [
    (([0, 1], [0], [1.0, 2.0]), r"rows and cols must have the same length, got 2 and 1"),
    (([0, 1], [0, 1], [1.0]), r"rows and deltas must have the same length, got 2 and 1"),
    (([0], [0, 1, 2], [1.0]), r"rows and cols must have the same length, got 1 and 3"),
])
def test_store_delta_lengths_must_match(h, args, match):
    refused(h, ValueError, match, h.store_delta, 5, *args)


def test_reset_length_and_dtype(h):
    refused(h, ValueError, r"rows and reset must have the same length, got 2 and 3",
            h.store_delta, 5, [0, 1], [0, 1], [1.0, 1.0], reset=np.array([True, False, True]))
    refused(h, TypeError, r"reset must be a bool array, got dtype int64",
            h.store_delta, 5, [0, 1], [0, 1], [1.0, 1.0], reset=np.array([1, 0]))


@pytest.mark.parametrize("rows, cols, match", [
    ([0, 4], [0, 0], r"rows\[1\] = 4 is out of range for 4 rows \(valid: 0\.\.3\)"),
    ([-1], [0], r"rows\[0\] = -1 is out of range for 4 rows"),
    ([0, 0, 0], [0, 1, 3], r"cols\[2\] = 3 is out of range for 3 columns \(valid: 0\.\.2\)"),
    ([1], [-5], r"cols\[0\] = -5 is out of range for 3 columns"),
])
def test_coordinates_must_be_in_range(h, rows, cols, match):
    vals = [1.0] * len(rows)
    refused(h, IndexError, match, h.store_delta, 5, rows, cols, vals)
    refused(h, IndexError, match, h.store_delta, 5, dict(zip(zip(rows, cols), vals)))
    g = TemporalAdapter(4, 3)
    with pytest.raises(IndexError, match=match):
        g.store_base(rows=rows, cols=cols, values=vals)
    assert g.current().active_count() == 0


def test_accumulate_coordinates_must_be_in_range(h):
    refused(h, IndexError, r"rows\[1\] = 9", h.accumulate, [0, 9], [0, 0], [1.0, 1.0])
    refused(h, IndexError, r"cols\[0\] = 3", h.accumulate, [0], [3], [1.0])
    assert h.commit() == 5
    assert h.delta_at(5).active_count() == 0  # nothing of the refused calls was kept


@pytest.mark.parametrize("rows, cols, match", [([0.0], [0], r"rows must hold integers"),
                                               ([0], [np.float32(1)], r"cols must hold integers"),
                                               ([True], [0], r"rows must hold integers"),
                                               (["a"], [0], r"rows must hold integers")])
def test_coordinates_must_be_integers(h, rows, cols, match):
    refused(h, TypeError, match, h.store_delta, 5, rows, cols, [1.0])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # see below
@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"),
                                        (1e39, "1e+39")])
def test_store_delta_refuses_non_finite(h, bad, shown):
    info = refused(h, ValueError, rf"deltas\[1\] = .*{re.escape(shown)}.* is not finite",
                   h.store_delta, 5, [0, 1], [0, 1], [1.0, bad])
    if bad == 1e39:
        assert "overflows float32" in str(info.value)


def test_overflow_is_refused_without_a_stray_numpy_warning(h):
    """The ValueError says the value overflows float32; numpy's cast warning must not leak
    out before it (under -W error it would replace the ValueError)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refused(h, ValueError, r"deltas\[0\] = .*1e\+39.* is not finite \(overflows float32\)",
                h.store_delta, 5, [0], [0], [1e39])


def test_store_base_refuses_non_finite():
    g = TemporalAdapter(2, 2)
    with pytest.raises(ValueError, match=r"values\[0\] = .*nan.* is not finite"):
        g.store_base(rows=[0], cols=[0], values=[np.nan])
    assert g.current().active_count() == 0


def test_non_finite_messages_name_only_options_that_exist(h):
    """A history is created with ``allow_nonfinite`` (store_delta and accumulate take none), so
    the message points there; DeltaDetector.update has no such option, so it suggests none."""
    with pytest.raises(ValueError) as info:
        h.store_delta(5, [0], [0], [np.nan])
    assert "create the history with allow_nonfinite=True" in str(info.value)
    with pytest.raises(ValueError) as info:
        h.accumulate([0], [0], [np.nan])
    assert "create the history with allow_nonfinite=True" in str(info.value)
    assert "adapter" not in str(info.value)
    det = DeltaDetector(2, 2, threshold=0.1)
    with pytest.raises(ValueError) as info:
        det.update(np.array([[0.0, np.inf], [0.0, 0.0]]))
    assert "allow_nonfinite" not in str(info.value)


def test_accumulate_messages_name_its_argument(h):
    """accumulate's values argument is ``grads``; messages must use that name."""
    refused(h, ValueError, r"grads\[0\] = .*nan", h.accumulate, [0], [0], [np.nan])
    refused(h, ValueError, r"rows and grads must have the same length, got 2 and 1",
            h.accumulate, [0, 1], [0, 1], [1.0])


def test_accumulate_refuses_non_finite_without_touching_the_open_step(h):
    h.accumulate([1], [1], [1.0])
    with pytest.raises(ValueError, match=r"\[1\] = .*inf"):
        h.accumulate([0, 0], [0, 1], [1.0, np.inf])
    h.commit()
    d = h.delta_at(5)
    assert d.active_count() == 1 and d.get_weight(1, 1) == 1.0


def test_mapping_form_errors(h):
    refused(h, TypeError, r"mapping keys must be \(row, col\) tuples, got 0",
            h.store_delta, 5, {0: 1.0})
    refused(h, TypeError, r"mapping keys must be \(row, col\) tuples, got \(1, 2, 3\)",
            h.store_delta, 5, {(1, 2, 3): 1.0})
    refused(h, TypeError, r"either a mapping", h.store_delta, 5, {(0, 0): 1.0}, [0], [1.0])
    refused(h, TypeError, r"store_delta needs rows, cols and deltas", h.store_delta, 5, [0])


# ---------------------------------------------------------------------------- base
def test_store_base_after_a_delta(h):
    refused(h, ValueError, r"store_base must come before the first delta.*steps up to 4",
            h.store_base, rows=[0], cols=[0], values=[1.0])


def test_store_base_after_deltas_were_folded(h):
    """Folding the deltas into the base does not make them un-happened: replacing the base
    would silently drop every folded step."""
    h.prune_history(0)
    refused(h, ValueError, r"store_base must come before the first delta",
            h.store_base, rows=[3], cols=[2], values=[9.0])


def test_store_base_arguments():
    g = TemporalAdapter(4, 3)
    with pytest.raises(ValueError, match=r"adapter has shape \(3, 3\), expected \(4, 3\)"):
        g.store_base(SparseAdapter(3, 3))
    with pytest.raises(TypeError, match=r"adapter must be a SparseAdapter, got ndarray"):
        g.store_base(np.zeros((4, 3)))
    with pytest.raises(TypeError, match=r"either an adapter or rows, cols and values"):
        g.store_base(SparseAdapter(4, 3), rows=[0], cols=[0], values=[1.0])
    with pytest.raises(TypeError, match=r"store_base needs an adapter"):
        g.store_base(rows=[0], cols=[0])
    with pytest.raises(ValueError, match=r"rows and values must have the same length"):
        g.store_base(rows=[0, 1], cols=[0, 1], values=[1.0])
    assert g.steps == [0] and g.current().active_count() == 0


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"rows": 0}, ValueError, r"rows must be positive, got 0"),
    ({"cols": -3}, ValueError, r"cols must be positive, got -3"),
    ({"rows": 2.0}, TypeError, r"rows must be an int, got float 2.0"),
    ({"max_history": 0}, ValueError, r"max_history must be positive, got 0"),
    ({"max_history": -1}, ValueError, r"max_history must be positive, got -1"),
    ({"max_history": 2.5}, TypeError, r"max_history must be an int, got float 2.5"),
    ({"compact_every": 0}, ValueError, r"compact_every must be positive, got 0"),
    ({"compact_every": True}, TypeError, r"compact_every must be an int, got bool True"),
    ({"name": ""}, ValueError, r"name must be a non-empty str, got ''"),
    ({"name": 3}, ValueError, r"name must be a non-empty str, got 3"),
])
def test_constructor_arguments(kwargs, exc, match):
    args = {"rows": 4, "cols": 3, **kwargs}
    with pytest.raises(exc, match=match):
        TemporalAdapter(args.pop("rows"), args.pop("cols"), **args)


@pytest.mark.parametrize("tiers, exc, match", [
    (5, TypeError, r"tiers must be a sequence of \(age, resolution\) pairs, got 5"),
    ([5], TypeError, r"tiers must be a sequence of \(age, resolution\) pairs"),
    ([(10, 1, 3)], ValueError, r"tiers\[0\] must be \(age, resolution\), got \(10, 1, 3\)"),
    ([(10, 0)], ValueError, r"tiers\[0\] resolution must be positive, got 0"),
    ([(10, 1.5)], TypeError, r"tiers\[0\] resolution must be an int, got float 1.5"),
    ([(0, 1)], ValueError, r"tiers\[0\] age must be positive, got 0"),
    ([(10, 1), (5, 2)], ValueError, r"tiers\[1\] age 5 must exceed the previous tier's 10"),
    ([(10, 2), (100, 3)], ValueError,
     r"tiers\[1\] resolution 3 must be a multiple of the previous tier's 2"),
    ([(None, 1), (10, 2)], ValueError,
     r"tiers\[0\] has no age limit, so it must be the last tier"),
])
def test_bad_tiers(tiers, exc, match):
    with pytest.raises(exc, match=match):
        TemporalAdapter(4, 3, tiers=tiers)


def test_a_coarse_first_tier_is_refused_or_keeps_the_newest_steps():
    """With a first tier of resolution 5, the newest commits must not be stamped past the
    newest committed step: either the spec is refused, or latest stays what was committed."""
    try:
        g = TemporalAdapter(1, 1, tiers=[(None, 5)], compact_every=1)
    except ValueError as exc:
        assert "tiers[0]" in str(exc)
        return
    for t in (1, 2, 3):
        g.store_delta(t, [0], [0], [1.0])
        assert g.latest == t
        assert g.current().get_weight(0, 0) == float(t)


@pytest.mark.parametrize("keep_last, exc, match", [
    (-1, ValueError, r"keep_last must be >= 0, got -1"),
    (1.5, TypeError, r"keep_last must be an int, got float"),
    (True, TypeError, r"keep_last must be an int, got bool"),
    ("1", TypeError, r"keep_last must be an int, got str"),
])
def test_bad_keep_last(h, keep_last, exc, match):
    refused(h, exc, match, h.prune_history, keep_last)


@pytest.mark.parametrize("k, exc, match", [(0, ValueError, r"k must be positive, got 0"),
                                           (-2, ValueError, r"k must be positive, got -2"),
                                           (1.0, TypeError, r"k must be an int, got float 1.0")])
def test_bad_k(h, k, exc, match):
    refused(h, exc, match, h.recent_deltas, k)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"window": 0}, ValueError, r"window must be positive, got 0"),
    ({"window": 2.0}, TypeError, r"window must be an int, got float 2.0"),
    ({"min_together": 0}, ValueError, r"min_together must be positive, got 0"),
    ({"min_score": float("nan")}, ValueError, r"min_score = nan is not finite"),
    ({"min_score": "high"}, TypeError, r"min_score must be a real number, got str 'high'"),
])
def test_bad_correlation_arguments(h, kwargs, exc, match):
    refused(h, exc, match, h.correlated_changes, **kwargs)


def test_weight_history_arguments(h):
    refused(h, IndexError, r"row = 4 is out of range for 4 rows", h.weight_history, 4, 0)
    refused(h, IndexError, r"row = -1 is out of range for 4 rows", h.weight_history, -1, 0)
    refused(h, IndexError, r"col = 3 is out of range for 3 columns", h.weight_history, 0, 3)
    refused(h, TypeError, r"row must be an int, got float 1.0", h.weight_history, 1.0, 0)
    refused(h, TypeError, r"col must be an int, got str '0'", h.weight_history, 0, "0")


# ---------------------------------------------------------------------------- open step
def test_rollback_refuses_a_non_empty_open_step(h):
    h.accumulate([3], [0], [2.0])
    refused(h, ValueError, r"open step holds accumulated changes: commit\(\) or discard_open\(\)",
            h.rollback, 2)
    assert h.commit() == 5  # the open step survived the refusal
    assert h.current().get_weight(3, 0) == 2.0


def test_store_delta_refuses_a_non_empty_open_step(h):
    h.accumulate([3], [0], [2.0])
    refused(h, ValueError, r"open step holds accumulated changes: commit\(\) them first",
            h.store_delta, 5, [0], [0], [1.0])
    h.discard_open()
    assert h.store_delta(5, [0], [0], [1.0]) == 5
    assert h.current().get_weight(3, 0) == 0.0


def test_save_path_must_be_a_path(h):
    refused(h, TypeError, r"path must be a str or os.PathLike, got int", h.save, 123)


# ---------------------------------------------------------------------------- detector
@pytest.mark.parametrize("args, exc, match", [
    ((0, 3, 0.1), ValueError, r"rows must be positive, got 0"),
    ((3, 3, -1.0), ValueError, r"threshold must be >= 0, got -1.0"),
    ((3, 3, float("nan")), ValueError, r"threshold = nan is not finite"),
    ((3, 3, "0.1"), TypeError, r"threshold must be a real number, got str '0.1'"),
])
def test_detector_constructor(args, exc, match):
    with pytest.raises(exc, match=match):
        DeltaDetector(*args)


def test_detector_refuses_bad_states_and_keeps_its_reconstruction():
    det = DeltaDetector(3, 3, threshold=0.1)
    det.update(np.eye(3))
    before = det.stored.copy()
    with pytest.raises(ValueError, match=r"state has shape \(2, 3\), expected \(3, 3\)"):
        det.update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"state has shape \(3, 4\), expected \(3, 3\)"):
        det.update(SparseAdapter(3, 4))
    with pytest.raises(ValueError, match=r"state must be two-dimensional, got shape \(9,\)"):
        det.update(np.zeros(9))
    with pytest.raises(TypeError, match=r"state must hold real numbers"):
        det.update(np.zeros((3, 3), complex))
    bad = np.eye(3)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"state\[5\] = .*nan.* is not finite"):
        det.update(bad)
    np.testing.assert_array_equal(det.stored, before)
    r, c, d, reset = det.update(np.eye(3))
    assert len(r) == 0


# ---------------------------------------------------------------------------- groups
def test_group_members_refuse_standalone_writes(tmp_path):
    g = TemporalGroup({"q": (2, 2), "v": (2, 3)})
    q = g["q"]
    for call, what in [(lambda: q.store_delta(1, [0], [0], [1.0]), "store_delta"),
                       (lambda: q.commit(), "commit"), (lambda: q.rollback(0), "rollback"),
                       (lambda: q.prune_history(0), "prune_history"),
                       (lambda: q.save(tmp_path / "q.hvz"), "save")]:
        with pytest.raises(ValueError, match=rf"'q' belongs to a TemporalGroup: call {what} on "
                                             r"the group"):
            call()
    assert g.steps == [0] and not (tmp_path / "q.hvz").exists()


def test_group_file_is_not_a_single_history(tmp_path):
    g = TemporalGroup({"q": (2, 2), "v": (2, 3)})
    g.store_deltas(1, {"q": ([0], [0], [1.0])})
    g.save(tmp_path / "g.hvz")
    with pytest.raises(ValueError, match=r"holds the histories of 2 matrices: open it with "
                                         r"TemporalGroup\.load"):
        TemporalAdapter.load(tmp_path / "g.hvz")
    g.close()


def test_tier_ages_need_not_be_multiples_of_the_next_resolution():
    # A span joins a tier by the age of its own last step, so any age limit works.
    h = TemporalAdapter(1, 1, tiers=[(10, 1), (None, 4)], compact_every=2)
    for t in range(1, 40):
        h.store_delta(t, [0], [0], [1.0])
    assert h.steps == sorted(h.steps) and h.latest == 39
    for t in h.steps:
        assert h.weights_at_time(t).get_weight(0, 0) == float(t)


# ---------------------------------------------------------------------------- issue 12 cases
@pytest.mark.parametrize("make", [
    lambda: TemporalAdapter(2**33, 2**33),
    lambda: TemporalAdapter(4, 2**31),
    lambda: TemporalGroup({"q": (2**31, 4)}),
    lambda: DeltaDetector(2**32, 1, threshold=0.0),
])
def test_shapes_beyond_int32_coordinates_are_refused(make):
    """row * cols + col must never wrap: one bound (2**31 - 1 per side) for every class."""
    with pytest.raises(ValueError, match=r"must be in 1\.\.2147483647"):
        make()


def test_a_step_that_makes_a_weight_infinite_is_refused_and_stores_nothing():
    h = TemporalAdapter(2, 2)
    h.store_delta(1, [0], [1], [3e38])
    with pytest.raises(ValueError, match=r"weight \(0, 1\) of 'lora_delta' .* not finite"):
        h.store_delta(2, [0], [1], [3e38])
    assert h.steps == [0, 1] and h.get_weights([0], [1]).tolist() == [np.float32(3e38)]
    # the same through the open step
    h.accumulate([0], [1], [3e38])
    with pytest.raises(ValueError, match="not finite"):
        h.commit()
    assert h.steps == [0, 1]
    h.discard_open()
    # a reset to a finite value is fine, and a history that allows them stores inf
    h.store_delta(2, [0], [1], [1.0], reset=np.array([True]))
    g = TemporalAdapter(2, 2, allow_nonfinite=True)
    g.store_delta(1, [0], [1], [3e38])
    g.store_delta(2, [0], [1], [3e38])
    assert np.isinf(g.get_weights([0], [1])[0])


def test_a_group_refuses_the_whole_step_when_one_member_overflows():
    g = TemporalGroup({"a": (2, 2), "b": (2, 2)})
    g.store_deltas(1, {"b": ([1], [1], [-3e38])})
    with pytest.raises(ValueError, match="of 'b'"):
        g.store_deltas(2, {"a": ([0], [0], [1.0]), "b": ([1], [1], [-3e38])})
    assert g.steps == [0, 1] and g["a"].change_count() == 0


def test_a_refused_accumulate_leaves_no_open_step():
    h = TemporalAdapter(4, 4)
    with pytest.raises(IndexError, match=r"rows\[0\] = 99 is out of range for 4 rows"):
        h.accumulate([99], [0], [1.0])
    h.store_base(rows=[0], cols=[0], values=[1.0])  # refused before: "must come before..."
    assert h.get_weights([0], [0]).tolist() == [1.0]


def test_allow_nonfinite_travels_in_the_file(tmp_path):
    p = tmp_path / "h.hvz"
    h = TemporalAdapter(2, 2, allow_nonfinite=True)
    h.store_delta(1, [0], [0], [np.inf])
    h.save(p)
    h.close()
    g = TemporalAdapter.load(p)
    assert np.isinf(g.get_weights([0], [0])[0])
    g.store_delta(2, [0], [1], [np.nan])
    g.close()
    with pytest.raises(TypeError, match="allow_nonfinite must be a bool"):
        TemporalAdapter(2, 2, allow_nonfinite="yes")


def group_fingerprint(g: TemporalGroup):
    return {"steps": g.steps, "changes": g.change_count(),
            "states": {(n, t): tuple(a.tolist() for a in m.active_weights(t))
                       for n, m in g.items() for t in g.steps},
            "file": os.path.getsize(g.path) if g.path else None}


@pytest.mark.parametrize("what,call,exc,message", [
    ("store_deltas: unknown member", lambda g: g.store_deltas(9, {"z": ([0], [0], [1.0])}),
     KeyError, "no member 'z'"),
    ("store_deltas: a bad member slice after a good one",
     lambda g: g.store_deltas(9, {"a": ([0], [0], [1.0]), "b": ([7], [0], [1.0])}),
     IndexError, r"rows\[0\] = 7 is out of range for 3 rows"),
    ("store_deltas: old step", lambda g: g.store_deltas(2, {"a": ([0], [0], [1.0])}),
     ValueError, "out of order"),
    ("store_deltas: not a mapping", lambda g: g.store_deltas(9, [1, 2]), TypeError,
     "deltas must be a mapping"),
    ("commit: old step", lambda g: g.commit(1), ValueError, "out of order"),
    ("accumulate: out of range", lambda g: g.accumulate("a", [0], [99], [1.0]), IndexError,
     r"cols\[0\] = 99"),
    ("accumulate: unknown member", lambda g: g.accumulate("z", [0], [0], [1.0]), KeyError,
     "no member 'z'"),
    ("rollback: future", lambda g: g.rollback(99), ValueError, "unknown"),
    ("rollback: a float", lambda g: g.rollback(1.5), TypeError, "t must be an int"),
    ("prune_history: negative", lambda g: g.prune_history(-1), ValueError, ">= 0"),
    ("save: missing folder", lambda g: g.save("/no/such/folder/h.hvz"), FileNotFoundError,
     "does not exist"),
    ("store_base: after a step", lambda g: g["a"].store_base(rows=[0], cols=[0], values=[1.0]),
     ValueError, "must come before the first delta"),
])
def test_every_refused_group_call_changes_nothing(tmp_path, what, call, exc, message):
    g = TemporalGroup({"a": (4, 5), "b": (3, 2)})
    g["a"].store_base(rows=[0, 3], cols=[0, 4], values=[1.0, 2.0])
    g.save(tmp_path / "g.hvz")
    g.store_deltas(1, {"a": ([1], [1], [0.5]), "b": ([2], [1], [-1.0])})
    g.store_deltas(2, {"b": ([0], [0], [3.0])})
    before = group_fingerprint(g)
    with pytest.raises(exc, match=message):
        call(g)
    assert group_fingerprint(g) == before, what
    assert g.store_deltas(3, {"a": ([2], [2], [1.0])}) == 3  # and the group still works
    g.close()


def test_refused_store_base_and_save_change_nothing(tmp_path):
    h = TemporalAdapter(3, 3)
    with pytest.raises(IndexError, match=r"cols\[0\] = 3"):
        h.store_base(rows=[0], cols=[3], values=[1.0])
    with pytest.raises(ValueError, match=r"values\[0\] = nan is not finite"):
        h.store_base(rows=[0], cols=[0], values=[np.nan])
    assert h.change_count() == 0 and len(h.active_weights()[0]) == 0
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        h.save(3)
    assert h.path is None
