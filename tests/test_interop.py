"""OpenVDB's own tools read our .vdb files, and we refuse theirs that are not adapters.

Two independent readers: ``vdb_print`` (Debian libopenvdb-tools) and ``pyopenvdb`` (Debian
python3-openvdb, built for the *system* python with NumPy 1.x, so it runs in a subprocess).
"""

from __future__ import annotations

import re
import subprocess
import zlib

import numpy as np
import pytest

from conftest import run_python, write_with_pyopenvdb
from hyprvdb import ForeignFileError, HyprVDBError, SparseAdapter

F32 = np.float32

READ_WITH_PYOPENVDB = """
import json, sys
import pyopenvdb as vdb
path = sys.argv[1]
grids, file_meta = vdb.readAll(path)
g = grids[0]
voxels, tiles = [], 0
for item in g.citerOnValues():
    lo, hi = item["min"], item["max"]
    if item["depth"] != 3 or tuple(lo) != tuple(hi):
        tiles += 1
        continue
    assert item["active"]
    voxels.append([lo[0], lo[1], lo[2], item["value"]])
acc = g.getConstAccessor()
probe = [[x, y, z, acc.getValue((x, y, z)), acc.isValueOn((x, y, z))]
         for x, y, z in json.loads(sys.argv[2])]
print(json.dumps({
    "grid_type": type(g).__name__,
    "grid_count": len(grids),
    "name": g.name,
    "active": g.activeVoxelCount(),
    "tiles": tiles,
    "voxels": voxels,
    "probe": probe,
    "grid_meta": {k: v for k, v in g.metadata.items() if k.startswith("hyprvdb_")},
    "file_meta": dict(file_meta),
}))
"""


def small_adapter(block_shape=(1, 1)):
    rng = np.random.default_rng(21)
    if block_shape == (1, 1):
        a = SparseAdapter(96, 1000, name="mlp.down_proj")
        n = 3000
        a.batch_update(rng.integers(0, 96, n), rng.integers(0, 1000, n),
                       rng.standard_normal(n).astype(F32))
    else:
        a = SparseAdapter(64, 512, block_shape=block_shape, name="tiled")
        a.batch_update(rng.integers(0, 64, 6), rng.integers(0, 512, 6), np.arange(1, 7))
    return a


def file_coords(rows, cols):
    """The documented map from matrix to grid: x = row, y = col >> 3, z = col & 7."""
    return rows, cols >> 3, cols & 7


