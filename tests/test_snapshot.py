"""Tests of hyprvdb.snapshot: NanoVDB index-grid snapshots written with numpy alone.

Every snapshot is compared with a dense numpy reference, and the official NanoVDB 32.4.2
headers (``tests/nanovdb_check/check.cpp``: ``io::readGrid``, ``isValid(grid, true, true)``,
``ReadAccessor``) check the files when a C++ compiler and the headers are present.
"""

from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from hyprvdb.snapshot import _nanovdb as N
from hyprvdb.snapshot import _snapshot as snapshot_module
from hyprvdb._errors import CorruptFileError, ForeignFileError, HyprVDBError
from hyprvdb.snapshot import Snapshot

HERE = Path(__file__).parent
CHECK_SRC = HERE / "nanovdb_check" / "check.cpp"

SHAPES = [
    (1, 1), (1, 1000), (7, 9), (9, 65), (64, 64), (130, 1030), (384, 384), (1536, 384),
    (384, 1536), (4097, 70), (3, 40000),  # the last two need two root tiles (upper nodes)
]


# ----------------------------------------------------------------------------- helpers
def random_coo(rng: np.random.Generator, shape: tuple[int, int], n: int):
    n = min(n, shape[0] * shape[1])
    flat = rng.choice(shape[0] * shape[1], size=n, replace=False)
    rows, cols = np.divmod(flat, shape[1])
    return rows, cols, rng.standard_normal(n).astype(np.float32)


def dense(shape, rows, cols, values) -> np.ndarray:
    d = np.zeros(shape, dtype=np.float32)
    d[rows, cols] = values
    return d


def check_snapshot(snap: Snapshot, shape, rows, cols, values) -> None:
    """Compare every read of ``snap`` with the numpy reference and check its invariants."""
    ref = dense(shape, rows, cols, values)
    nnz = len(rows)
    assert snap.shape == shape and snap.nnz == nnz
    # buffer and values view
    buf = snap.buffer
    assert buf.dtype == np.uint8 and buf.ndim == 1 and not buf.flags.writeable
    assert buf.ctypes.data % 32 == 0 and snap.nbytes == buf.nbytes == snap.layout.grid_size
    assert snap.values.dtype == np.float32 and snap.values.shape == (nnz + 1,)
    assert np.shares_memory(snap.values, buf) and not snap.values.flags.writeable
    assert snap.values[0] == 0
    # NanoVDB's checksum and hyprvdb's blind-data CRC match the bytes
    assert snap.checksum == N.checksum(buf, snap.layout)
    assert int(N.grid_header(buf)["data2"]) == N.blind_crc(buf, snap.layout)
    # active weights, row-major
    r, c, v = snap.active_weights()
    order = np.lexsort((cols, rows))
    assert r.dtype == np.int64 and c.dtype == np.int64 and v.dtype == np.float32
    np.testing.assert_array_equal(r, rows[order])
    np.testing.assert_array_equal(c, cols[order])
    np.testing.assert_array_equal(v, values[order])
    # CSR against the dense reference
    indptr, indices, data = snap.to_csr_arrays()
    assert (indptr.dtype, indices.dtype, data.dtype) == (np.int64, np.int32, np.float32)
    assert indptr.shape == (shape[0] + 1,)
    rebuilt = np.zeros(shape, dtype=np.float32)
    row_of = np.repeat(np.arange(shape[0]), np.diff(indptr))
    rebuilt[row_of, indices] = data
    np.testing.assert_array_equal(rebuilt, ref)
    np.testing.assert_array_equal(np.diff(indptr), np.count_nonzero(ref != 0, axis=1)
                                  if (values != 0).all() else np.bincount(rows, minlength=shape[0]))
    # lookup and index_of on every weight (small) or on the active ones plus a random sample
    if shape[0] * shape[1] <= 200_000:
        qr, qc = (a.reshape(-1) for a in np.indices(shape))
    else:
        rng = np.random.default_rng(0)
        qr = np.concatenate((rows, rng.integers(0, shape[0], 5000)))
        qc = np.concatenate((cols, rng.integers(0, shape[1], 5000)))
    got = snap.lookup(qr, qc)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref[qr, qc])
    idx = snap.index_of(qr, qc)
    assert idx.dtype == np.int64
    active = np.zeros(shape, dtype=bool)
    active[rows, cols] = True
    np.testing.assert_array_equal(idx > 0, active[qr, qc])
    np.testing.assert_array_equal(snap.values[idx], got)
    # indices are the grid's leaf order: 1 + rank in (root key, upper slot, lower slot, offset)
    if nnz:
        own = snap.index_of(rows, cols)
        keys = N.sort_key(rows, cols >> 3, cols & 7)
        np.testing.assert_array_equal(own, 1 + np.argsort(np.argsort(keys)))
        assert snap.same_topology(rows, cols)


