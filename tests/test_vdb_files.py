""".vdb files: round trips, atomic writes, and refusal of damaged or foreign files.

Damaged files are made by truncating and flipping bytes of a real file. Files that are
damaged *and* carry a valid checksum are made by re-stamping the checksum by the documented
rule (CRC32 of the whole file with the eight hex digits of the ``hyprvdb_crc32`` metadata
left out), which also pins that rule.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import hyprvdb
from conftest import assert_f32_identical, assert_matches_dense, reference_of, run_python
from hyprvdb import CorruptFileError, ForeignFileError, HyprVDBError, SparseAdapter

F32 = np.float32
VDB_MAGIC = (0x56444220).to_bytes(8, "little")


def random_adapter(rows=40, cols=700, n=300, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    a = SparseAdapter(rows, cols, **kwargs)
    a.batch_update(rng.integers(0, rows, n), rng.integers(0, cols, n),
                   rng.standard_normal(n).astype(F32))
    return a


def restamp(data: bytes) -> bytes:
    """Recompute the hyprvdb_crc32 field by the documented rule."""
    d = bytearray(data)
    at = d.find(b"hyprvdb_crc32")
    assert at >= 0
    field = d.find(b"crc32:", at) + len(b"crc32:")
    crc = zlib.crc32(bytes(d[:field]) + bytes(d[field + 8:])) & 0xFFFFFFFF
    d[field:field + 8] = b"%08x" % crc
    return bytes(d)


def set_int64_meta(data: bytes, key: str, value: int) -> bytes:
    """Overwrite the value of an int64 metadata entry in place."""
    head = struct.pack("<I", len(key)) + key.encode() + struct.pack("<I", 5) + b"int64" + \
        struct.pack("<I", 8)
    at = data.find(head)
    assert at >= 0 and data.find(head, at + 1) < 0, f"{key} not found once"
    at += len(head)
    return data[:at] + struct.pack("<q", value) + data[at + 8:]


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    assert data.count(old) == 1, f"{old!r} found {data.count(old)} times"
    return data.replace(old, new)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small saved adapter and its bytes (about 10 KB)."""
    folder = tmp_path_factory.mktemp("saved")
    a = random_adapter(rows=24, cols=130, n=60, seed=11)
    path = folder / "small.vdb"
    a.save(path)
    return a, path.read_bytes()


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("kwargs", [
    dict(rows=40, cols=700, n=300),
    dict(rows=70, cols=5000, n=2000),  # widest column fold
    dict(rows=1, cols=1, n=1),
    dict(rows=64, cols=256, n=500, block_shape=(8, 64)),
    dict(rows=30, cols=40, n=50, block_shape=(2, 4)),
    dict(rows=9, cols=10, n=20, block_shape=(3, 5)),
], ids=["unstructured", "wide", "1x1", "tile-8x64", "tile-2x4", "tile-3x5"])
def test_save_load_round_trip(tmp_path, kwargs):
    a = random_adapter(**kwargs)
    path = tmp_path / "a.vdb"
    a.save(path)
    b = SparseAdapter.load(path)
    assert b.shape == a.shape and b.block_shape == a.block_shape and b.name == a.name
    assert_matches_dense(b, *reference_of(a))
    # The loaded adapter is a working adapter.
    b.set_weight(0, 0, 5.0)
    assert b.get_weight(0, 0) == 5.0


def test_round_trip_empty_adapter_keeps_shape_and_name(tmp_path):
    a = SparseAdapter(1000, 3000, name="layers.0.self_attn.q_proj")
    a.save(tmp_path / "empty.vdb")
    b = SparseAdapter.load(tmp_path / "empty.vdb")
    assert b.shape == (1000, 3000) and b.active_count() == 0
    assert b.name == "layers.0.self_attn.q_proj" and b.block_shape == (1, 1)
    t = SparseAdapter(16, 128, block_shape=(8, 64))
    t.save(tmp_path / "empty-tile.vdb")
    assert SparseAdapter.load(tmp_path / "empty-tile.vdb").block_shape == (8, 64)


def test_shape_comes_from_metadata_not_from_the_weights(tmp_path):
    a = SparseAdapter(1000, 3000)
    a.set_weight(0, 0, 1.0)
    a.save(str(tmp_path / "corner.vdb"))
    b = SparseAdapter.load(str(tmp_path / "corner.vdb"))
    assert b.shape == (1000, 3000)
    b.set_weight(999, 2999, 2.0)


