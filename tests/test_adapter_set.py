"""AdapterSet: many adapters in one OpenVDB tree, each a SparseAdapter view; the 64-column
cells of unstructured adapters and the forms of their leaves."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import hyprvdb
from hyprvdb import AdapterSet, CorruptFileError, ForeignFileError, SparseAdapter
from conftest import assert_matches_dense

MINILM = {"q": (384, 384), "ff1": (1536, 384), "ff2": (384, 1536)}


def random_weights(shape, n, seed):
    rng = np.random.default_rng(seed)
    flat = rng.choice(shape[0] * shape[1], size=n, replace=False)
    v = rng.standard_normal(n).astype(np.float32)
    v[v == 0] = 1.0
    return flat // shape[1], flat % shape[1], v


def dense_of(shape, r, c, v):
    d = np.zeros(shape, np.float32)
    d[r, c] = v
    return d, d != 0


def filled_set(n=400):
    s = AdapterSet(MINILM)
    data = {}
    for i, (name, shape) in enumerate(MINILM.items()):
        data[name] = random_weights(shape, n, i)
        s[name].batch_update(*data[name])
    return s, data


# ---------------------------------------------------------------------------- the set
def test_members_are_views_of_one_tree():
    s, data = filled_set()
    assert list(s) == list(MINILM) and len(s) == 3 and "q" in s
    for name, (r, c, v) in data.items():
        m = s[name]
        assert isinstance(m, SparseAdapter) and m.name == name and m.shape == MINILM[name]
        assert_matches_dense(m, *dense_of(MINILM[name], r, c, v))
    assert s.active_count() == sum(len(v) for _, _, v in data.values())
    # Writes through a member are writes to the set, and touch no other member.
    s["ff1"].batch_update([1535], [383], [7.0])
    assert s.active_count() == 1201
    s["q"].clear()
    assert s["q"].active_count() == 0 and s.active_count() == 801
    assert_matches_dense(s["ff2"], *dense_of(MINILM["ff2"], *data["ff2"]))


def test_memory_is_shared_and_shares_add_up():
    s, _ = filled_set()
    total = s.memory_usage()
    parts = [m.memory_usage() for m in s.values()]
    assert abs(sum(parts) - total) <= len(s)
    assert all(p > 0 for p in parts)
    # One tree is smaller than a tree per matrix for the same weights.
    separate = sum(m.copy().memory_usage() for m in s.values())
    assert total < separate
    assert repr(s).startswith("AdapterSet(3 members, active=1200")


def test_copy_is_independent():
    s, data = filled_set()
    dup = s.copy()
    before = s["q"].get_weight(0, 0)
    s["q"].batch_update([0], [0], [99.0])
    dup["ff1"].clear()
    assert dup["q"].get_weight(0, 0) == before != 99.0
    assert s["ff1"].active_count() == 400 and dup["ff1"].active_count() == 0
    member_copy = s["ff2"].copy()      # a member's copy is a standalone adapter
    member_copy.clear()
    assert s["ff2"].active_count() == 400


def test_save_load_round_trip(tmp_path):
    s, data = filled_set()
    s["ff2"].clear()
    s.save(tmp_path / "set.vdb")
    back = AdapterSet.load(tmp_path / "set.vdb")
    assert list(back) == list(s)
    for name in s:
        assert back[name].shape == s[name].shape
        for x, y in zip(back[name].active_weights(), s[name].active_weights()):
            np.testing.assert_array_equal(x, y)
    # A set file is not a SparseAdapter file, and the other way round.
    with pytest.raises(ForeignFileError, match="adapter_set/1"):
        SparseAdapter.load(tmp_path / "set.vdb")
    s["q"].save(tmp_path / "one.vdb")
    with pytest.raises(ForeignFileError, match="sparse_adapter/1"):
        AdapterSet.load(tmp_path / "one.vdb")


def test_damaged_set_files_are_refused(tmp_path):
    s, _ = filled_set(50)
    s.save(tmp_path / "set.vdb")
    data = (tmp_path / "set.vdb").read_bytes()
    (tmp_path / "cut.vdb").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError):
        AdapterSet.load(tmp_path / "cut.vdb")


@pytest.mark.skipif(shutil.which("vdb_print") is None, reason="vdb_print is not installed")
def test_vdb_print_reads_every_member(tmp_path):
    s, _ = filled_set(30)
    s["ff2"].batch_update([0], [0], [1.0])
    s.save(tmp_path / "set.vdb")
    out = subprocess.run(["vdb_print", "-l", str(tmp_path / "set.vdb")], capture_output=True,
                         text=True, check=True).stdout
    grids = {}
    for part in out.split("Name: ")[1:]:
        name = part.splitlines()[0].strip()
        voxels = int(part.split("Number of active voxels:")[1].split()[0].replace(",", ""))
        grids[name] = (voxels, f"hyprvdb_rows: {s[name].shape[0]}" in part)
    assert grids == {"q": (30, True), "ff1": (30, True), "ff2": (31, True)}


def test_from_adapters_and_errors():
    a = SparseAdapter(10, 70)
    a.batch_update([1, 9], [2, 69], [1.0, -2.0])
    s = AdapterSet.from_adapters({"a": a})
    assert s["a"].to_dict() == a.to_dict()
    with pytest.raises(ValueError, match="block_shape"):
        AdapterSet.from_adapters({"t": SparseAdapter(8, 64, block_shape=(8, 64))})
    with pytest.raises(TypeError, match="adapters\\['x'\\] must be a SparseAdapter"):
        AdapterSet.from_adapters({"x": 3})
    with pytest.raises(ValueError, match="'a' is already a member"):
        s.add("a", 2, 2)
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        s.add("", 2, 2)
    with pytest.raises(TypeError, match="name must be a str"):
        s.add(3, 2, 2)
    with pytest.raises(ValueError, match="rows"):
        s.add("b", 0, 2)
    with pytest.raises(KeyError, match="'zz' is not a member of this set \\(members: 'a'\\)"):
        s["zz"]
    with pytest.raises(TypeError, match="shapes\\['x'\\] must be a pair"):
        AdapterSet({"x": 5})
    with pytest.raises(TypeError, match="shapes must be a mapping"):
        AdapterSet([("x", (1, 1))])
    with pytest.raises(ValueError, match="nothing to save"):
        AdapterSet().save("/nonexistent/never.vdb")
    with pytest.raises(IndexError, match=r"rows\[0\] = 10 is out of range for 10 rows"):
        s["a"].batch_update([10], [0], [1.0])


# ---------------------------------------------------------------------------- leaf forms
def forms(a):
    n, k, dense = (np.asarray(x) for x in a._c.leaf_stats())
    return n, k, dense.astype(bool)


def test_a_leaf_turns_dense_and_back_to_sparse():
    a = SparseAdapter(64, 64)        # one leaf: 64 rows of one 64-column cell
    a.batch_update(np.arange(64), np.zeros(64, np.int64), np.ones(64, np.float32))
    n, k, dense = forms(a)
    assert (n.tolist(), k.tolist(), dense.tolist()) == ([64], [64], [False])
    # Fill 16 cells completely: 16 * 64 + 48 weights in 64 cells, 16.75 per cell.
    r, c = (x.ravel() for x in np.indices((16, 64)))
    a.batch_update(r, c, np.full(r.size, 2.0, np.float32))
    n, k, dense = forms(a)
    assert (n.tolist(), k.tolist(), dense.tolist()) == ([1072], [64], [True])
    # Between 8 and 12 per cell a leaf keeps its form: thin to 9.5 per cell, still dense.
    gone = c >= 32
    a.remove_weights(r[gone & (r < 15)], c[gone & (r < 15)])
    n, k, dense = forms(a)
    assert n.tolist() == [1072 - 15 * 32] and dense.tolist() == [True]
    # At 8 or fewer per cell it is sparse again.
    a.remove_weights(r[(c >= 8) & (r < 15)], c[(c >= 8) & (r < 15)])
    n, k, dense = forms(a)
    assert dense.tolist() == [False] and n.tolist() == [64 + 63 + 15 * 7]
    expect = np.zeros((64, 64), np.float32)
    expect[:, 0] = 1.0
    expect[:16, :] = 2.0
    expect[:15, 8:] = 0.0
    assert_matches_dense(a, expect, expect != 0)


def test_one_percent_uniform_stays_sparse_and_compact():
    a = SparseAdapter(4096, 4096)
    r, c, v = random_weights((4096, 4096), 167_772, 0)
    a.batch_update(r, c, v)
    n, k, dense = forms(a)
    assert not dense.any() and n.sum() == 167_772 and len(n) == 64
    assert a.memory_usage() / a.active_count() < 8.0
    np.testing.assert_array_equal(a.get_weights(r, c), v)


@pytest.mark.parametrize("cols", [1, 63, 64, 65, 127, 129, 4097])
def test_edge_columns_of_cells(cols):
    # The last cell of a row may be partial; rows continue in the next cell index.
    rows = 40
    a = SparseAdapter(rows, cols)
    rr, cc = (x.ravel() for x in np.indices((rows, cols)))
    pick = (rr * 7 + cc * 3) % 5 == 0
    vals = (rr * cols + cc).astype(np.float32)[pick] + 1
    a.batch_update(rr[pick], cc[pick], vals)
    expect = np.zeros((rows, cols), np.float32)
    expect[rr[pick], cc[pick]] = vals
    assert_matches_dense(a, expect, expect != 0)
    assert a.optimize(float(vals.max()) / 2) == int((vals <= vals.max() / 2).sum())


def test_huge_sparse_matrices_cost_what_their_weights_cost():
    a = SparseAdapter(2**31 - 1, 2**31 - 1)
    a.batch_update([0, 2**31 - 2, 123456789], [2**31 - 2, 0, 987654321], [1.0, 2.0, 3.0])
    assert a.get_weights([0, 2**31 - 2, 123456789], [2**31 - 2, 0, 987654321]).tolist() == \
        [1.0, 2.0, 3.0]
    assert a.memory_usage() < 64 * 1024
    r, c, v = a.active_weights()
    assert r.tolist() == [0, 123456789, 2**31 - 2]


def test_the_fold_fills_leaves_then_nodes():
    core = hyprvdb._native.core()
    rng = np.random.default_rng(0)
    for g in [0, 1, 4095, 4096, 2**21 - 1, 2**21, 2**30 + 12345, 2**51 * 4096 - 1,
              *rng.integers(0, 2**62, 50).tolist()]:
        x, y, z = core.fold(g)
        assert min(x, y, z) >= 0 and max(x, y, z) < 2**31
        assert core.unfold(x, y, z) == g
    # The low 12 bits are OpenVDB's own offset inside a 16^3 leaf (x, y, z: 4 bits each) ...
    x, y, z = core.fold(0x5A7)
    assert (x, y, z) == (0x5, 0xA, 0x7)
    # ... and 512 consecutive leaves fill one lower node (8^3 children of 16^3 leaves).
    origins = {tuple(v // 16 for v in core.fold(leaf << 12)) for leaf in range(512)}
    assert len(origins) == 512
    assert {tuple(v // 128 for v in core.fold(leaf << 12)) for leaf in range(512)} == {(0, 0, 0)}