# ------------------------------------------------------------------- NanoVDB's checker
@pytest.fixture(scope="session")
def nanovdb_check(tmp_path_factory):
    """The compiled tests/nanovdb_check/check.cpp, built once per test session."""
    include = Path(os.environ.get("NANOVDB_INCLUDE", "/usr/include"))
    header = include / "nanovdb" / "NanoVDB.h"
    if not header.exists():
        pytest.skip(f"NanoVDB headers not found ({header}); Debian: apt-get install libnanovdb-dev")
    text = header.read_text(errors="replace")
    major = re.search(r"#define NANOVDB_MAJOR_VERSION_NUMBER (\d+)", text)
    minor = re.search(r"#define NANOVDB_MINOR_VERSION_NUMBER (\d+)", text)
    if not major or (int(major.group(1)), int(minor.group(1))) != (32, 4):
        pytest.skip("the NanoVDB headers are not version 32.4, whose index-grid layout "
                    "hyprvdb writes")
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the NanoVDB checker")
    exe = tmp_path_factory.mktemp("nanovdb_check") / "check"
    done = subprocess.run([cxx, "-std=c++17", "-O1", "-pthread", f"-I{include}", str(CHECK_SRC),
                           "-o", str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, f"check.cpp does not compile:\n{done.stderr[-4000:]}"
    return exe


@pytest.fixture(scope="session")
def nanovdb_current(tmp_path_factory):
    """tests/nanovdb_check/check_current.cpp built against NanoVDB 32.9's headers
    (../shared/third_party/nanovdb-32.9 beside the checkout, or $NANOVDB_CURRENT_INCLUDE)."""
    cands = [os.environ.get("NANOVDB_CURRENT_INCLUDE"),
             HERE.parent.parent / "shared" / "third_party" / "nanovdb-32.9",
             "/work/shared/third_party/nanovdb-32.9"]
    include = next((Path(c) for c in cands if c and (Path(c) / "nanovdb" / "NanoVDB.h").is_file()),
                   None)
    if include is None:
        pytest.skip("NanoVDB 32.9 headers not found (../shared/third_party/nanovdb-32.9 or "
                    "$NANOVDB_CURRENT_INCLUDE): current NanoVDB's reader is not checked here")
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the NanoVDB 32.9 checker")
    exe = tmp_path_factory.mktemp("nanovdb_current") / "check_current"
    done = subprocess.run([cxx, "-std=c++17", "-O1", "-pthread", f"-I{include}",
                           str(CHECK_SRC.with_name("check_current.cpp")), "-o", str(exe)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"check_current.cpp does not compile:\n{done.stderr[-4000:]}"
    return exe


def run_current(exe: Path, path: Path, lines: list[str], *, set_snapshot: bool = False) -> dict:
    """Run the 32.9 checker; its report, and index / active / bits arrays of its answers."""
    args = [str(exe)] + (["--set"] if set_snapshot else []) + [str(path)]
    done = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True,
                          timeout=300)
    out: dict = {"rc": done.returncode, "stderr": done.stderr[-2000:]}
    at = []
    for line in done.stdout.splitlines():
        head, _, rest = line.partition(" ")
        if head == "at":
            at.append(rest.split())
        elif head:
            out[head] = rest
    out["index"] = np.array([int(a[2]) for a in at], dtype=np.int64)
    out["active"] = np.array([a[3] == "1" for a in at], dtype=bool)
    out["bits"] = np.array([int(a[4], 16) for a in at], dtype=np.uint32)
    return out


def run_check(exe: Path, path: Path, rows=(), cols=()) -> dict:
    """Run the checker on a file; parse its report and its per-coordinate answers."""
    coords = "".join(f"{r} {c}\n" for r, c in zip(np.asarray(rows).tolist(),
                                                   np.asarray(cols).tolist()))
    done = subprocess.run([str(exe), str(path)], input=coords, capture_output=True, text=True,
                          timeout=300)
    out = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
    at = []
    for line in done.stdout.splitlines():
        head, _, rest = line.partition(" ")
        if head == "at":
            at.append(rest.split())
        else:
            out[head] = rest
    out["index"] = np.array([int(a[2]) for a in at], dtype=np.int64)
    out["active"] = np.array([a[3] == "1" for a in at], dtype=bool)
    out["bits"] = np.array([int(a[4], 16) for a in at], dtype=np.uint32)
    return out


def assert_nanovdb_agrees(exe: Path, snap: Snapshot, path: Path, rows, cols) -> dict:
    snap.save_nvdb(path, version="32.4")
    rep = run_check(exe, path, rows, cols)
    assert rep.get("valid") == "1", rep
    assert rep.get("structure") == "ok", rep
    stored, full = re.match(r"stored (\w+) full (\w+)", rep["checksum"]).groups()
    assert int(stored, 16) == int(full, 16) == snap.checksum
    assert rep["rc"] == 0, rep
    lay = snap.layout
    assert rep["counts"] == (f"voxels {snap.nnz} values {snap.nnz + 1} leaves {lay.leaf_count} "
                             f"lowers {lay.lower_count} uppers {lay.upper_count} "
                             f"tiles {lay.tile_count}")
    step = -1 if snap.step is None else snap.step
    assert rep["meta"] == f"1 {snap.shape[0]} {snap.shape[1]} {step}"
    assert rep["version"] == "32.4.2"
    assert rep["type"] == f"Index class INDEX name {snap.name}"
    np.testing.assert_array_equal(rep["index"], snap.index_of(rows, cols))
    np.testing.assert_array_equal(rep["active"], snap.index_of(rows, cols) > 0)
    np.testing.assert_array_equal(rep["bits"], snap.lookup(rows, cols).view(np.uint32))
    return rep


def probe_coords(rng, shape, rows, cols, k=300):
    """Active weights, random ones, and the matrix corners and edges."""
    pick = rng.choice(len(rows), size=min(k, len(rows)), replace=False) if len(rows) else []
    rr = [np.asarray(rows)[pick], rng.integers(0, shape[0], k),
          [0, 0, shape[0] - 1, shape[0] - 1]]
    cc = [np.asarray(cols)[pick], rng.integers(0, shape[1], k),
          [0, shape[1] - 1, 0, shape[1] - 1]]
    return np.concatenate(rr).astype(np.int64), np.concatenate(cc).astype(np.int64)


# ------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.002, 0.05])
def test_round_trip_matches_numpy(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    rows, cols, values = random_coo(rng, shape, max(1, int(shape[0] * shape[1] * density)))
    snap = Snapshot.from_coo(rows, cols, values, shape, step=3)
    check_snapshot(snap, shape, rows, cols, values)
    assert snap.step == 3 and snap.name == "lora_delta"


def test_input_order_does_not_matter():
    rng = np.random.default_rng(1)
    rows, cols, values = random_coo(rng, (300, 500), 3000)
    a = Snapshot.from_coo(rows, cols, values, (300, 500))
    p = rng.permutation(len(rows))
    b = Snapshot.from_coo(rows[p], cols[p], values[p], (300, 500))
    np.testing.assert_array_equal(a.buffer, b.buffer)


def test_full_and_single_weight_matrices():
    shape = (17, 130)
    rows, cols = (a.reshape(-1) for a in np.indices(shape))
    values = np.arange(1, rows.size + 1, dtype=np.float32)
    check_snapshot(Snapshot.from_coo(rows, cols, values, shape), shape, rows, cols, values)
    one = Snapshot.from_coo([5], [129], [2.5], shape)
    check_snapshot(one, shape, np.array([5]), np.array([129]), np.array([2.5], np.float32))
    assert one.layout.leaf_count == 1


def test_empty_matrix():
    snap = Snapshot.from_coo([], [], [], (5, 70))
    e = np.zeros(0, dtype=np.int64)
    check_snapshot(snap, (5, 70), e, e, np.zeros(0, np.float32))
    assert snap.layout.tile_count == 0 and snap.values.tolist() == [0.0]
    assert snap.checksum >> 32 == 0xFFFFFFFF  # an empty tree has no node checksum
    indptr, indices, data = snap.to_csr_arrays()
    assert indptr.tolist() == [0] * 6 and indices.size == data.size == 0
    assert snap.same_topology([], [])
    assert not snap.same_topology([0], [0])


def test_zero_and_nonfinite_values_are_stored_as_given():
    snap = Snapshot.from_coo([0, 1], [0, 1], [0.0, -0.0], (2, 2))
    assert snap.nnz == 2 and (snap.index_of([0, 1], [0, 1]) > 0).all()
    assert snap.lookup([1, 0], [1, 1]).view(np.uint32).tolist() == [0x80000000, 0]  # -0.0 kept
    with pytest.raises(ValueError, match=r"values\[1\] = .*nan.* is not finite"):
        Snapshot.from_coo([0, 1], [0, 1], [1.0, np.nan], (2, 2))
    s = Snapshot.from_coo([0, 1], [0, 1], [np.inf, np.nan], (2, 2), allow_nonfinite=True)
    assert np.isinf(s.lookup([0], [0])[0]) and np.isnan(s.lookup([1], [1])[0])


def test_float64_values_round_to_float32():
    s = Snapshot.from_coo([0], [0], np.array([0.1]), (1, 1))
    assert s.lookup([0], [0])[0] == np.float32(0.1)


def test_index_layout_facts():
    """values[0] is the background; leaves index 8 rows x 64 columns; index grid fields."""
    s = Snapshot.from_coo([0, 7, 8, 0], [0, 63, 0, 64], [1, 2, 3, 4], (16, 128), name="q_proj")
    # leaves (rows 0-7, cols 0-63), (rows 0-7, cols 64-127), (rows 8-15, cols 0-63)
    assert s.layout.leaf_count == 3
    grid = N.grid_header(s.buffer)
    assert int(grid["grid_type"]) == N.GRID_TYPE_INDEX
    assert int(grid["grid_class"]) == N.GRID_CLASS_INDEX
    assert int(grid["data1"]) == s.nnz + 1  # NanoGrid<ValueIndex>::valueCount()
    assert list(grid["voxel_size"]) == [1.0, 1.0, 1.0]
    assert list(grid["world_bbox"]) == [0.0, 0.0, 0.0, 9.0, 9.0, 8.0]  # cells: max index + 1
    assert bytes(grid["grid_name"]) == b"q_proj" and s.name == "q_proj"
    root = s.buffer[N.ROOT_OFF:N.TILES_OFF].view(N.ROOT_DT)[0]
    assert list(root["bbox"]) == [0, 0, 0, 8, 8, 7] and int(root["background"]) == 0
    leaves = N.leaves_view(s.buffer, s.layout)
    assert (leaves["flags"] == 16 | 2).all() and (leaves["stats_off"] == 0).all()
    assert leaves["value_off"].tolist() == [1, 3, 4]
    assert s.index_of([0, 7, 0, 8], [0, 63, 64, 0]).tolist() == [1, 2, 3, 4]
    meta = N.meta_view(s.buffer, s.layout).tolist()
    assert meta == [1, 16, 128, -1]


def test_golden_bytes():
    """Pins the format: a change here is a change of the on-disk layout."""
    s = Snapshot.from_coo([0, 3, 3], [1, 70, 5], [0.5, -2.0, 4.0], (4, 100), step=7)
    assert s.nbytes == 305952
    assert s.checksum == 0x6C238D5559C802F1
    assert zlib.crc32(s.buffer) == zlib.crc32(bytes(s.buffer))  # buffer is plain bytes


# ---------------------------------------------------------------------------- reads
def test_lookup_and_index_of_accept_any_integer_dtype():
    s = Snapshot.from_coo([1, 2], [3, 4], [5, 6], (4, 8))
    for dt in (np.int8, np.uint16, np.int32, np.uint64):
        np.testing.assert_array_equal(s.lookup(np.array([1, 2, 0], dt), np.array([3, 4, 0], dt)),
                                      [5, 6, 0])
    assert s.lookup(2, 4).tolist() == [6.0]
    assert s.index_of([], []).shape == (0,)


def test_reads_refuse_bad_coordinates():
    s = Snapshot.from_coo([1], [3], [5], (4, 8))
    with pytest.raises(IndexError, match=r"rows\[1\] = 4 is out of range for 4 rows "
                                         r"\(valid: 0\.\.3\)"):
        s.lookup([0, 4], [0, 0])
    with pytest.raises(IndexError, match=r"cols\[0\] = -1 is out of range for 8 columns"):
        s.index_of([0], [-1])
    with pytest.raises(TypeError, match="rows must hold integers, got dtype float64"):
        s.lookup([0.0], [1])
    with pytest.raises(ValueError, match="rows and cols must have the same length, got 2 and 1"):
        s.lookup([0, 1], [1])


def test_active_weights_and_csr_are_fresh_arrays():
    s = Snapshot.from_coo([2, 0], [1, 3], [1.0, 2.0], (3, 4))
    r, c, v = s.active_weights()
    r[0] = 99
    v[0] = 99
    indptr, indices, data = s.to_csr_arrays()
    indptr[0] = 5
    data[0] = 5
    assert s.active_weights()[0].tolist() == [0, 2]
    assert s.to_csr_arrays()[0].tolist() == [0, 1, 1, 2]
    assert s.to_csr_arrays()[2].tolist() == [2.0, 1.0]


def test_same_topology():
    rng = np.random.default_rng(3)
    rows, cols, values = random_coo(rng, (50, 300), 400)
    s = Snapshot.from_coo(rows, cols, values, (50, 300))
    p = rng.permutation(len(rows))
    assert s.same_topology(rows[p], cols[p])
    assert not s.same_topology(rows[1:], cols[1:])
    dup_r, dup_c = rows.copy(), cols.copy()
    dup_r[0], dup_c[0] = dup_r[1], dup_c[1]
    assert not s.same_topology(dup_r, dup_c)
    other = (rows[0] + 1) % 50
    while s.index_of([other], [cols[0]])[0]:
        other = (other + 1) % 50
    moved = rows.copy()
    moved[0] = other
    assert not s.same_topology(moved, cols)
    with pytest.raises(IndexError, match="out of range"):
        s.same_topology([50], [0])


# --------------------------------------------------------------------------- with_values
def test_with_values_equals_a_fresh_build():
    rng = np.random.default_rng(4)
    shape = (1536, 384)
    rows, cols, values = random_coo(rng, shape, 6000)
    s = Snapshot.from_coo(rows, cols, values, shape, step=1)
    pick = rng.choice(len(rows), 300, replace=False)
    new = rng.standard_normal(300).astype(np.float32)
    t = s.with_values(rows[pick], cols[pick], new, step=2)
    updated = values.copy()
    updated[pick] = new
    fresh = Snapshot.from_coo(rows, cols, updated, shape, step=2)
    np.testing.assert_array_equal(t.buffer, fresh.buffer)  # same bytes, checksums included
    check_snapshot(t, shape, rows, cols, updated)
    check_snapshot(s, shape, rows, cols, values)  # the original is untouched
    assert t.step == 2 and s.step == 1
    assert t.layout is s.layout  # topology shared, not rebuilt
    assert t.checksum >> 32 == s.checksum >> 32  # node CRCs do not cover values
    assert s.with_values([], [], []).step == 1
    assert s.with_values([], [], [], step=None).step is None


def test_with_values_refuses_inactive_and_repeated_coordinates():
    s = Snapshot.from_coo([0, 1, 2], [0, 1, 2], [1, 2, 3], (3, 3))
    with pytest.raises(ValueError, match=r"\(rows\[1\], cols\[1\]\) = \(0, 1\) is not an active "
                                         r"weight of this snapshot"):
        s.with_values([1, 0, 2], [1, 1, 0], [0, 0, 0])
    with pytest.raises(ValueError, match=r"\(rows\[2\], cols\[2\]\) = \(1, 1\) repeats "
                                         r"\(rows\[0\], cols\[0\]\)"):
        s.with_values([1, 2, 1], [1, 2, 1], [0, 0, 0])
    with pytest.raises(ValueError, match="same length"):
        s.with_values([1], [1], [1, 2])
    with pytest.raises(IndexError, match=r"rows\[0\] = 3 is out of range"):
        s.with_values([3], [0], [1])
    with pytest.raises(ValueError, match="not finite"):
        s.with_values([1], [1], [np.inf])
    assert s.with_values([1], [1], [np.inf], allow_nonfinite=True).lookup([1], [1])[0] == np.inf
    assert s.lookup([1], [1])[0] == 2


# ------------------------------------------------------------------------ adapters
class FakeAdapter:
    def __init__(self, shape, rows, cols, values, name="adapter_x"):
        self.shape, self.name = shape, name
        self._w = (np.asarray(rows), np.asarray(cols), np.asarray(values, np.float32))

    def active_weights(self):
        return self._w


def test_from_adapter_is_duck_typed():
    a = FakeAdapter((10, 20), [1, 9], [19, 0], [3.0, np.nan], name="layer0.q")
    s = Snapshot.from_adapter(a, step=5)
    assert (s.shape, s.step, s.name, s.nnz) == ((10, 20), 5, "layer0.q", 2)
    assert np.isnan(s.lookup([9], [0])[0])  # the adapter's own policy on NaN is kept
    with pytest.raises(TypeError, match="adapter must have .shape and .active_weights"):
        Snapshot.from_adapter(object())


def test_from_sparse_adapter():
    hyprvdb = pytest.importorskip("hyprvdb")
    try:
        a = hyprvdb.SparseAdapter(16, 130)
    except ImportError as exc:  # the OpenVDB core is not built here
        pytest.skip(str(exc))
    a.batch_update([0, 3, 15], [1, 129, 64], [0.5, -2.0, 3.0])
    s = Snapshot.from_adapter(a, step=0)
    check_snapshot(s, (16, 130), *a.active_weights())


# ----------------------------------------------------------------------- bad input
def test_from_coo_messages():
    with pytest.raises(IndexError, match=r"rows\[1\] = 4 is out of range for 4 rows "
                                         r"\(valid: 0\.\.3\)"):
        Snapshot.from_coo([0, 4], [0, 0], [1, 1], (4, 5))
    with pytest.raises(IndexError, match=r"cols\[0\] = 5 is out of range for 5 columns "
                                         r"\(valid: 0\.\.4\)"):
        Snapshot.from_coo([0], [5], [1], (4, 5))
    with pytest.raises(ValueError, match=r"\(rows\[3\], cols\[3\]\) = \(2, 3\) repeats "
                                         r"\(rows\[1\], cols\[1\]\); each weight must appear once"):
        Snapshot.from_coo([0, 2, 1, 2], [0, 3, 1, 3], [1, 2, 3, 4], (4, 5))
    with pytest.raises(ValueError, match="rows and cols must have the same length, got 2 and 1"):
        Snapshot.from_coo([0, 1], [0], [1, 2], (4, 5))
    with pytest.raises(ValueError, match="rows and values must have the same length"):
        Snapshot.from_coo([0, 1], [0, 1], [1], (4, 5))
    with pytest.raises(TypeError, match="cols must hold integers, got dtype float64"):
        Snapshot.from_coo([0], [0.5], [1], (4, 5))
    with pytest.raises(TypeError, match="values must hold real numbers"):
        Snapshot.from_coo([0], [0], ["a"], (4, 5))
    with pytest.raises(ValueError, match="shape\\[0\\] must be positive, got 0"):
        Snapshot.from_coo([], [], [], (0, 5))
    with pytest.raises(ValueError, match=r"shape\[1\] must be in 1..2147483647, got 2147483648"):
        Snapshot.from_coo([], [], [], (1, 2**31))
    with pytest.raises(TypeError, match="shape must be a pair of ints"):
        Snapshot.from_coo([], [], [], 5)
    with pytest.raises(TypeError, match="shape\\[0\\] must be an int, got float 4.0"):
        Snapshot.from_coo([], [], [], (4.0, 5))
    with pytest.raises(ValueError, match=r"step must be in 0..2\*\*63 - 1 \(it is kept as an int64\), got -1"):
        Snapshot.from_coo([], [], [], (4, 5), step=-1)
    with pytest.raises(TypeError, match="step must be an int or None, got bool True"):
        Snapshot.from_coo([], [], [], (4, 5), step=True)
    with pytest.raises(ValueError, match="name must be at most 255 bytes of UTF-8"):
        Snapshot.from_coo([], [], [], (4, 5), name="x" * 256)
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        Snapshot.from_coo([], [], [], (4, 5), name="")
    with pytest.raises(ValueError, match="must not contain NUL"):
        Snapshot.from_coo([], [], [], (4, 5), name="a\0b")
    with pytest.raises(TypeError, match="build a Snapshot with Snapshot.from_coo"):
        Snapshot()


def test_largest_coordinates():
    shape = (2**31 - 1, 2**31 - 1)
    rows = np.array([0, 2**31 - 2, 5000, 2**31 - 2])
    cols = np.array([2**31 - 2, 0, 123456, 2**31 - 2])
    s = Snapshot.from_coo(rows, cols, [1, 2, 3, 4], shape)
    assert s.lookup(rows, cols).tolist() == [1, 2, 3, 4]
    assert s.lookup([2**31 - 2, 0], [2**31 - 3, 0]).tolist() == [0, 0]
    assert s.layout.tile_count == 4
    r, c, v = s.active_weights()
    assert r.tolist() == [0, 5000, 2**31 - 2, 2**31 - 2] and v.tolist() == [1, 3, 2, 4]


# ---------------------------------------------------------------------- .nvdb files
@pytest.mark.parametrize("version", ["32.9", "32.4", None])
def test_save_load_round_trip(tmp_path, version):
    rng = np.random.default_rng(5)
    shape = (4097, 300)
    rows, cols, values = random_coo(rng, shape, 5000)
    s = Snapshot.from_coo(rows, cols, values, shape, step=42, name="layers.3.mlp.up_proj")
    path = tmp_path / "s.nvdb"
    s.save_nvdb(path) if version is None else s.save_nvdb(path, version=version)
    t = Snapshot.load_nvdb(path)
    assert s.file_version is None and t.file_version == {"32.4": "32.4.2"}.get(version, "32.9.2")
    np.testing.assert_array_equal(t.buffer, s.buffer)
    assert (t.shape, t.step, t.name) == (shape, 42, "layers.3.mlp.up_proj")
    check_snapshot(t, shape, rows, cols, values)
    data = path.read_bytes()
    if version == "32.4":
        assert data[:8] == b"NanoVDB0" and data.endswith(bytes(s.buffer))
    else:  # current NanoVDB: its file and grid magic numbers, and the grid converted
        assert data[:8] == b"NanoVDB2" and data.endswith(bytes(N.to_current(s.buffer)))
        assert data[-s.nbytes:][:8] == b"NanoVDB1"
    assert len(data) == 16 + 176 + len("layers.3.mlp.up_proj") + 1 + s.nbytes
    # overwrite in place, atomically, leaving no temporary files
    u = s.with_values(rows[:3], cols[:3], [7, 8, 9], step=43)
    u.save_nvdb(str(path))
    assert Snapshot.load_nvdb(str(path)).lookup(rows[:3], cols[:3]).tolist() == [7, 8, 9]
    assert os.listdir(tmp_path) == ["s.nvdb"]


def test_save_errors(tmp_path):
    s = Snapshot.from_coo([0], [0], [1], (1, 1))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        s.save_nvdb(tmp_path / "missing" / "s.nvdb")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        s.save_nvdb(5)
    with pytest.raises(FileNotFoundError):
        Snapshot.load_nvdb(tmp_path / "nope.nvdb")


def test_empty_snapshot_file(tmp_path):
    s = Snapshot.from_coo([], [], [], (3, 3), step=0)
    s.save_nvdb(tmp_path / "e.nvdb")
    t = Snapshot.load_nvdb(tmp_path / "e.nvdb")
    assert t.nnz == 0 and t.step == 0 and t.lookup([2], [2]).tolist() == [0]


def _saved(tmp_path, version: str):
    rng = np.random.default_rng(6)
    rows, cols, values = random_coo(rng, (600, 700), 3000)
    s = Snapshot.from_coo(rows, cols, values, (600, 700), step=9)
    path = tmp_path / "s.nvdb"
    s.save_nvdb(path, version=version)
    return s, path, path.read_bytes()


@pytest.fixture()
def saved(tmp_path):
    """A snapshot file in NanoVDB 32.4's layout (the byte offsets below are that layout's)."""
    return _saved(tmp_path, "32.4")


@pytest.fixture()
def saved_current(tmp_path):
    """The same snapshot in current NanoVDB's layout (32.9)."""
    return _saved(tmp_path, "32.9")


def _grid_start(snap: Snapshot) -> int:
    return 16 + 176 + len(snap.name) + 1


def _patch(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def _flip(data: bytes, at: int) -> bytes:
    return _patch(data, at, bytes([data[at] ^ 0x40]))


@pytest.mark.parametrize("version", ["32.4", "32.9"])
@pytest.mark.parametrize("keep", [0, 5, 15, 100, 191, 200, -1000, -1])
def test_truncated_files(tmp_path, keep, version):
    _, path, data = _saved(tmp_path, version)
    path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(CorruptFileError, match="is empty|is truncated"):
        Snapshot.load_nvdb(path)


def test_damaged_regions_are_caught(saved):
    s, path, data = saved
    g = _grid_start(s)
    lay = s.layout
    cases = {
        "metadata record": 16 + 24,  # voxel count in the grid record
        "head's checksum": g + 40,  # a byte of the grid name
        "the grid says": g + N.TREE_OFF + 32,  # node count (head) -> head checksum
        "nodes' checksum": g + lay.lower_offset + N.LOWER_TABLE + 8 * 5,  # a lower-node slot
        "nodes' checksum ": g + lay.leaf_offset + 96 * 7 + 20,  # a leaf mask byte
        "values or the metadata channel": g + lay.values_offset + 4 * 17 + 1,
        "values or the metadata channel ": g + lay.meta_offset + 8,  # rows in the meta channel
    }
    for why, at in cases.items():
        path.write_bytes(_flip(data, at))
        with pytest.raises(CorruptFileError, match=re.escape(why.strip())):
            Snapshot.load_nvdb(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(CorruptFileError, match="1 unexpected bytes after the grid"):
        Snapshot.load_nvdb(path)


@pytest.mark.parametrize("version", ["32.4", "32.9"])
def test_every_single_byte_flip_is_detected(tmp_path, version):
    """No byte of a snapshot file can change without the load failing (in 32.9's layout the
    checksum covers the blind data too)."""
    s, path, data = _saved(tmp_path, version)
    rng = np.random.default_rng(7)
    g = _grid_start(s)
    blind = g + s.layout.blind_meta_offset
    leaves = g + s.layout.leaf_offset
    spots = np.concatenate((np.arange(g + 900),  # file headers, grid, tree, root, tiles
                            rng.integers(0, len(data), 300),
                            np.arange(leaves, leaves + 2 * 96),  # offsets, prefix sums, flags
                            np.arange(blind, blind + 2 * 288 + 32 + 64),  # records, meta, values
                            np.arange(len(data) - 64, len(data))))
    foreign = []
    for at in np.unique(spots):
        path.write_bytes(_flip(data, int(at)))
        with pytest.raises(HyprVDBError) as caught:
            Snapshot.load_nvdb(path)
        if not isinstance(caught.value, CorruptFileError):
            foreign.append(int(at))
    # only fields that make it another file: magic, NanoVDB version, codec, grid count, type
    assert set(foreign) <= set(range(16)) | set(range(16 + 32, 16 + 40)), foreign


def test_foreign_files(saved, tmp_path):
    s, path, data = saved
    other = tmp_path / "x.nvdb"
    other.write_bytes(b"\x20BDV\0\0\0\0" + bytes(100))
    with pytest.raises(ForeignFileError, match="is not a NanoVDB file"):
        Snapshot.load_nvdb(other)
    other.write_bytes(data[:8][::-1] + data[8:])
    with pytest.raises(ForeignFileError, match="big-endian"):
        Snapshot.load_nvdb(other)
    version_32_6 = (32 << 21 | 6 << 10).to_bytes(4, "little")
    other.write_bytes(_patch(data, 8, version_32_6))
    with pytest.raises(ForeignFileError, match=r"written by NanoVDB 32\.6\.0"):
        Snapshot.load_nvdb(other)
    other.write_bytes(_patch(data, 14, (1).to_bytes(2, "little")))
    with pytest.raises(ForeignFileError, match="compressed with ZIP"):
        Snapshot.load_nvdb(other)
    other.write_bytes(_patch(data, 12, (2).to_bytes(2, "little")))
    with pytest.raises(ForeignFileError, match="holds 2 grids"):
        Snapshot.load_nvdb(other)
    other.write_bytes(_patch(data, 16 + 32, (1).to_bytes(4, "little")))  # a float grid
    with pytest.raises(ForeignFileError, match="not an index grid"):
        Snapshot.load_nvdb(other)


def _restamped(snap_bytes: bytearray, lay: N.GridLayout) -> bytes:
    """Recompute both checksums of a grid after editing it (as another writer would)."""
    buf = N.aligned_empty(len(snap_bytes))
    buf[:] = np.frombuffer(bytes(snap_bytes), np.uint8)
    grid = N.grid_header(buf)
    grid["data2"] = N.blind_crc(buf, lay)
    grid["checksum"] = N.checksum(buf, lay)
    return bytes(buf)


def test_valid_grids_from_other_writers_are_foreign(saved):
    s, path, data = saved
    g = _grid_start(s)
    lay = s.layout
    # a leaf whose stats offset is set: a valid NanoVDB grid, not hyprvdb's layout
    grid = bytearray(data[g:])
    stats = lay.leaf_offset + 96 * 3 + 80
    grid[stats:stats + 8] = (5).to_bytes(8, "little")
    path.write_bytes(data[:g] + _restamped(grid, lay))
    with pytest.raises(ForeignFileError, match=r"another layout than hyprvdb's \(first "
                                               r"difference at grid byte \d+, leaves\)"):
        Snapshot.load_nvdb(path)
    # a meta channel from a future hyprvdb format
    grid = bytearray(data[g:])
    grid[lay.meta_offset:lay.meta_offset + 8] = (2).to_bytes(8, "little")
    path.write_bytes(data[:g] + _restamped(grid, lay))
    with pytest.raises(ForeignFileError, match="snapshot format 2"):
        Snapshot.load_nvdb(path)


def test_partial_checksum_is_accepted(saved, nanovdb_check):
    """NanoVDB 32.4.2 validates a 'partial' checksum (high word 0xFFFFFFFF) on the head alone."""
    s, path, data = saved
    g = _grid_start(s)
    partial = (s.checksum & 0xFFFFFFFF) | (0xFFFFFFFF << 32)
    path.write_bytes(_patch(data, g + 8, partial.to_bytes(8, "little")))
    t = Snapshot.load_nvdb(path)
    assert t.checksum == partial
    np.testing.assert_array_equal(t.lookup(*t.active_weights()[:2]), t.active_weights()[2])
    rep = run_check(nanovdb_check, path)
    assert rep["valid"] == "1" and rep["structure"] == "ok"
    u = t.with_values(*t.active_weights())
    assert u.checksum >> 32 == 0xFFFFFFFF


def test_current_grids_restamped_after_an_edit_are_foreign(saved_current):
    """A 32.9 grid whose checksums were computed again after a leaf's prefix sums changed
    (a valid grid to NanoVDB's validator only if the sums are right): not what hyprvdb wrote."""
    s, path, data = saved_current
    g = _grid_start(s)
    grid = N.aligned_empty(len(data) - g)
    grid[:] = np.frombuffer(data[g:], np.uint8)
    at = s.layout.leaf_offset + 96 * 2 + 88
    grid[at] ^= 1
    N.grid_header(grid)["checksum"] = N.checksum_current(grid)
    path.write_bytes(data[:g] + grid.tobytes())
    with pytest.raises(ForeignFileError, match="another layout than hyprvdb's"):
        Snapshot.load_nvdb(path)
    assert Snapshot.load_nvdb(_write(path, data)).file_version == "32.9.2"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("shape,n", [((1, 1), 1), ((9, 65), 30), ((384, 1536), 6000),
                                     ((4097, 70), 2000), ((64, 64), 4096), ((5, 5), 0)])
def test_current_nanovdb_reads_our_files(nanovdb_current, tmp_path, shape, n):
    """NanoVDB 32.9.2's readGrid, isValid(Full) and evalChecksum accept the files, and its
    accessor gives every active voxel, and as many random ones, our index and value."""
    rng = np.random.default_rng(n + 1)
    rows, cols, values = random_coo(rng, shape, n)
    s = Snapshot.from_coo(rows, cols, values, shape, step=n)
    path = tmp_path / "s.nvdb"
    s.save_nvdb(path)
    qr, qc = probe_coords(rng, shape, rows, cols, k=max(300, n))  # every active voxel
    rep = run_current(nanovdb_current, path, [f"{r} {c}" for r, c in zip(qr, qc)])
    assert rep["rc"] == 0 and rep["valid"] == "1" and rep["version"] == "32.9.2", rep
    stored, evaluated = re.match(r"stored (\w+) eval (\w+)", rep["checksum"]).groups()
    assert stored == evaluated
    assert rep["counts"].startswith(f"voxels {n} values {n + 1} ")
    np.testing.assert_array_equal(rep["index"], s.index_of(qr, qc))
    np.testing.assert_array_equal(rep["bits"], s.lookup(qr, qc).view(np.uint32))


# ------------------------------------------------------------------- NanoVDB agrees
@pytest.mark.parametrize("shape,n", [((1, 1), 1), ((9, 65), 30), ((384, 1536), 6000),
                                     ((4097, 70), 2000), ((3, 40000), 500), ((64, 64), 4096),
                                     ((5, 5), 0)])
def test_nanovdb_reads_our_files(nanovdb_check, tmp_path, shape, n):
    rng = np.random.default_rng(n)
    rows, cols, values = random_coo(rng, shape, n)
    s = Snapshot.from_coo(rows, cols, values, shape, step=n, name=f"grid_{n}")
    qr, qc = probe_coords(rng, shape, rows, cols)
    assert_nanovdb_agrees(nanovdb_check, s, tmp_path / "s.nvdb", qr, qc)
    if n:
        pick = rng.choice(n, size=max(1, n // 10), replace=False)
        t = s.with_values(rows[pick], cols[pick], values[pick] + 1, step=None)
        assert_nanovdb_agrees(nanovdb_check, t, tmp_path / "t.nvdb", qr, qc)


def test_nanovdb_reads_a_layer_of_the_workload(nanovdb_check, tmp_path):
    """One layer's 6 matrices, as one training step of online adaptation produces them."""
    rng = np.random.default_rng(11)
    for i, shape in enumerate([(384, 384)] * 4 + [(1536, 384), (384, 1536)]):
        rows, cols, values = random_coo(rng, shape, int(0.015 * shape[0] * shape[1]))
        s = Snapshot.from_coo(rows, cols, values, shape, step=100, name=f"layer0.m{i}")
        qr, qc = probe_coords(rng, shape, rows, cols, k=1000)
        assert_nanovdb_agrees(nanovdb_check, s, tmp_path / f"m{i}.nvdb", qr, qc)


def test_checker_rejects_a_damaged_grid(nanovdb_check, saved):
    """The checker is not a rubber stamp: NanoVDB's validator flags a wrong checksum."""
    s, path, data = saved
    g = _grid_start(s)
    path.write_bytes(_flip(data, g + s.layout.leaf_offset + 20))
    rep = run_check(nanovdb_check, path)
    assert rep["valid"] == "0" and rep["rc"] == 1
    assert "Mis-matching checksum" in rep["stderr"]


# ---------------------------------------------------------------------- packaging
def test_snapshot_does_not_import_the_openvdb_core():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'hyprvdb._core':\n"
            "            raise ImportError('blocked: no OpenVDB here')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from hyprvdb.snapshot import Snapshot\n"
            "s = Snapshot.from_coo([0, 1], [2, 3], [1.0, 2.0], (2, 4))\n"
            "assert s.lookup([1], [3]).tolist() == [2.0]\n"
            "assert 'hyprvdb._core' not in sys.modules\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=HERE.parent)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_docstring_examples():
    failures, tried = doctest.testmod(snapshot_module, verbose=False)
    assert tried > 0 and failures == 0


def test_repr_and_attributes():
    s = Snapshot.from_coo([0], [0], [1], (2, 3), step=4, name="w")
    assert repr(s) == f"Snapshot(shape=(2, 3), nnz=1, step=4, name='w', nbytes={s.nbytes})"
    assert snapshot_module.__all__ == ["Snapshot"]
    for attr in ("shape", "step", "buffer", "values", "nnz", "nbytes"):
        with pytest.raises(AttributeError):
            setattr(s, attr, None)
