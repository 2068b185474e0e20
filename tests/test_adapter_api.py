"""Each SparseAdapter method and helper on hand-made examples, plus one large case."""

from __future__ import annotations

import doctest
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import assert_f32_identical, assert_matches_dense, reference_of, run_python
from hyprvdb import SparseAdapter, enforce_sparsity, fuse_adapters

F32 = np.float32


def dense_ref(shape, entries):
    """(values, active) from {(r, c): v}."""
    values = np.zeros(shape, dtype=F32)
    active = np.zeros(shape, dtype=bool)
    for (r, c), v in entries.items():
        values[r, c] = F32(v)
        active[r, c] = True
    return values, active


def snapshot(a):
    return tuple(x.copy() for x in a.active_weights())


def assert_same_snapshot(a, snap):
    for x, y in zip(a.active_weights(), snap):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == y.dtype


@pytest.fixture
def small():
    a = SparseAdapter(4, 6)
    a.batch_update([0, 3, 2], [1, 5, 2], [0.5, -2.0, 0.0])
    return a


# ----------------------------------------------------------------------------- description
def test_new_adapter_is_empty():
    a = SparseAdapter(5, 7)
    assert a.shape == (5, 7)
    assert a.block_shape == (1, 1)
    assert a.dtype == np.float32
    assert a.name == "lora_delta"
    assert a.active_count() == 0 and len(a) == 0
    assert a.density() == 0.0 and a.sparsity_ratio() == 1.0
    r, c, v = a.active_weights()
    assert (r.dtype, c.dtype, v.dtype) == (np.int64, np.int64, np.float32)
    assert r.shape == c.shape == v.shape == (0,)
    assert list(a) == [] and a.to_dict() == {}
    assert a.to_scipy().nnz == 0
    assert_matches_dense(a, np.zeros((5, 7), F32), np.zeros((5, 7), bool))


def test_shape_arguments_accept_numpy_ints_and_name():
    a = SparseAdapter(np.int32(3), np.uint64(9), block_shape=(np.int64(1), 3), name="q_proj")
    assert a.shape == (3, 9) and type(a.shape[0]) is int
    assert a.block_shape == (1, 3)
    assert a.name == "q_proj"


def test_density_and_sparsity_ratio(small):
    assert small.active_count() == 3
    assert small.density() == 3 / 24
    assert small.sparsity_ratio() == 1 - 3 / 24


def test_repr_names_shape_and_counts(small):
    text = repr(small)
    assert text.startswith("SparseAdapter(4, 6")
    assert "active=3" in text
    tile = SparseAdapter(8, 8, block_shape=(2, 4))
    assert "block_shape=(2, 4)" in repr(tile)