def test_values_round_trip_bit_exact(tmp_path):
    specials = np.array([0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, np.finfo(F32).max,
                         -np.finfo(F32).max, np.finfo(F32).tiny, 1 / 3, -7.25], dtype=F32)
    a = SparseAdapter(3, 10)
    a.batch_update(np.full(10, 1), np.arange(10), specials)
    a.save(tmp_path / "s.vdb")
    b = SparseAdapter.load(tmp_path / "s.vdb")
    assert_f32_identical(b.active_weights()[2], specials, "reloaded values")


def test_nonfinite_values_need_allow_nonfinite_to_load(tmp_path):
    a = SparseAdapter(4, 4, allow_nonfinite=True)
    a.batch_update([0, 1, 2], [0, 1, 2], [np.nan, np.inf, -np.inf])
    a.save(tmp_path / "nf.vdb")
    with pytest.raises(HyprVDBError, match="allow_nonfinite=True"):
        SparseAdapter.load(tmp_path / "nf.vdb")
    b = SparseAdapter.load(tmp_path / "nf.vdb", allow_nonfinite=True)
    v = b.get_weights([0, 1, 2], [0, 1, 2])
    assert np.isnan(v[0]) and v[1] == np.inf and v[2] == -np.inf
    b.set_weight(3, 3, np.nan)  # the loaded adapter keeps allowing them


def test_save_overwrites_and_load_ignores_the_suffix(tmp_path):
    path = tmp_path / "weights.bin"
    random_adapter(seed=1).save(path)
    second = random_adapter(seed=2)
    second.save(path)
    assert_matches_dense(SparseAdapter.load(path), *reference_of(second))
    assert sorted(os.listdir(tmp_path)) == ["weights.bin"]


def test_save_to_a_bare_file_name_uses_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = random_adapter(seed=3)
    a.save("here.vdb")
    assert_matches_dense(SparseAdapter.load("here.vdb"), *reference_of(a))


def test_file_metadata_names_the_format(saved):
    _, data = saved
    assert data[:8] == VDB_MAGIC
    assert b"hyprvdb_format" in data and b"sparse_adapter/1" in data
    assert restamp(data) == data  # the checksum follows the documented rule


# ----------------------------------------------------------------------------- atomic writes
class _CoreProxy:
    """The real core module, except that save_vdb is replaced."""

    def __init__(self, real, save_vdb):
        self._real = real
        self.save_vdb = save_vdb

    def __getattr__(self, name):
        return getattr(self._real, name)


def _existing_file(tmp_path):
    path = tmp_path / "adapter.vdb"
    random_adapter(seed=4).save(path)
    return path, path.read_bytes()


# Exception types, not instances: a raised instance kept by the parametrization would keep
# its traceback, and with it the adapter, alive until the interpreter exits.
@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt],
                         ids=["error", "interrupt"])