@pytest.mark.parametrize("block_shape", [(1, 1), (8, 64), (2, 4)])
def test_vdb_print_reads_our_files(tmp_path, vdb_print, block_shape):
    a = small_adapter(block_shape)
    path = tmp_path / "a.vdb"
    a.save(path)
    p = subprocess.run([vdb_print, "-l", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    m = re.search(r"Number of active voxels:\s+([\d,]+)", p.stdout)
    assert m, p.stdout
    assert int(m.group(1).replace(",", "")) == a.active_count()
    assert re.search(r"Number of active tiles:\s+0\b", p.stdout), p.stdout
    rows, cols = a.shape
    assert re.search(rf"hyprvdb_rows:\s+{rows}\b", p.stdout)
    assert re.search(rf"hyprvdb_cols:\s+{cols}\b", p.stdout)
    assert re.search(rf"hyprvdb_block_rows:\s+{block_shape[0]}\b", p.stdout)
    assert "hyprvdb_coord_map: x=row y=col>>3 z=col&7" in p.stdout
    assert f"Name: {a.name}" in p.stdout


def test_vdb_print_reads_an_empty_adapter(tmp_path, vdb_print):
    SparseAdapter(10, 10).save(tmp_path / "e.vdb")
    p = subprocess.run([vdb_print, "-l", str(tmp_path / "e.vdb")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r"Number of active voxels:\s+0\b", p.stdout), p.stdout


@pytest.mark.parametrize("block_shape", [(1, 1), (8, 64)])
def test_pyopenvdb_reads_every_weight(tmp_path, pyopenvdb_python, block_shape):
    import json

    a = small_adapter(block_shape)
    path = tmp_path / "a.vdb"
    a.save(path)
    r, c, v = a.active_weights()
    # Probe some active and some inactive cells through pyopenvdb's accessor as well.
    rng = np.random.default_rng(22)
    pr = np.concatenate([r[:20], rng.integers(0, a.shape[0], 20)])
    pc = np.concatenate([c[:20], rng.integers(0, a.shape[1], 20)])
    px, py, pz = file_coords(pr, pc)
    probe = json.dumps([[int(x), int(y), int(z)] for x, y, z in zip(px, py, pz)])
    out = run_python(READ_WITH_PYOPENVDB, str(path), probe)

    assert out["grid_type"] == "FloatGrid" and out["grid_count"] == 1
    assert out["name"] == a.name
    assert out["active"] == a.active_count() == len(out["voxels"])
    assert out["tiles"] == 0
    vox = np.array(out["voxels"], dtype=np.float64).reshape(-1, 4)
    x, y, z = vox[:, 0].astype(np.int64), vox[:, 1].astype(np.int64), vox[:, 2].astype(np.int64)
    assert ((z >= 0) & (z <= 7)).all()
    rows, cols = x, (y << 3) | z
    order = np.lexsort((cols, rows))
    np.testing.assert_array_equal(rows[order], r)
    np.testing.assert_array_equal(cols[order], c)
    np.testing.assert_array_equal(vox[order, 3].astype(F32), v)
    # Accessor reads agree with get_weights / are_active.
    got = np.array([p[3] for p in out["probe"]], dtype=np.float64).astype(F32)
    on = np.array([p[4] for p in out["probe"]], dtype=bool)
    np.testing.assert_array_equal(got, a.get_weights(pr, pc))
    np.testing.assert_array_equal(on, a.are_active(pr, pc))
    # Metadata is visible to OpenVDB's reader.
    meta = out["grid_meta"]
    assert meta["hyprvdb_rows"] == a.shape[0] and meta["hyprvdb_cols"] == a.shape[1]
    assert meta["hyprvdb_block_rows"] == block_shape[0]
    assert meta["hyprvdb_block_cols"] == block_shape[1]
    assert meta["hyprvdb_coord_map"] == "x=row y=col>>3 z=col&7"
    assert out["file_meta"]["hyprvdb_format"] == "sparse_adapter/1"
    assert re.fullmatch(r"crc32:[0-9a-f]{8}", out["file_meta"]["hyprvdb_crc32"])


def test_pyopenvdb_grid_without_our_metadata_is_refused(tmp_path, pyopenvdb_python):
    path = tmp_path / "foreign.vdb"
    write_with_pyopenvdb(path, {"name": "density",
                                "voxels": [[1, 2, 3, 0.5], [4, 0, 7, -1.0]]})
    with pytest.raises(ForeignFileError, match="hyprvdb") as info:
        SparseAdapter.load(path)
    assert isinstance(info.value, HyprVDBError)
    assert str(path) in str(info.value)


def test_pyopenvdb_file_with_our_checksum_but_no_adapter_grid_is_refused(tmp_path,
                                                                          pyopenvdb_python):
    # Passes the checksum (stamped by the documented rule) and still is not an adapter.
    path = tmp_path / "stamped.vdb"
    write_with_pyopenvdb(path, {"name": "density", "voxels": [[0, 0, 0, 1.0]],
                                "file_meta": {"hyprvdb_crc32": "crc32:00000000",
                                              "hyprvdb_format": "sparse_adapter/1"}})
    data = bytearray(path.read_bytes())
    field = data.find(b"crc32:", data.find(b"hyprvdb_crc32")) + 6
    crc = zlib.crc32(bytes(data[:field]) + bytes(data[field + 8:])) & 0xFFFFFFFF
    data[field:field + 8] = b"%08x" % crc
    path.write_bytes(bytes(data))
    with pytest.raises(ForeignFileError, match="no hyprvdb adapter grid"):
        SparseAdapter.load(path)


def test_pyopenvdb_empty_file_is_refused(tmp_path, pyopenvdb_python):
    path = tmp_path / "nogrids.vdb"
    run_python("""
        import json, sys
        import pyopenvdb as vdb
        vdb.write(sys.argv[1], grids=[])
        print(json.dumps({"ok": True}))
    """, str(path))
    with pytest.raises(HyprVDBError):
        SparseAdapter.load(path)