def test_memory_usage_positive_grows_and_shrinks():
    a = SparseAdapter(512, 1024)
    empty = a.memory_usage()
    assert empty > 0 and a.nbytes == empty
    rng = np.random.default_rng(1)
    r = rng.integers(0, 512, 2000)
    c = rng.integers(0, 1024, 2000)
    a.batch_update(r[:200], c[:200], rng.standard_normal(200))
    some = a.memory_usage()
    a.batch_update(r, c, rng.standard_normal(2000))
    more = a.memory_usage()
    assert empty < some < more
    assert a.nbytes == more
    # Removing most weights and optimizing gives memory back.
    rr, cc, _ = a.active_weights()
    a.remove_weights(rr[: len(rr) * 9 // 10], cc[: len(cc) * 9 // 10])
    a.optimize()
    assert a.memory_usage() < more
    a.remove_weights(rr, cc)
    a.optimize()
    assert a.memory_usage() <= some
    a.clear()
    assert a.memory_usage() <= some


def test_optimize_frees_zeroed_weights_memory():
    a = SparseAdapter(256, 256)
    rng = np.random.default_rng(2)
    a.batch_update(rng.integers(0, 256, 3000), rng.integers(0, 256, 3000), np.zeros(3000))
    before = a.memory_usage()
    dropped = a.optimize()
    assert dropped > 0 and a.active_count() == 0
    assert a.memory_usage() < before


# ----------------------------------------------------------------------------- single weights
def test_set_get_is_active_remove_contains():
    a = SparseAdapter(3, 4)
    assert a.get_weight(1, 2) == 0.0 and not a.is_active(1, 2) and (1, 2) not in a
    a.set_weight(1, 2, 1.5)
    assert a.get_weight(1, 2) == 1.5 and a.is_active(1, 2) and (1, 2) in a
    a.set_weight(1, 2, -4.0)  # overwrite
    assert a.get_weight(1, 2) == -4.0 and a.active_count() == 1
    a.set_weight(0, 0, 0.0)  # an explicit zero is active
    assert a.is_active(0, 0) and a.active_count() == 2
    assert a.remove_weight(1, 2) is True
    assert a.remove_weight(1, 2) is False
    assert a.get_weight(1, 2) == 0.0 and not a.is_active(1, 2)
    assert_matches_dense(a, *dense_ref((3, 4), {(0, 0): 0.0}))


def test_scalar_kinds_are_accepted():
    a = SparseAdapter(3, 4)
    a.set_weight(np.int8(2), np.uint16(3), np.float16(0.5))
    a.set_weight(0, 1, 7)  # int value
    a.set_weight(1, 1, np.float64(0.1))  # float64 rounds to nearest float32
    assert a.to_dict() == {(0, 1): 7.0, (1, 1): float(F32(0.1)), (2, 3): 0.5}


def test_corners_of_the_matrix():
    a = SparseAdapter(70, 300)
    corners = {(0, 0): 1.0, (0, 299): 2.0, (69, 0): 3.0, (69, 299): 4.0}
    for (r, c), v in corners.items():
        a.set_weight(r, c, v)
    assert_matches_dense(a, *dense_ref((70, 300), corners))


def test_one_by_one_matrix():
    a = SparseAdapter(1, 1)
    a.set_weight(0, 0, 2.0)
    assert_matches_dense(a, np.full((1, 1), 2.0, F32), np.ones((1, 1), bool))
    assert a.density() == 1.0 and a.sparsity_ratio() == 0.0


# ----------------------------------------------------------------------------- many weights
def test_batch_update_repeated_coordinates_last_wins():
    a = SparseAdapter(4, 4)
    a.batch_update([1, 2, 1, 1], [1, 3, 1, 1], [5.0, 6.0, 7.0, -8.0])
    assert a.to_dict() == {(1, 1): -8.0, (2, 3): 6.0}


def test_batch_update_with_tuples_and_arrays():
    a = SparseAdapter(4, 4)
    a.batch_update([(0, 1, 2.0), (3, 3, -1), [2, 0, 0.25]])
    assert a.to_dict() == {(0, 1): 2.0, (2, 0): 0.25, (3, 3): -1.0}
    a.batch_update([])  # nothing to do
    a.batch_update(np.array([[1, 1, 9]]))  # an (n, 3) integer array
    assert a.get_weight(1, 1) == 9.0
    b = SparseAdapter(4, 4)
    b.batch_update((t for t in [(0, 0, 1.0), (0, 0, 3.0)]))  # any iterable, last wins
    assert b.to_dict() == {(0, 0): 3.0}


def test_batch_update_value_and_index_dtypes():
    a = SparseAdapter(10, 10)
    a.batch_update(np.array([1, 2], np.uint8), np.array([3, 4], np.int16),
                   np.array([1, 2], np.int64))
    a.batch_update(np.array([5], np.uint64), np.array([5], np.int32), np.array([0.1], np.float64))
    a.batch_update([6], [6], np.array([1.5], np.float16))
    assert a.to_dict() == {(1, 3): 1.0, (2, 4): 2.0, (5, 5): float(F32(0.1)), (6, 6): 1.5}


def test_batch_update_non_contiguous_inputs():
    a = SparseAdapter(10, 10)
    base = np.arange(10, dtype=np.int32)
    vals = np.arange(20, dtype=np.float64)
    rows, cols = base[::2], base[::-2]  # strided, one of them backwards
    a.batch_update(rows, cols, vals[::4])
    expected = {(int(r), int(c)): float(v) for r, c, v in zip(rows, cols, vals[::4])}
    assert len(expected) == 5
    assert a.to_dict() == expected


def test_empty_batches_are_no_ops(small):
    snap = snapshot(small)
    small.batch_update([], [], [])
    small.add_weights(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
    assert small.remove_weights([], []) == 0
    assert small.get_weights([], []).shape == (0,)
    assert small.are_active([], []).dtype == np.bool_
    assert_same_snapshot(small, snap)


def test_add_weights_sums_repeats_in_float32():
    a = SparseAdapter(3, 3)
    a.set_weight(0, 0, 1.0)
    a.add_weights([0, 0, 1, 0], [0, 0, 2, 0], [2.0, 1e-8, 0.0, -0.5])
    # Sequential float32 sums: 1 + 2 = 3, 3 + 1e-8 = 3 (rounded away), 3 - 0.5 = 2.5.
    assert a.to_dict() == {(0, 0): 2.5, (1, 2): 0.0}
    b = SparseAdapter(1, 1)
    b.add_weights([0] * 3, [0] * 3, [F32(16777216.0), F32(1.0), F32(1.0)])
    expected = (F32(16777216.0) + F32(1.0)) + F32(1.0)
    assert b.get_weight(0, 0) == float(expected) == 16777216.0


def test_remove_weights_counts_active_ones(small):
    assert small.remove_weights([0, 1, 3], [1, 1, 5]) == 2
    assert small.to_dict() == {(2, 2): 0.0}


@pytest.mark.parametrize("block_shape", [(1, 1), (2, 2)])
def test_remove_weights_counts_each_weight_once(block_shape):
    # "Returns how many were active": a coordinate listed twice is still one weight.
    a = SparseAdapter(4, 4, block_shape=block_shape)
    a.set_weight(0, 0, 1.0)
    assert a.remove_weights([0, 0, 0], [0, 0, 0]) == 1


def test_get_weights_and_are_active_keep_input_order(small):
    rows = [3, 0, 2, 1, 3]
    cols = [5, 1, 2, 1, 5]
    got = small.get_weights(rows, cols)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([-2.0, 0.5, 0.0, 0.0, -2.0], F32))
    np.testing.assert_array_equal(small.are_active(rows, cols), [True, True, True, False, True])


@pytest.mark.parametrize("cols", [16, 300, 600, 1500, 3000, 5000])
def test_active_weights_are_row_major_across_leaves(cols):
    # Insert in shuffled order, across many leaves and every column fold.
    rng = np.random.default_rng(cols)
    rows = 40
    n = 500
    r = rng.integers(0, rows, n)
    c = rng.integers(0, cols, n)
    v = rng.standard_normal(n).astype(F32)
    a = SparseAdapter(rows, cols)
    a.batch_update(r, c, v)
    values = np.zeros((rows, cols), F32)
    active = np.zeros((rows, cols), bool)
    values[r, c] = v  # numpy fancy assignment: last wins as well
    active[r, c] = True
    assert_matches_dense(a, values, active)
    ar, ac, _ = a.active_weights()
    key = ar * cols + ac
    assert (np.diff(key) > 0).all()


@pytest.mark.parametrize("rows", [40, 4000, 10**6])
def test_active_weights_are_row_major_for_any_rows_per_weight(rows):
    # Few weights in many rows take another sort than many weights in few rows.
    rng = np.random.default_rng(rows)
    cols, n = 3000, 500
    r = rng.integers(0, rows, n)
    r[:50] = r[0]  # one crowded row
    c = rng.integers(0, cols, n)
    v = rng.standard_normal(n).astype(F32)
    a = SparseAdapter(rows, cols)
    a.batch_update(r, c, v)
    ar, ac, av = a.active_weights()
    key = ar * cols + ac
    assert (np.diff(key) > 0).all()
    last = {}
    for k, x in zip(r * cols + c, v):
        last[int(k)] = x  # batch_update: the last value of a repeated coordinate wins
    assert_f32_identical(av, [last[int(k)] for k in key], "values")
    assert sorted(last) == key.tolist()


TALL = """
import json, resource
import numpy as np
from hyprvdb import SparseAdapter
a = SparseAdapter(2**31 - 1, 2**31 - 1)
a.batch_update(np.array([2**31 - 2, 5, 5]), np.array([0, 9, 3]), np.array([1, 2, 3], np.float32))
r, c, v = a.active_weights()
print(json.dumps({"rows": r.tolist(), "cols": c.tolist(),
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def test_active_weights_cost_follows_the_weights_not_the_shape():
    # A counting sort over 2**31 rows would need 16 GiB; the child may use 4 GiB.
    out = run_python(TALL, python=sys.executable, address_space=4 << 30)
    assert out["rows"] == [5, 5, 2**31 - 2] and out["cols"] == [3, 9, 0]
    assert out["peak"] < 1 << 30


def test_iteration_yields_row_major_triples(small):
    triples = list(small)
    assert triples == [(0, 1, 0.5), (2, 2, 0.0), (3, 5, -2.0)]
    assert [type(x) for x in triples[0]] == [int, int, float]
    assert list(small) == triples  # iterating twice gives the same


# ----------------------------------------------------------------------------- whole adapter
def test_copy_is_independent_both_ways(small):
    small.name = "attn"
    dup = small.copy()
    assert dup is not small and dup.name == "attn" and dup.shape == small.shape
    dup.set_weight(1, 1, 9.0)
    small.set_weight(3, 5, 4.0)
    assert small.get_weight(1, 1) == 0.0
    assert dup.get_weight(3, 5) == -2.0
    small.clear()
    assert dup.active_count() == 4


def test_copy_keeps_allow_nonfinite_and_blocks():
    a = SparseAdapter(4, 4, block_shape=(2, 2), allow_nonfinite=True)
    a.set_weight(0, 0, float("nan"))
    dup = a.copy()
    assert dup.block_shape == (2, 2)
    dup.set_weight(3, 3, float("inf"))
    assert np.isnan(dup.get_weight(0, 0)) and dup.get_weight(3, 3) == np.inf


def test_clear_then_reuse(small):
    small.clear()
    assert small.active_count() == 0 and small.to_dict() == {}
    small.set_weight(3, 0, 1.0)
    assert small.to_dict() == {(3, 0): 1.0}


def test_optimize_tolerance_semantics():
    a = SparseAdapter(2, 4)
    a.batch_update([0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 0, 1], [0.0, -0.0, 0.5, -0.5, 0.51, 2.0])
    assert a.optimize() == 2  # exact zeros, both signs
    assert a.to_dict() == {(0, 2): 0.5, (0, 3): -0.5, (1, 0): float(F32(0.51)), (1, 1): 2.0}
    assert a.optimize(0.5) == 2  # |w| <= tolerance goes, ties included
    assert a.to_dict() == {(1, 0): float(F32(0.51)), (1, 1): 2.0}
    assert a.optimize(np.float32(1)) == 1
    assert a.optimize(100) == 1
    assert a.optimize() == 0 and a.active_count() == 0


def test_optimize_compares_in_float32():
    # Values are float32, so is the tolerance: w = float32(0.1) and tolerance 0.1 are equal.
    a = SparseAdapter(1, 2)
    a.batch_update([0, 0], [0, 1], [0.1, 0.2])
    assert a.optimize(0.1) == 1
    assert a.to_dict() == {(0, 1): float(F32(0.2))}


def test_merge_with_adds_scaled_and_leaves_other_untouched():
    a = SparseAdapter(3, 3)
    a.batch_update([0, 1], [0, 1], [1.0, 2.0])
    b = SparseAdapter(3, 3)
    b.batch_update([1, 2], [1, 2], [10.0, -4.0])
    snap = snapshot(b)
    assert a.merge_with(b, 0.5) is a
    assert a.to_dict() == {(0, 0): 1.0, (1, 1): 7.0, (2, 2): -2.0}
    assert_same_snapshot(b, snap)
    a.merge_with(b)  # default scale 1
    assert a.to_dict() == {(0, 0): 1.0, (1, 1): 17.0, (2, 2): -6.0}


def test_merge_twice_doubles():
    rng = np.random.default_rng(3)
    b = SparseAdapter(64, 200)
    b.batch_update(rng.integers(0, 64, 300), rng.integers(0, 200, 300),
                   rng.integers(-8, 8, 300).astype(F32))  # small integers: sums are exact
    a = SparseAdapter(64, 200)
    a.merge_with(b)
    assert_matches_dense(a, *reference_of(b))
    a.merge_with(b)
    values, active = reference_of(b)
    assert_matches_dense(a, values * 2, active)


def test_merge_with_itself_and_zero_scale():
    a = SparseAdapter(2, 2)
    a.batch_update([0, 1], [0, 1], [1.5, -3.0])
    a.merge_with(a, 2.0)
    assert a.to_dict() == {(0, 0): 4.5, (1, 1): -9.0}
    b = SparseAdapter(2, 2)
    b.merge_with(a, 0.0)  # weights become active, with value 0
    assert b.to_dict() == {(0, 0): 0.0, (1, 1): 0.0}


def test_merge_into_tile_adapter_activates_blocks():
    a = SparseAdapter(4, 8, block_shape=(2, 4))
    b = SparseAdapter(4, 8)
    b.set_weight(3, 5, 2.0)
    a.merge_with(b, 3.0)
    values = np.zeros((4, 8), F32)
    active = np.zeros((4, 8), bool)
    active[2:4, 4:8] = True
    values[3, 5] = 6.0
    assert_matches_dense(a, values, active)


def test_top_k_picks_largest_magnitudes():
    a = SparseAdapter(3, 4)
    a.batch_update([0, 0, 1, 2, 2], [0, 3, 1, 2, 3], [1.0, -5.0, 3.0, -0.5, 4.0])
    snap = snapshot(a)
    out = a.top_k(3)
    assert out is not a and out.shape == a.shape and out.name == a.name
    assert out.to_dict() == {(0, 3): -5.0, (2, 3): 4.0, (1, 1): 3.0}
    assert a.top_k(0).active_count() == 0
    assert a.top_k(5).to_dict() == a.to_dict()
    assert a.top_k(np.int64(100)).to_dict() == a.to_dict()
    assert_same_snapshot(a, snap)
    out.set_weight(0, 0, 7.0)  # independent of the original
    assert a.get_weight(0, 0) == 1.0


def test_top_k_ties_go_to_the_lowest_index():
    a = SparseAdapter(2, 3)
    a.batch_update([1, 0, 0, 1], [2, 2, 0, 0], [2.0, -2.0, 2.0, -2.0])
    assert a.top_k(2).to_dict() == {(0, 0): 2.0, (0, 2): -2.0}
    assert a.top_k(3).to_dict() == {(0, 0): 2.0, (0, 2): -2.0, (1, 0): -2.0}


def test_enforce_sparsity_threshold_returns_a_new_adapter():
    a = SparseAdapter(2, 3)
    a.batch_update([0, 0, 1, 1], [0, 1, 0, 2], [0.1, -0.3, 2.0, 0.0])
    snap = snapshot(a)
    out = enforce_sparsity(a, 0.2)
    assert out is not a
    assert out.to_dict() == {(0, 1): float(F32(-0.3)), (1, 0): 2.0}
    assert_same_snapshot(a, snap)
    assert enforce_sparsity(a).to_dict() == {(0, 0): float(F32(0.1)),
                                             (0, 1): float(F32(-0.3)), (1, 0): 2.0}


def test_enforce_sparsity_top_k_and_in_place():
    a = SparseAdapter(2, 3)
    a.batch_update([0, 0, 1, 1], [0, 1, 0, 2], [0.1, -0.3, 2.0, 0.0])
    out = enforce_sparsity(a, top_k=2)
    assert out.to_dict() == {(0, 1): float(F32(-0.3)), (1, 0): 2.0}
    assert a.active_count() == 4
    out = enforce_sparsity(a, 0.2, top_k=1, in_place=True)
    assert out is a
    assert a.to_dict() == {(1, 0): 2.0}
    a.set_weight(0, 0, 1.0)  # still a working adapter
    assert a.to_dict() == {(0, 0): 1.0, (1, 0): 2.0}


def test_enforce_sparsity_in_place_keeps_the_block_shape():
    a = SparseAdapter(4, 4, block_shape=(2, 2))
    a.set_weight(0, 0, 1.0)
    a.set_weight(3, 3, 0.5)
    enforce_sparsity(a, 0.0, in_place=True)
    assert a.block_shape == (2, 2)
    # An adapter changed in place keeps its kind: a tile adapter stays a tile adapter (or the
    # call is refused), it does not silently turn into an unstructured one.
    try:
        enforce_sparsity(a, 0.0, top_k=8, in_place=True)
    except ValueError:
        pass
    assert a.block_shape == (2, 2)


def test_fuse_adapters_sums_scaled():
    a = SparseAdapter(3, 3, name="first")
    a.batch_update([0, 1], [0, 1], [1.0, 2.0])
    b = SparseAdapter(3, 3)
    b.batch_update([1, 2], [1, 2], [4.0, 8.0])
    snaps = snapshot(a), snapshot(b)
    out = fuse_adapters([a, b], [2.0, 0.25])
    assert out.to_dict() == {(0, 0): 2.0, (1, 1): 5.0, (2, 2): 2.0}
    assert out.name == "first" and out.block_shape == (1, 1)
    assert fuse_adapters([a, b]).to_dict() == {(0, 0): 1.0, (1, 1): 6.0, (2, 2): 8.0}
    assert fuse_adapters((x for x in [a])).to_dict() == a.to_dict()
    assert_same_snapshot(a, snaps[0])
    assert_same_snapshot(b, snaps[1])
    out.set_weight(0, 0, -1.0)  # the result is a new adapter
    assert a.get_weight(0, 0) == 1.0


def test_fuse_adapters_block_shapes():
    t1 = SparseAdapter(4, 4, block_shape=(2, 2))
    t2 = SparseAdapter(4, 4, block_shape=(2, 2))
    u = SparseAdapter(4, 4)
    t1.set_weight(0, 0, 1.0)
    u.set_weight(3, 3, 1.0)
    assert fuse_adapters([t1, t2]).block_shape == (2, 2)
    mixed = fuse_adapters([t1, u])
    assert mixed.block_shape == (1, 1)
    assert mixed.active_count() == 5  # t1's whole block plus u's weight


def test_fuse_adapters_matches_numpy_on_random_inputs():
    rng = np.random.default_rng(4)
    adapters, total = [], np.zeros((50, 120), F32)
    scales = [0.5, -2.0, 1.25]
    active = np.zeros((50, 120), bool)
    for s in scales:
        a = SparseAdapter(50, 120)
        r, c = rng.integers(0, 50, 200), rng.integers(0, 120, 200)
        a.batch_update(r, c, rng.integers(-16, 16, 200).astype(F32))  # exact sums
        v, on = reference_of(a)
        total += v * F32(s)
        active |= on
        adapters.append(a)
    assert_matches_dense(fuse_adapters(adapters, scales), total, active)


# ----------------------------------------------------------------------------- tile mode
def test_tile_mode_write_activates_whole_block():
    a = SparseAdapter(4, 8, block_shape=(2, 4))
    a.set_weight(1, 5, 3.0)
    values = np.zeros((4, 8), F32)
    active = np.zeros((4, 8), bool)
    active[0:2, 4:8] = True
    values[1, 5] = 3.0
    assert_matches_dense(a, values, active)
    assert a.active_count() == 8 and a.density() == 8 / 32
    # remove_weight zeroes the entry and keeps the block.
    assert a.remove_weight(1, 5) is True
    values[1, 5] = 0.0
    assert_matches_dense(a, values, active)
    assert a.remove_weight(3, 0) is False
    # optimize drops blocks whose entries are all within the tolerance.
    a.set_weight(2, 0, 0.25)
    a.set_weight(3, 3, -1.0)
    assert a.optimize(0.5) == 8
    values = np.zeros((4, 8), F32)
    active = np.zeros((4, 8), bool)
    active[2:4, 0:4] = True
    values[2, 0], values[3, 3] = 0.25, -1.0
    assert_matches_dense(a, values, active)


def test_tile_mode_8x64_leaf_sized_blocks():
    a = SparseAdapter(32, 256, block_shape=(8, 64))
    a.batch_update([0, 31, 9], [0, 255, 70], [1.0, 2.0, 3.0])
    assert a.active_count() == 3 * 512
    values, active = np.zeros((32, 256), F32), np.zeros((32, 256), bool)
    for r, c, v in [(0, 0, 1.0), (31, 255, 2.0), (9, 70, 3.0)]:
        active[r // 8 * 8: r // 8 * 8 + 8, c // 64 * 64: c // 64 * 64 + 64] = True
        values[r, c] = v
    assert_matches_dense(a, values, active)


# ----------------------------------------------------------------------------- conversions
def test_from_dict_to_dict_round_trip():
    d = {(0, 1): 0.5, (3, 5): -2.0, (2, 2): 0.0}
    a = SparseAdapter.from_dict(d, shape=(10, 10))
    assert a.shape == (10, 10)
    assert a.to_dict() == d
    assert SparseAdapter.from_dict(a.to_dict(), shape=a.shape).to_dict() == d


def test_from_dict_infers_shape_and_passes_options():
    a = SparseAdapter.from_dict({(0, 1): 1.0, (3, 5): 2.0})
    assert a.shape == (4, 6)
    b = SparseAdapter.from_dict({(1, 1): 1.0}, shape=(4, 4), block_shape=(2, 2), name="n")
    assert b.block_shape == (2, 2) and b.name == "n" and b.active_count() == 4
    c = SparseAdapter.from_dict({}, shape=(2, 3))
    assert c.shape == (2, 3) and c.active_count() == 0
    e = SparseAdapter.from_dict({(np.int64(1), np.int32(2)): np.float32(0.5)})
    assert e.to_dict() == {(1, 2): 0.5}


def test_from_dense_to_dense_with_tolerance():
    dense = np.array([[0.0, 0.1, -0.5], [2.0, 0.0, -0.05]])
    a = SparseAdapter.from_dense(dense)
    out = a.to_dense()
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, dense.astype(F32))
    assert a.active_count() == 4
    b = SparseAdapter.from_dense(dense, tolerance=0.1)
    assert b.to_dict() == {(0, 2): -0.5, (1, 0): 2.0}
    out[0, 0] = 42  # to_dense hands out a fresh array
    assert a.get_weight(0, 0) == 0.0 and a.to_dense()[0, 0] == 0.0
    ints = SparseAdapter.from_dense(np.array([[0, 3], [-1, 0]], dtype=np.int16))
    assert ints.to_dict() == {(0, 1): 3.0, (1, 0): -1.0}
    f = SparseAdapter.from_dense(np.asfortranarray(dense), name="x")
    assert f.to_dict() == a.to_dict() and f.name == "x"


def test_from_dense_tile_mode():
    dense = np.zeros((4, 8), F32)
    dense[3, 6] = 1.0
    a = SparseAdapter.from_dense(dense, block_shape=(2, 4))
    active = np.zeros((4, 8), bool)
    active[2:4, 4:8] = True
    assert_matches_dense(a, dense, active)


def test_from_scipy_csr_and_coo_duplicates_and_explicit_zeros():
    csr = sp.csr_matrix((np.array([1.0, 0.0, 3.0]), np.array([0, 2, 1]),
                         np.array([0, 2, 2, 3])), shape=(3, 4))
    a = SparseAdapter.from_scipy(csr)
    assert a.shape == (3, 4)
    assert a.to_dict() == {(0, 0): 1.0, (0, 2): 0.0, (2, 1): 3.0}  # explicit zero is active
    coo = sp.coo_matrix((np.array([1.0, 2.0, 0.5, 0.0]),
                         (np.array([1, 1, 0, 2]), np.array([2, 2, 0, 3]))), shape=(3, 4))
    b = SparseAdapter.from_scipy(coo, name="c")
    assert b.to_dict() == {(0, 0): 0.5, (1, 2): 3.0, (2, 3): 0.0}  # duplicates summed
    assert b.name == "c"
    for m in (sp.csc_matrix(coo), sp.csr_array(coo), sp.coo_array(coo), coo.todok()):
        assert SparseAdapter.from_scipy(m).to_dict() == b.to_dict()
    t = SparseAdapter.from_scipy(coo, block_shape=(1, 2))
    assert t.block_shape == (1, 2) and t.active_count() == 6


def test_to_scipy_formats():
    a = SparseAdapter(3, 5)
    a.batch_update([2, 0, 0, 1], [4, 3, 1, 0], [1.0, 2.0, 0.0, -3.0])
    dense = a.to_dense()
    for fmt in ("csr", "csc", "coo"):
        m = a.to_scipy(fmt)
        assert m.format == fmt and m.dtype == np.float32 and m.shape == (3, 5)
        assert m.nnz == 4  # the explicit zero is stored
        np.testing.assert_array_equal(m.toarray(), dense)
    assert a.to_scipy().format == "csr"
    csr = a.to_scipy("csr")
    np.testing.assert_array_equal(csr.indptr, [0, 2, 3, 4])
    np.testing.assert_array_equal(csr.indices, [1, 3, 0, 4])
    assert_matches_dense(SparseAdapter.from_scipy(a.to_scipy("csc")), *reference_of(a))


def _lora_reference(A, B, alpha, density):
    A64, B64 = A.astype(np.float64), B.astype(np.float64)
    delta = (alpha / A.shape[0]) * (B64 @ A64)
    k = max(1, int(round(density * delta.size)))
    flat = np.abs(delta).ravel()
    keep = np.argsort(-flat, kind="stable")[:k]
    values = np.zeros(delta.shape, F32)
    active = np.zeros(delta.shape, bool)
    values.ravel()[keep] = delta.ravel()[keep].astype(F32)
    active.ravel()[keep] = True
    return values, active, k


@pytest.mark.parametrize("density", [0.01, 0.1, 0.37, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_lora_keeps_the_largest_entries(density, dtype):
    rng = np.random.default_rng(5)
    r, n_in, n_out = 4, 96, 80
    A = rng.standard_normal((r, n_in)).astype(dtype)  # lora_A: r x in_features
    B = rng.standard_normal((n_out, r)).astype(dtype)  # lora_B: out_features x r
    a = SparseAdapter.from_lora(A, B, alpha=8.0, density=density)
    values, active, k = _lora_reference(A, B, 8.0, density)
    assert a.shape == (n_out, n_in)
    assert a.active_count() == k == round(density * n_out * n_in)
    assert_matches_dense(a, values, active)


def test_from_lora_scale_is_alpha_over_rank_and_kwargs_pass():
    A = np.array([[1.0, 0.0, 2.0]])  # r = 1
    B = np.array([[1.0], [-3.0]])
    a = SparseAdapter.from_lora(A, B, alpha=2, density=1.0, name="lora")
    np.testing.assert_array_equal(a.to_dense(), np.array([[2, 0, 4], [-6, 0, -12]], F32))
    assert a.name == "lora" and a.active_count() == 6  # exact zeros of the delta are kept too
    A2 = np.vstack([A, A])  # r = 2: alpha / r halves each term, the sum is the same
    B2 = np.hstack([B, B])
    np.testing.assert_array_equal(SparseAdapter.from_lora(A2, B2, 2, 1.0).to_dense(),
                                  a.to_dense())


# ----------------------------------------------------------------------------- large case
def test_large_matrix_against_scipy():
    rng = np.random.default_rng(6)
    n, size = 100_000, 4096
    r = rng.integers(0, size, n)
    c = rng.integers(0, size, n)
    v = rng.standard_normal(n).astype(F32)
    a = SparseAdapter(size, size)
    a.batch_update(r, c, v)
    # Reference, last write wins: keep the last occurrence of each coordinate.
    key = r * size + c
    _, last_from_end = np.unique(key[::-1], return_index=True)
    last = n - 1 - last_from_end
    ref = sp.csr_matrix((v[last], (r[last], c[last])), shape=(size, size))
    ref.sort_indices()
    got = a.to_scipy("csr")
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    assert_f32_identical(got.data, ref.data, "csr data")
    values = ref.toarray().astype(F32)
    active = np.zeros((size, size), bool)
    active[r, c] = True
    assert_matches_dense(a, values, active, max_probe=200_000, scipy_formats=("csr", "coo"))
    # Compact storage: far below a dict or a dense matrix per active weight.
    assert a.memory_usage() / a.active_count() < 60
    # Accumulate 100k more deltas (with repeats) and compare with a sequential float32 sum.
    r2, c2 = rng.integers(0, size, n), rng.integers(0, size, n)
    r2[: n // 10], c2[: n // 10] = r[: n // 10], c[: n // 10]
    d2 = rng.standard_normal(n).astype(F32)
    a.add_weights(r2, c2, d2)
    np.add.at(values, (r2, c2), d2)  # unbuffered, in index order, in float32
    active[r2, c2] = True
    assert_matches_dense(a, values, active, max_probe=200_000)
    # Remove half, optimize, compare again.
    ar, ac, _ = a.active_weights()
    half = rng.permutation(len(ar))[: len(ar) // 2]
    assert a.remove_weights(ar[half], ac[half]) == len(half)
    values[ar[half], ac[half]] = 0
    active[ar[half], ac[half]] = False
    assert_matches_dense(a, values, active, max_probe=200_000)


# ----------------------------------------------------------------------------- doctests
def test_adapter_doctests_pass():
    import hyprvdb.adapter._sparse

    result = doctest.testmod(hyprvdb.adapter._sparse, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, "hyprvdb.adapter has no doctests"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests failed"