def test_failed_save_keeps_the_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch,
                                                                 failure):
    path, old = _existing_file(tmp_path)
    real = hyprvdb._native.core()

    def save_half_then_fail(core, tmp, *args):
        real.save_vdb(core, tmp, *args)
        with open(tmp, "r+b") as f:  # midway: half of the file is on disk
            f.truncate(os.path.getsize(tmp) // 2)
        raise failure("disk full")

    monkeypatch.setattr(hyprvdb.adapter._sparse, "_core_module",
                        lambda: _CoreProxy(real, save_half_then_fail))
    with pytest.raises(failure):
        random_adapter(seed=5).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["adapter.vdb"]
    SparseAdapter.load(path)


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path, old = _existing_file(tmp_path)

    def no_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="No space left"):
        random_adapter(seed=6).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["adapter.vdb"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    real = hyprvdb._native.core()

    def fail(core, tmp, *args):
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("boom")

    monkeypatch.setattr(hyprvdb.adapter._sparse, "_core_module", lambda: _CoreProxy(real, fail))
    with pytest.raises(RuntimeError, match="boom"):
        SparseAdapter(2, 2).save(tmp_path / "new.vdb")
    assert os.listdir(tmp_path) == []


def test_atomic_write_callback_failure(tmp_path):
    from hyprvdb._atomic import atomic_write

    path, old = _existing_file(tmp_path)

    def write(tmp):
        Path(tmp).write_bytes(b"garbage" * 100)
        raise ValueError("callback failed")

    with pytest.raises(ValueError, match="callback failed"):
        atomic_write(path, write)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["adapter.vdb"]


# ----------------------------------------------------------------------------- missing, empty
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        SparseAdapter.load(tmp_path / "nope.vdb")


def test_empty_file(tmp_path):
    (tmp_path / "empty.vdb").write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        SparseAdapter.load(tmp_path / "empty.vdb")


# ----------------------------------------------------------------------------- damage
def _load_outcome(path):
    try:
        SparseAdapter.load(path)
    except CorruptFileError:
        return "corrupt"
    except HyprVDBError as e:
        return type(e).__name__
    return "loaded"


def _ranges(offsets):
    """[1, 2, 3, 7] -> '1-3, 7' for readable failure messages."""
    out, start, prev = [], None, None
    for x in offsets:
        if start is None:
            start = prev = x
        elif x == prev + 1:
            prev = x
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = x
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(out)


def test_truncated_files_are_corrupt_at_every_length(tmp_path, saved):
    a, data = saved
    path = tmp_path / "t.vdb"
    wrong = {}
    for n in range(1, len(data)):
        path.write_bytes(data[:n])
        outcome = _load_outcome(path)
        if outcome != "corrupt":
            wrong.setdefault(outcome, []).append(n)
    assert not wrong, "truncated files not reported as CorruptFileError: " + "; ".join(
        f"{k} at lengths {_ranges(v)}" for k, v in wrong.items())
    # Nothing leaked from the failures: the whole file still loads.
    path.write_bytes(data)
    assert_matches_dense(SparseAdapter.load(path), *reference_of(a))


@pytest.mark.parametrize("mask", [0xFF, 0x01, 0x80])
def test_flipped_bytes_are_corrupt_at_every_offset(tmp_path, saved, mask):
    a, data = saved
    path = tmp_path / "f.vdb"
    wrong = {}
    for i in range(len(data)):
        d = bytearray(data)
        d[i] ^= mask
        path.write_bytes(bytes(d))
        outcome = _load_outcome(path)
        # A damaged magic number makes the file "not an OpenVDB file": either error is
        # honest there. Everywhere else the file is a damaged hyprvdb file.
        if outcome == "loaded" or (outcome != "corrupt" and i >= len(VDB_MAGIC)):
            wrong.setdefault(outcome, []).append(i)
    assert not wrong, "flipped bytes not reported as CorruptFileError: " + "; ".join(
        f"{k} at offsets {_ranges(v)}" for k, v in wrong.items())
    path.write_bytes(data)
    assert_matches_dense(SparseAdapter.load(path), *reference_of(a))


def test_appended_bytes_are_corrupt(tmp_path, saved):
    _, data = saved
    for extra in (b"\0", b"x" * 100):
        (tmp_path / "g.vdb").write_bytes(data + extra)
        with pytest.raises(CorruptFileError):
            SparseAdapter.load(tmp_path / "g.vdb")


def test_restamped_value_change_loads_the_changed_value(tmp_path):
    # With a valid checksum a changed value byte is simply a different weight: the checksum
    # is the only guard, and it is checked over the values too.
    a = SparseAdapter(2, 8)
    a.set_weight(1, 5, 1.5)
    a.save(tmp_path / "v.vdb")
    data = (tmp_path / "v.vdb").read_bytes()
    old = struct.pack("<f", 1.5)
    changed = replace_once(data, old, struct.pack("<f", -2.25))
    (tmp_path / "v.vdb").write_bytes(changed)
    with pytest.raises(CorruptFileError, match="CRC32"):
        SparseAdapter.load(tmp_path / "v.vdb")
    (tmp_path / "v.vdb").write_bytes(restamp(changed))
    assert SparseAdapter.load(tmp_path / "v.vdb").to_dict() == {(1, 5): -2.25}


# ------------------------------------------------------- damaged contents, valid checksum
# A file can pass its checksum and still be damaged: written by a faulty tool, or crafted and
# re-stamped. OpenVDB's reader checks none of its reads (it sizes arrays by whatever counts a
# file claims, and leaks the nodes it was building when a read fails), so hyprvdb walks the
# layout before OpenVDB sees it. These run in a child process with capped memory, so that a
# regression fails the test instead of exhausting the machine.

SWEEP = """
import json, os, resource, sys
sys.path.insert(0, sys.argv[3])
from test_vdb_files import restamp
from hyprvdb import HyprVDBError, SparseAdapter

src, mask = sys.argv[1], int(sys.argv[2])
data = open(src, "rb").read()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
SparseAdapter.load(src)
rss0, peak0 = rss(), peak()
outcomes = {}
for i in range(len(data)):
    d = bytearray(data)
    d[i] ^= mask
    try:
        d = restamp(bytes(d))
    except AssertionError:  # the flip hit the checksum's own key: nothing to re-stamp
        continue
    with open(src + ".x", "wb") as f:
        f.write(d)
    try:
        SparseAdapter.load(src + ".x")
        outcome = "loaded"
    except HyprVDBError as e:
        outcome = type(e).__name__
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"[:200]
    outcomes.setdefault(outcome, []).append(i)
print(json.dumps({"outcomes": outcomes, "grown": rss() - rss0, "peak": peak() - peak0}))
"""


@pytest.mark.parametrize("mask", [0xFF, 0x80, 0x01])
def test_restamped_damage_anywhere_is_refused_in_bounded_memory(tmp_path, saved, mask):
    _, data = saved
    (tmp_path / "s.vdb").write_bytes(data)
    out = run_python(SWEEP, str(tmp_path / "s.vdb"), str(mask),
                     os.fspath(Path(__file__).parent), python=sys.executable, timeout=600,
                     address_space=4 << 30)
    outcomes = out["outcomes"]
    unexpected = {k: v for k, v in outcomes.items()
                  if k not in ("loaded", "CorruptFileError", "ForeignFileError")}
    assert not unexpected, "; ".join(f"{k} at offsets {_ranges(v)}"
                                     for k, v in unexpected.items())
    # Bytes of the tree's structure are damage; only values, names and the like may load.
    assert len(outcomes["CorruptFileError"]) > len(data) * 0.8
    # Each load allocates in proportion to the 10 KB file and frees all of it.
    assert out["peak"] < 64 << 20, f"peak memory grew by {out['peak'] >> 20} MiB"
    assert out["grown"] < 16 << 20, f"{out['grown'] >> 20} MiB not freed after the loads"


def _root_counts_offset(data: bytes) -> int:
    """Offset of the root node's tile count: after the transform (type name and five Vec3d),
    the tree's buffer count and the background value."""
    at = data.find(b"UniformScaleMap")
    assert at > 0 and data.find(b"UniformScaleMap", at + 1) < 0
    return at + len("UniformScaleMap") + 5 * 24 + 4 + 4


LOAD_EACH = """
import json, sys
from hyprvdb import HyprVDBError, SparseAdapter
out = []
for path in sys.argv[1:]:
    try:
        SparseAdapter.load(path)
        out.append(["loaded", ""])
    except HyprVDBError as e:
        out.append([type(e).__name__, str(e)])
print(json.dumps({"results": out}))
"""


@pytest.mark.parametrize("field, value, error, pattern", [
    ("root children", 0xFFFFFFFF, "CorruptFileError", "root's children runs past the end"),
    ("root children", 2, "CorruptFileError", "past the end|follow the grid|ascending"),
    ("root tiles", 0xFFFFFFFF, "ForeignFileError", "root tiles"),
    ("delayed-load count", 0xFFFFFFFF, "loaded", ""),  # skipped as raw bytes, never sized
    # A file may hold several grids (an AdapterSet's); one that claims more than it has is cut.
    ("grid count", 0x7FFFFFFF, "CorruptFileError", "runs past the end"),
    ("grid count", 0, "ForeignFileError", "holds 0 grids"),
    ("grid name length", 0xFFFFFFF0, "CorruptFileError", "grid name runs past the end"),
], ids=["children-huge", "children-2", "tiles-huge", "delayed-load-huge", "grids-huge",
        "grids-none", "name-huge"])
def test_restamped_huge_counts_are_refused_before_openvdb_reads(tmp_path, saved, field, value,
                                                                 error, pattern):
    _, data = saved
    d = bytearray(data)
    if field.startswith("root"):
        at = _root_counts_offset(data) + (4 if field == "root children" else 0)
    elif field == "delayed-load count":
        at = data.find(b"__delayedload") + len("__delayedload") + 4
    elif field == "grid count":
        at = data.find(b"sparse_adapter/1") + len("sparse_adapter/1")
    else:
        at = data.find(b"lora_delta") - 4
    assert at > 0
    d[at:at + 4] = struct.pack("<I", value)
    (tmp_path / "c.vdb").write_bytes(restamp(bytes(d)))
    [(kind, message)] = run_python(LOAD_EACH, str(tmp_path / "c.vdb"), python=sys.executable,
                                   timeout=120, address_space=4 << 30)["results"]
    assert kind == error, message
    assert re.search(pattern, message), message


def test_grid_name_that_is_not_utf8_is_corrupt(tmp_path, saved):
    _, data = saved
    entry = struct.pack("<I", 4) + b"name" + struct.pack("<I", 6) + b"string" + \
        struct.pack("<I", 10)
    bad = replace_once(data, entry + b"lora_delta", entry + b"lora\xffdelta")
    (tmp_path / "n.vdb").write_bytes(restamp(bad))
    with pytest.raises(CorruptFileError, match="grid name is not UTF-8 text"):
        SparseAdapter.load(tmp_path / "n.vdb")


# ----------------------------------------------------------------------------- foreign files
def test_random_bytes_are_foreign(tmp_path):
    rng = np.random.default_rng(7)
    for size in (1, 7, 8, 100, 5000):
        (tmp_path / "r.vdb").write_bytes(b"\x01" + rng.bytes(size))
        with pytest.raises(ForeignFileError, match="not an OpenVDB file"):
            SparseAdapter.load(tmp_path / "r.vdb")


def test_text_file_is_foreign(tmp_path):
    (tmp_path / "notes.vdb").write_text("these are not the weights you are looking for\n" * 50)
    with pytest.raises(ForeignFileError, match="bad magic number"):
        SparseAdapter.load(tmp_path / "notes.vdb")


def test_vdb_magic_then_garbage_is_refused(tmp_path):
    rng = np.random.default_rng(8)
    (tmp_path / "m.vdb").write_bytes(VDB_MAGIC + rng.bytes(4000))
    with pytest.raises(HyprVDBError):
        SparseAdapter.load(tmp_path / "m.vdb")


def test_openvdb_file_without_hyprvdb_checksum_is_foreign(tmp_path, saved):
    # Renaming the checksum key keeps a valid OpenVDB file that hyprvdb did not stamp.
    _, data = saved
    other = replace_once(data, b"hyprvdb_crc32", b"someone_crc32")
    (tmp_path / "o.vdb").write_bytes(other)
    with pytest.raises(ForeignFileError, match="hyprvdb_crc32"):
        SparseAdapter.load(tmp_path / "o.vdb")


def test_newer_format_version_is_foreign(tmp_path, saved):
    _, data = saved
    newer = restamp(replace_once(data, b"sparse_adapter/1", b"sparse_adapter/9"))
    (tmp_path / "n.vdb").write_bytes(newer)
    with pytest.raises(ForeignFileError, match="sparse_adapter/9"):
        SparseAdapter.load(tmp_path / "n.vdb")


def test_grid_without_adapter_metadata_is_foreign(tmp_path, saved):
    _, data = saved
    stripped = restamp(replace_once(data, b"hyprvdb_rows", b"hyprvdb_rowz"))
    (tmp_path / "s.vdb").write_bytes(stripped)
    with pytest.raises(ForeignFileError, match="no hyprvdb adapter grid"):
        SparseAdapter.load(tmp_path / "s.vdb")


def test_unknown_coordinate_map_is_foreign(tmp_path, saved):
    _, data = saved
    other = restamp(replace_once(data, b"y=col>>3 z=col&7", b"y=col>>4 z=col&7"))
    (tmp_path / "c.vdb").write_bytes(other)
    with pytest.raises(ForeignFileError, match="coordinate mapping"):
        SparseAdapter.load(tmp_path / "c.vdb")


@pytest.mark.parametrize("key, value, pattern", [
    ("hyprvdb_rows", 1, "outside the matrix"),
    ("hyprvdb_cols", 1, "outside the matrix"),
    ("hyprvdb_rows", 0, "bad shape"),
    ("hyprvdb_cols", -5, "bad shape"),
    ("hyprvdb_rows", 1 << 40, "bad shape"),
    ("hyprvdb_block_rows", 5, "bad shape"),
    ("hyprvdb_block_cols", 0, "bad shape"),
])
def test_inconsistent_shape_metadata_is_refused(tmp_path, saved, key, value, pattern):
    _, data = saved
    bad = restamp(set_int64_meta(data, key, value))
    (tmp_path / "b.vdb").write_bytes(bad)
    with pytest.raises(HyprVDBError, match=pattern):
        SparseAdapter.load(tmp_path / "b.vdb")


def test_partial_blocks_are_refused(tmp_path):
    # A tile-mode file whose voxels do not fill whole blocks.
    a = SparseAdapter(4, 8)
    a.set_weight(1, 5, 1.0)
    a.save(tmp_path / "p.vdb")
    data = (tmp_path / "p.vdb").read_bytes()
    data = set_int64_meta(set_int64_meta(data, "hyprvdb_block_rows", 2),
                          "hyprvdb_block_cols", 4)
    (tmp_path / "p.vdb").write_bytes(restamp(data))
    with pytest.raises(HyprVDBError, match="whole 2x4 blocks"):
        SparseAdapter.load(tmp_path / "p.vdb")
