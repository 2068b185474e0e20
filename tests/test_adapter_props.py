"""Random operation sequences on SparseAdapter against a dense numpy reference.

The reference holds a float32 value and an active flag per weight and does all arithmetic in
float32, so every comparison is exact (bit for bit). Shapes are small (up to 70 rows) but
reach several OpenVDB leaves, and some are wide enough (more than 512 columns of cells) to
exercise every column fold of tile mode (zbits 4 to 7). Unstructured adapters' leaves are
checked to keep the form their cost says (sparse in-block offsets or dense per-cell masks)
as they grow and shrink, alone and as members of an AdapterSet beside other members.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import hyprvdb
from conftest import assert_matches_dense

F32 = np.float32

values_st = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-45, -1e-38, 3.0]),
    st.floats(-1e4, 1e4, width=32),
)
scales_st = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5]),
                      st.floats(-8.0, 8.0, width=32))
tolerances_st = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.floats(0.0, 1e4, width=32))


class Reference:
    """Dense float32 model of a SparseAdapter (unstructured or tile-structured)."""

    def __init__(self, rows: int, cols: int, block_shape=(1, 1)):
        self.bh, self.bw = block_shape
        self.values = np.zeros((rows, cols), dtype=F32)
        self.active = np.zeros((rows, cols), dtype=bool)

    def copy(self) -> Reference:
        out = Reference.__new__(Reference)
        out.bh, out.bw = self.bh, self.bw
        out.values = self.values.copy()
        out.active = self.active.copy()
        return out

    def _block(self, r: int, c: int):
        r0, c0 = r // self.bh * self.bh, c // self.bw * self.bw
        return slice(r0, r0 + self.bh), slice(c0, c0 + self.bw)

    def _activate(self, r: int, c: int) -> None:
        if not self.active[r, c]:
            # Writing a weight activates its whole block; the other entries read 0.
            blk = self._block(r, c)
            self.active[blk] = True
            self.values[blk] = F32(0)

    def set(self, rows, cols, vals) -> None:
        for r, c, v in zip(rows, cols, vals):
            self._activate(r, c)
            self.values[r, c] = F32(v)

    def add(self, rows, cols, deltas) -> None:
        for r, c, d in zip(rows, cols, deltas):
            self._activate(r, c)
            self.values[r, c] = F32(self.values[r, c]) + F32(d)

    def remove(self, rows, cols) -> int:
        """Deactivate (unstructured) or zero (tile mode); return how many distinct weights
        were active."""
        hit = {(r, c) for r, c in zip(rows, cols) if self.active[r, c]}
        for r, c in hit:
            self.values[r, c] = F32(0)
            if (self.bh, self.bw) == (1, 1):
                self.active[r, c] = False
        return len(hit)

    def optimize(self, tol: float) -> int:
        """Drop blocks (weights) whose entries all have |w| <= tol; return weights dropped."""
        rows, cols = self.values.shape
        shape4 = (rows // self.bh, self.bh, cols // self.bw, self.bw)
        big = (np.abs(self.values) > F32(tol)).reshape(shape4).any(axis=(1, 3))
        on = self.active.reshape(shape4).any(axis=(1, 3))
        drop = on & ~big
        mask = np.repeat(np.repeat(drop, self.bh, axis=0), self.bw, axis=1)
        self.active[mask] = False
        self.values[mask] = F32(0)
        return int(mask.sum())

    def merge(self, other: Reference, scale: float) -> None:
        r, c = np.nonzero(other.active)
        scaled = (other.values[r, c] * F32(scale)).astype(F32)
        self.add(r.tolist(), c.tolist(), scaled.tolist())

    def clear(self) -> None:
        self.values[:] = 0
        self.active[:] = False


def coord_lists(draw, rows: int, cols: int, *, unique: bool = False, max_size: int = 40):
    """Coordinates, often with repeats (drawn from a small pool), as two int lists."""
    coord = st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1))
    if unique:
        pairs = draw(st.lists(coord, max_size=max_size, unique=True))
    else:
        pairs = draw(st.one_of(
            st.lists(coord, max_size=max_size),
            st.lists(coord, min_size=1, max_size=5).flatmap(
                lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=max_size)),
        ))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def as_call_args(draw, rows, cols, vals=None):
    """The same coordinates as lists or as numpy arrays of some integer dtype."""
    kind = draw(st.sampled_from(["list", "int64", "int32", "uint32"]))
    if kind == "list":
        out = [list(rows), list(cols)]
    else:
        out = [np.array(rows, dtype=kind), np.array(cols, dtype=kind)]
    if vals is not None:
        out.append(list(vals) if kind == "list" else np.array(vals, dtype=F32))
    return out


class AdapterMachine(RuleBasedStateMachine):
    """Random operation sequences; subclasses choose the block shapes."""

    block_shapes = [(1, 1)]

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="hyprvdb-props-"))
        self.saves = 0
        self.a = None

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(data=st.data())
    def create(self, data):
        bh, bw = data.draw(st.sampled_from(self.block_shapes), label="block_shape")
        wide = data.draw(st.booleans(), label="wide")
        if wide:
            # More than 512 columns of cells: zbits 5, 6 and 7.
            rows = bh * data.draw(st.integers(1, max(1, 12 // bh)), label="row blocks")
            cells = data.draw(st.sampled_from([513, 1000, 1025, 2047, 2049, 4200]))
            # Wide blocks (64 columns) would make the dense reference huge: fewer cells.
            cols = bw * (cells if bw <= 8 else max(1, cells // 8))
        else:
            rows = bh * data.draw(st.integers(1, max(1, 70 // bh)), label="row blocks")
            cols = bw * data.draw(st.integers(1, max(1, 300 // bw)), label="col blocks")
        self.a = hyprvdb.SparseAdapter(rows, cols, block_shape=(bh, bw))
        self.ref = Reference(rows, cols, (bh, bw))

    @property
    def rows(self):
        return self.a.shape[0]

    @property
    def cols(self):
        return self.a.shape[1]

    # ------------------------------------------------------------------ writes
    @rule(data=st.data())
    def set_weight(self, data):
        r = data.draw(st.integers(0, self.rows - 1))
        c = data.draw(st.integers(0, self.cols - 1))
        v = data.draw(values_st)
        self.a.set_weight(r, c, v)
        self.ref.set([r], [c], [v])

    @rule(data=st.data())
    def batch_update(self, data):
        rows, cols = coord_lists(data.draw, self.rows, self.cols)
        vals = data.draw(st.lists(values_st, min_size=len(rows), max_size=len(rows)))
        self.a.batch_update(*as_call_args(data.draw, rows, cols, vals))
        self.ref.set(rows, cols, vals)

    @rule(data=st.data())
    def batch_update_tuples(self, data):
        rows, cols = coord_lists(data.draw, self.rows, self.cols, max_size=10)
        vals = data.draw(st.lists(values_st, min_size=len(rows), max_size=len(rows)))
        self.a.batch_update(list(zip(rows, cols, vals)))
        self.ref.set(rows, cols, vals)

    @rule(data=st.data())
    def write_rectangle(self, data):
        # Many weights of one leaf at once: exercises re-packing a leaf's value block.
        r0 = data.draw(st.integers(0, self.rows - 1))
        c0 = data.draw(st.integers(0, self.cols - 1))
        h = data.draw(st.integers(1, min(20, self.rows - r0)))
        w = data.draw(st.integers(1, min(70, self.cols - c0)))
        rr, cc = (x.ravel() for x in np.indices((h, w)))
        rr, cc = rr + r0, cc + c0
        seed = data.draw(st.integers(0, 2**32 - 1))
        vals = np.random.default_rng(seed).standard_normal(rr.size).astype(F32)
        order = np.random.default_rng(seed + 1).permutation(rr.size)
        rr, cc, vals = rr[order], cc[order], vals[order]
        if data.draw(st.booleans(), label="accumulate"):
            self.a.add_weights(rr, cc, vals)
            self.ref.add(rr.tolist(), cc.tolist(), vals.tolist())
        else:
            self.a.batch_update(rr, cc, vals)
            self.ref.set(rr.tolist(), cc.tolist(), vals.tolist())

    @rule(data=st.data())
    def add_weights(self, data):
        rows, cols = coord_lists(data.draw, self.rows, self.cols)
        deltas = data.draw(st.lists(values_st, min_size=len(rows), max_size=len(rows)))
        self.a.add_weights(*as_call_args(data.draw, rows, cols, deltas))
        self.ref.add(rows, cols, deltas)

    @rule(data=st.data())
    def remove_weight(self, data):
        if self.ref.active.any() and data.draw(st.booleans(), label="pick an active one"):
            er, ec = np.nonzero(self.ref.active)
            i = data.draw(st.integers(0, len(er) - 1))
            r, c = int(er[i]), int(ec[i])
        else:
            r = data.draw(st.integers(0, self.rows - 1))
            c = data.draw(st.integers(0, self.cols - 1))
        expected = self.ref.remove([r], [c]) == 1
        assert self.a.remove_weight(r, c) is expected

    @rule(data=st.data())
    def remove_weights(self, data):
        # Distinct coordinates here; repeated ones are pinned in test_adapter_api.
        rows, cols = coord_lists(data.draw, self.rows, self.cols, unique=True)
        if self.ref.active.any() and data.draw(st.booleans(), label="add active ones"):
            er, ec = np.nonzero(self.ref.active)
            take = data.draw(st.lists(st.integers(0, len(er) - 1), max_size=20, unique=True))
            seen = set(zip(rows, cols))
            for i in take:
                if (int(er[i]), int(ec[i])) not in seen:
                    rows.append(int(er[i]))
                    cols.append(int(ec[i]))
        expected = self.ref.remove(rows, cols)
        assert self.a.remove_weights(*as_call_args(data.draw, rows, cols)) == expected

    @rule(tol=tolerances_st)
    def optimize(self, tol):
        expected = self.ref.optimize(tol)
        before = self.a.memory_usage()
        assert self.a.optimize(tol) == expected
        if expected:
            assert self.a.memory_usage() <= before

    @rule(data=st.data(), scale=scales_st)
    def merge_with(self, data, scale):
        same_blocks = data.draw(st.booleans(), label="other has the same block shape")
        bs = self.a.block_shape if same_blocks else (1, 1)
        other = hyprvdb.SparseAdapter(*self.a.shape, block_shape=bs)
        oref = Reference(*self.a.shape, bs)
        rows, cols = coord_lists(data.draw, self.rows, self.cols)
        vals = data.draw(st.lists(values_st, min_size=len(rows), max_size=len(rows)))
        other.batch_update(rows, cols, vals)
        oref.set(rows, cols, vals)
        before = other.active_weights()
        assert self.a.merge_with(other, scale) is self.a
        self.ref.merge(oref, scale)
        after = other.active_weights()
        for x, y in zip(before, after):
            np.testing.assert_array_equal(x, y)
        assert_matches_dense(other, oref.values, oref.active)

    @rule(scale=scales_st)
    def merge_with_itself(self, scale):
        self.ref.merge(self.ref.copy(), scale)
        self.a.merge_with(self.a, scale)

    @rule(data=st.data())
    def copy_then_diverge(self, data):
        # The copy must not see later writes to the original, and must itself stay usable.
        dup = self.a.copy()
        assert dup is not self.a
        assert dup.block_shape == self.a.block_shape and dup.name == self.a.name
        r = data.draw(st.integers(0, self.rows - 1))
        c = data.draw(st.integers(0, self.cols - 1))
        self.a.set_weight(r, c, 123.0)
        self.a.clear()
        self.a = dup

    @precondition(lambda self: self.saves < 3)
    @rule()
    def save_and_load(self):
        self.saves += 1
        path = self.tmp / f"a{self.saves}.vdb"
        self.a.save(path)
        loaded = hyprvdb.SparseAdapter.load(path)
        assert loaded.shape == self.a.shape
        assert loaded.block_shape == self.a.block_shape
        self.a = loaded

    @rule()
    def clear(self):
        self.a.clear()
        self.ref.clear()

    @invariant()
    def matches_reference(self):
        if self.a is not None:
            assert_matches_dense(self.a, self.ref.values, self.ref.active)
            assert self.a.memory_usage() > 0


def check_leaf_forms(adapter) -> None:
    """Every leaf holds weights, in the form its cost allows: a dense leaf (per-cell masks)
    holds more than 8 weights per active cell, a sparse one (in-block offsets) fewer than 12;
    in between a leaf keeps the form it had."""
    n, k, dense = (np.asarray(x) for x in adapter._c.leaf_stats())
    assert (n > 0).all() and (k > 0).all() and (n >= k).all() and (n <= 64 * k).all()
    dense = dense.astype(bool)
    assert (n[dense] > 8 * k[dense]).all(), (n[dense], k[dense])
    assert (n[~dense] < 12 * k[~dense]).all(), (n[~dense], k[~dense])
    if dense.any():
        event("a dense leaf")
    if dense.any() and (~dense).any():
        event("dense and sparse leaves together")


class UnstructuredMachine(AdapterMachine):
    block_shapes = [(1, 1)]

    @rule(data=st.data())
    def fill_then_thin(self, data):
        # Whole 64-column blocks of some rows: their leaf turns dense; then most of the
        # weights go, and it turns sparse again.
        b = data.draw(st.integers(0, (self.cols - 1) // 64))
        r0 = data.draw(st.integers(0, self.rows - 1))
        h = data.draw(st.integers(1, min(8, self.rows - r0)))
        rr, cc = (x.ravel() for x in np.indices((h, min(64, self.cols - 64 * b))))
        rr, cc = rr + r0, cc + 64 * b
        vals = np.arange(1, rr.size + 1, dtype=F32)
        self.a.batch_update(rr, cc, vals)
        self.ref.set(rr.tolist(), cc.tolist(), vals.tolist())
        check_leaf_forms(self.a)
        keep = data.draw(st.integers(1, 64), label="keep one weight in")
        gone = np.arange(rr.size) % keep != 0
        assert self.a.remove_weights(rr[gone], cc[gone]) == self.ref.remove(
            rr[gone].tolist(), cc[gone].tolist())

    @invariant()
    def leaves_keep_their_forms(self):
        if self.a is not None:
            check_leaf_forms(self.a)

    @rule(k=st.integers(0, 30))
    def top_k(self, k):
        r, c = np.nonzero(self.ref.active)
        v = self.ref.values[r, c]
        # Largest |w| first; ties go to the lowest row-major index.
        order = np.lexsort((np.arange(len(v)), -np.abs(v).astype(np.float64)))[:k]
        expect_values = np.zeros_like(self.ref.values)
        expect_active = np.zeros_like(self.ref.active)
        expect_active[r[order], c[order]] = True
        expect_values[r[order], c[order]] = v[order]
        before = self.a.active_weights()
        out = self.a.top_k(k)
        assert out is not self.a
        assert_matches_dense(out, expect_values, expect_active)
        for x, y in zip(before, self.a.active_weights()):
            np.testing.assert_array_equal(x, y)


class SetMemberMachine(UnstructuredMachine):
    """The adapter is the middle member of an AdapterSet: every operation on it must leave
    the members before and after it (sharing its tree) as they were."""

    @initialize(data=st.data())
    def create(self, data):
        rows = data.draw(st.integers(1, 70), label="rows")
        cols = data.draw(st.sampled_from([1, 63, 64, 65, 130, 300, 1100]), label="cols")
        self.set = hyprvdb.AdapterSet({"before": (37, 100), "it": (rows, cols),
                                       "after": (5, 4100)})
        self.neighbours = {}
        for i, name in enumerate(("before", "after")):
            m = self.set[name]
            rng = np.random.default_rng(i)
            r = rng.integers(0, m.shape[0], 300)
            c = rng.integers(0, m.shape[1], 300)
            m.batch_update(r, c, rng.standard_normal(300).astype(F32))
            self.neighbours[name] = m.active_weights()
        self.a = self.set["it"]
        self.ref = Reference(rows, cols)

    @invariant()
    def neighbours_unchanged(self):
        if self.a is None:
            return
        for name, before in self.neighbours.items():
            for x, y in zip(before, self.set[name].active_weights()):
                np.testing.assert_array_equal(x, y)
        total = sum(m.memory_usage() for m in self.set.values())
        assert abs(total - self.set.memory_usage()) <= len(self.set)  # shares are rounded


class TileMachine(AdapterMachine):
    block_shapes = [(2, 4), (8, 64), (1, 8), (4, 1), (3, 5)]


# The machines find the most, so they get more examples than the profile's one-shot tests.
TestUnstructuredMachine = UnstructuredMachine.TestCase
TestUnstructuredMachine.settings = settings(
    settings.default, max_examples=3 * settings.default.max_examples, stateful_step_count=25)
TestSetMemberMachine = SetMemberMachine.TestCase
TestSetMemberMachine.settings = settings(
    settings.default, max_examples=2 * settings.default.max_examples, stateful_step_count=25)
TestTileMachine = TileMachine.TestCase
TestTileMachine.settings = settings(
    settings.default, max_examples=3 * settings.default.max_examples, stateful_step_count=20)


# ---------------------------------------------------------------------- one-shot properties
shapes_st = st.tuples(st.integers(1, 70), st.integers(1, 300))


@st.composite
def dense_case(draw, block_shape=(1, 1)):
    bh, bw = block_shape
    rows = bh * draw(st.integers(1, 70 // bh))
    cols = bw * draw(st.integers(1, 300 // bw))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]))
    rng = np.random.default_rng(seed)
    vals = rng.standard_normal((rows, cols)).astype(F32)
    vals[rng.random((rows, cols)) >= density] = 0
    return vals


@given(dense=dense_case(), tol=tolerances_st)
def test_from_dense_matches_reference(dense, tol):
    a = hyprvdb.SparseAdapter.from_dense(dense, tolerance=tol)
    active = np.abs(dense) > F32(tol)
    expected = np.where(active, dense, F32(0))
    assert_matches_dense(a, expected, active)
    # Round trips through the other conversions.
    assert_matches_dense(hyprvdb.SparseAdapter.from_scipy(a.to_scipy("coo")), expected, active)
    assert_matches_dense(hyprvdb.SparseAdapter.from_dict(a.to_dict(), shape=a.shape),
                         expected, active)


@given(data=st.data(), bs=st.sampled_from([(1, 2), (2, 1), (2, 2), (3, 4)]),
       tol=tolerances_st)
def test_from_dense_tile_mode_activates_whole_blocks(data, bs, tol):
    bh, bw = bs
    dense = data.draw(dense_case(bs))
    rows, cols = dense.shape
    a = hyprvdb.SparseAdapter.from_dense(dense, tolerance=tol, block_shape=bs)
    big = (np.abs(dense) > F32(tol)).reshape(rows // bh, bh, cols // bw, bw).any(axis=(1, 3))
    active = np.repeat(np.repeat(big, bh, axis=0), bw, axis=1)
    assert_matches_dense(a, np.where(active, dense, F32(0)), active)


@given(shape=shapes_st, data=st.data())
def test_batch_update_last_wins_add_weights_sums(shape, data):
    rows, cols = shape
    r, c = coord_lists(data.draw, rows, cols, max_size=200)
    v = data.draw(st.lists(values_st, min_size=len(r), max_size=len(r)))
    a = hyprvdb.SparseAdapter(rows, cols)
    ref = Reference(rows, cols)
    a.batch_update(r, c, v)
    ref.set(r, c, v)
    assert_matches_dense(a, ref.values, ref.active)
    a.add_weights(r, c, v)
    ref.add(r, c, v)
    assert_matches_dense(a, ref.values, ref.active)
