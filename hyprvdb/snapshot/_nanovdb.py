"""NanoVDB 32.4.2 ``ValueIndex`` grids and ``.nvdb`` files, written and read with numpy alone.

Everything here follows the byte layout of ``nanovdb/NanoVDB.h`` and ``nanovdb/util/IO.h`` of
NanoVDB 32.4.2 (Debian ``libnanovdb-dev``, OpenVDB 10.0); ``tests/nanovdb_check/check.cpp``
compiles against those headers and checks our buffers with NanoVDB's own reader, validator,
checksum and accessor. Index grids of NanoVDB 32.6+ (OpenVDB 11+) lay out leaves differently,
so a buffer from here is for 32.4 readers only.

One grid buffer, every part 32-byte aligned, nodes breadth-first::

    GridData        672 B   magic, checksum, version, flags, name, map, bboxes, blind-data table
    TreeData         64 B   byte offsets to the first leaf / lower / upper node and to the root
    RootData         96 B   index bbox, tile count, background and stats (all index 0)
    Tile       32 B x T     one per upper node, sorted by key
    upper  270400 B x U     32^3 internal nodes
    lower   33856 B x L     16^3 internal nodes
    leaf       96 B x N     8^3 ValueIndex leaves, flag bit 4 set: only active voxels indexed
    GridBlindMetaData 288 B x 2
    blind data              int64[4] meta, then float32 values, each padded to 32 bytes

Index conventions (those of NanoVDB 32.4's own ``IndexGridBuilder`` for active-only grids
without stats): ``LeafData<ValueIndex>::getValue`` returns ``mValueOff + countOn(i)`` for an
active voxel and 0 for an inactive one, and the root's background is index 0, so every
coordinate that is not active maps to index 0. The values channel therefore holds
``nnz + 1`` floats: ``values[0]`` is the background (0.0) and ``values[1 + k]`` is the k-th
active voxel in leaf order (leaves in breadth-first order, voxels in mask order). Leaves carry
``mStatsOff = 0`` (no stats), ``mValueOff`` = 1 + active voxels in earlier leaves.
``GridData::mData1`` holds the value count (``nnz + 1``), as ``NanoGrid<ValueIndex>::valueCount``
expects.

Other fields: grid class ``IndexGrid`` (8), type ``Index`` (19), flags ``IsBreadthFirst`` plus
``HasBBox`` when not empty; identity map (float and double, taper 1), voxel size 1, world bbox
= index bbox with max + 1 (voxel cells, as ``GridStats`` computes it). Root tiles: key
``(x>>12)<<42 | (y>>12)<<21 | z>>12`` (``USE_SINGLE_ROOT_KEY`` is on in 32.4.2), child = byte
offset from the root, state 0, value ``UINT64_MAX`` (``IndexGridBuilder``'s choice). Internal
nodes: bbox of their active voxels, flags 2, no active tiles; leaves: bbox as
``LeafNode::updateBBox`` computes it, flags 16 | 2. An empty grid has no tiles, zero node
offsets and NanoVDB's empty boxes. Blind channel 0 is ``hyprvdb_values`` (``ChannelArray``,
``Float``, ``nnz + 1`` elements), channel 1 ``hyprvdb_meta`` (``Unknown``, ``Int64``: format 1,
rows, cols, step or -1). ``GridBlindMetaData::mByteOffset`` is relative to its own record (what
``getBlindData`` does), not to the grid as the header's comment says.

Checksums (``util/GridChecksum.h``): the 64-bit ``mChecksum`` is two CRC32s. The low word
covers bytes ``[16, end of the root tiles)`` (grid and tree headers, root, tiles). The high
word is the CRC32 of an array of per-node CRC32s (upper nodes, lower nodes, then leaves) stored
as ``std::uint_fast32_t`` -- 8 bytes on LP64 Linux (glibc), 4 on macOS and Windows, so NanoVDB
32.4.2's "full" checksum is ABI-dependent; we write the LP64 form, which is what Linux readers
(and the CUDA serving machines) compute. An empty tree has no high word (``0xFFFFFFFF``).
NanoVDB's checksum never covers blind data, so hyprvdb stores the CRC32 of the whole
blind-data section (both meta records and both data blocks) in ``GridData::mData2`` -- padding
in 32.4.2, zero in NanoVDB's builders, ignored by its readers -- where the low word of the
NanoVDB checksum covers it. Changing values therefore costs one CRC over the values and one
over the ~1 KB head; the node CRCs stay valid. A stored high word of ``0xFFFFFFFF`` is NanoVDB's
"partial" mode, which ``validateChecksum`` (hence ``isValid(grid, true)``) accepts on the head
alone.

Files (``io::writeGrid``, ``Codec::NONE``): a 16-byte segment header (magic, version, one grid,
codec), one 176-byte grid record (sizes, name hash, counts, bboxes), the name and its NUL, then
the grid buffer as is.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np

# ------------------------------------------------------------------ constants of NanoVDB 32.4.2
MAGIC = 0x304244566F6E614E  # "NanoVDB0", little-endian uint64
MAJOR, MINOR, PATCH = 32, 4, 2
VERSION = (MAJOR << 21) | (MINOR << 10) | PATCH
ALIGN = 32
# NanoVDB 32.6+ (OpenVDB 11-13; tested with 32.9.2): files and grids this module also writes
MAGIC_GRID = 0x314244566F6E614E  # "NanoVDB1": a grid buffer
MAGIC_FILE = 0x324244566F6E614E  # "NanoVDB2": a file
CURRENT_MINOR, CURRENT_PATCH = 9, 2
VERSION_CURRENT = (MAJOR << 21) | (CURRENT_MINOR << 10) | CURRENT_PATCH
GRID_TYPE_ON_INDEX = 20  # ValueOnIndex: what 32.4's active-only ValueIndex became
CRC_BLOCK = 4096  # the tail checksum's block size (NANOVDB_CRC32_LOG2_BLOCK_SIZE 12)

GRID_TYPE_UNKNOWN = 0
GRID_TYPE_FLOAT = 1
GRID_TYPE_INT16 = 3
GRID_TYPE_INT32 = 4
GRID_TYPE_INT64 = 5
GRID_TYPE_INDEX = 19
GRID_TYPE_END = 20
GRID_CLASS_INDEX = 8
GRID_CLASS_END = 9
GRID_FLAG_HAS_BBOX = 1 << 1
GRID_FLAG_BREADTH_FIRST = 1 << 5
BLIND_CLASS_UNKNOWN = 0
BLIND_CLASS_CHANNEL = 4
BLIND_SEMANTIC_UNKNOWN = 0
LEAF_FLAG_HAS_BBOX = 2
LEAF_FLAG_ACTIVE_ONLY = 16  # "bit 4": only active voxels are indexed
NODE_FLAG_ACTIVE = 2  # internal node holds active values
CODEC_NONE = 0
CHILD_TILE_VALUE = np.uint64(0xFFFFFFFFFFFFFFFF)  # what IndexGridBuilder puts in child tiles
CRC_EMPTY = 0xFFFFFFFF

VALUES_CHANNEL = b"hyprvdb_values"
META_CHANNEL = b"hyprvdb_meta"
META_FORMAT = 1  # meta channel: int64[4] = (format, rows, cols, step or -1)

NAME_MAX = 255  # GridData::MaxNameSize - 1 (NUL); longer names need blind data

GRID_SIZE, TREE_SIZE, ROOT_SIZE, TILE_SIZE = 672, 64, 96, 32
UPPER_SIZE, LOWER_SIZE, LEAF_SIZE, BLIND_META_SIZE = 270400, 33856, 96, 288
TREE_OFF = GRID_SIZE
ROOT_OFF = TREE_OFF + TREE_SIZE
TILES_OFF = ROOT_OFF + ROOT_SIZE
CHECKSUM_HEAD_START = 16  # magic and checksum are left out
# byte offsets inside nodes, used by the tree walk
UPPER_CHILD_MASK, UPPER_TABLE = 4128, 8256
LOWER_CHILD_MASK, LOWER_TABLE = 544, 1088
LEAF_MASK, LEAF_VALUE_OFF = 16, 88


def _struct(fields: list[tuple[str, object, int]], itemsize: int) -> np.dtype:
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": itemsize})


GRID_DT = _struct([
    ("magic", "<u8", 0), ("checksum", "<u8", 8), ("version", "<u4", 16), ("flags", "<u4", 20),
    ("grid_index", "<u4", 24), ("grid_count", "<u4", 28), ("grid_size", "<u8", 32),
    ("grid_name", "S256", 40),
    ("map_matf", ("<f4", 9), 296), ("map_invmatf", ("<f4", 9), 332), ("map_vecf", ("<f4", 3), 368),
    ("map_taperf", "<f4", 380), ("map_matd", ("<f8", 9), 384), ("map_invmatd", ("<f8", 9), 456),
    ("map_vecd", ("<f8", 3), 528), ("map_taperd", "<f8", 552),
    ("world_bbox", ("<f8", 6), 560), ("voxel_size", ("<f8", 3), 608),
    ("grid_class", "<u4", 632), ("grid_type", "<u4", 636),
    ("blind_metadata_offset", "<i8", 640), ("blind_metadata_count", "<u4", 648),
    ("data0", "<u4", 652), ("data1", "<u8", 656), ("data2", "<u8", 664),
], GRID_SIZE)
TREE_DT = _struct([("node_offset", ("<u8", 4), 0), ("node_count", ("<u4", 3), 32),
                   ("tile_count", ("<u4", 3), 44), ("voxel_count", "<u8", 56)], TREE_SIZE)
ROOT_DT = _struct([("bbox", ("<i4", 6), 0), ("table_size", "<u4", 24), ("background", "<u8", 32),
                   ("minimum", "<u8", 40), ("maximum", "<u8", 48), ("average", "<u8", 56),
                   ("stddev", "<u8", 64)], ROOT_SIZE)
TILE_DT = _struct([("key", "<u8", 0), ("child", "<i8", 8), ("state", "<u4", 16),
                   ("value", "<u8", 24)], TILE_SIZE)
UPPER_DT = _struct([("bbox", ("<i4", 6), 0), ("flags", "<u8", 24),
                    ("value_mask", ("<u8", 512), 32),
                    ("child_mask", ("<u8", 512), UPPER_CHILD_MASK),
                    ("stats", ("<u8", 4), 8224),
                    ("table", ("<i8", 32768), UPPER_TABLE)], UPPER_SIZE)
LOWER_DT = _struct([("bbox", ("<i4", 6), 0), ("flags", "<u8", 24),
                    ("value_mask", ("<u8", 64), 32), ("child_mask", ("<u8", 64), LOWER_CHILD_MASK),
                    ("stats", ("<u8", 4), 1056), ("table", ("<i8", 4096), LOWER_TABLE)], LOWER_SIZE)
LEAF_DT = _struct([("bbox_min", ("<i4", 3), 0), ("bbox_dif", ("u1", 3), 12), ("flags", "u1", 15),
                   ("value_mask", ("<u8", 8), LEAF_MASK), ("stats_off", "<u8", 80),
                   ("value_off", "<u8", LEAF_VALUE_OFF)], LEAF_SIZE)
BLIND_DT = _struct([("byte_offset", "<i8", 0), ("element_count", "<u8", 8), ("flags", "<u4", 16),
                    ("semantic", "<u4", 20), ("data_class", "<u4", 24), ("data_type", "<u4", 28),
                    ("name", "S256", 32)], BLIND_META_SIZE)
FILE_HEADER_DT = _struct([("magic", "<u8", 0), ("version", "<u4", 8), ("grid_count", "<u2", 12),
                          ("codec", "<u2", 14)], 16)
FILE_META_DT = _struct([
    ("grid_size", "<u8", 0), ("file_size", "<u8", 8), ("name_key", "<u8", 16),
    ("voxel_count", "<u8", 24), ("grid_type", "<u4", 32), ("grid_class", "<u4", 36),
    ("world_bbox", ("<f8", 6), 40), ("index_bbox", ("<i4", 6), 88), ("voxel_size", ("<f8", 3), 112),
    ("name_size", "<u4", 136), ("node_count", ("<u4", 4), 140), ("tile_count", ("<u4", 3), 156),
    ("codec", "<u2", 168), ("padding", "<u2", 170), ("version", "<u4", 172),
], 176)

_EMPTY_COORD_BBOX = (2**31 - 1,) * 3 + (-(2**31),) * 3  # CoordBBox() in NanoVDB
_DBL_MAX = float(np.finfo(np.float64).max)
_EMPTY_WORLD_BBOX = (_DBL_MAX,) * 3 + (-_DBL_MAX,) * 3  # BBox<Vec3d>()

COORD_MAX = 2**31 - 1  # the packed sort key below needs 0 <= x < 2^31, 0 <= y < 2^28, 0 <= z < 8


class LayoutError(ValueError):
    """A buffer is not a well-formed NanoVDB 32.4 index grid of the kind written here."""


def _pad(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def aligned_empty(nbytes: int) -> np.ndarray:
    """A uint8 array whose data pointer is 64-byte aligned (NanoVDB needs 32)."""
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + nbytes]


def aligned_copy(buf: np.ndarray) -> np.ndarray:
    out = aligned_empty(buf.nbytes)
    out[:] = buf
    return out


# ------------------------------------------------------------------------------------ popcount
if hasattr(np, "bitwise_count"):  # numpy >= 2.0
    def popcount64(a: np.ndarray) -> np.ndarray:
        return np.bitwise_count(a).astype(np.int64)
else:  # pragma: no cover - numpy 1.x
    _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)

    def popcount64(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a, dtype=np.uint64)
        return _POP8[a.view(np.uint8)].reshape(*a.shape, 8).sum(axis=-1)


# ----------------------------------------------------------------------------------- CRC32 math
@functools.lru_cache(maxsize=None)
def _crc_tables(length: int) -> tuple[np.ndarray, int]:
    """Linear CRC32 tables for messages of ``length`` bytes.

    CRC32 is affine over GF(2): ``crc(m) = crc(0^L) ^ XOR_p T[p, m[p]]`` with
    ``T[p, b] = crc(b at p, zeros elsewhere) ^ crc(0^L)``. This turns the CRCs of many equal
    length records (leaves) into a few table gathers per byte column.
    """
    zero = zlib.crc32(bytes(length))
    bits = np.zeros((length, 8), dtype=np.uint32)
    msg = bytearray(length)
    for p in range(length):
        for k in range(8):
            msg[p] = 1 << k
            bits[p, k] = zlib.crc32(msg) ^ zero
        msg[p] = 0
    b = np.arange(256)
    table = np.zeros((length, 256), dtype=np.uint32)
    for k in range(8):
        table ^= np.where((b >> k) & 1, bits[:, k:k + 1], np.uint32(0)).astype(np.uint32)
    return table, zero


def crc32_rows(rows: np.ndarray, *, skip_columns: slice | None = None) -> np.ndarray:
    """CRC32 of every row of a 2-D uint8 array (row length a multiple of 8), vectorized over
    rows: one table gather per byte column that varies, one table entry per constant column.

    Columns in ``skip_columns`` are treated as zero (the caller XORs their part in itself).
    """
    n, length = rows.shape
    table, zero = _crc_tables(length)
    out = np.full(n, zero, dtype=np.uint32)
    if n == 0:
        return out
    words = rows.view("<u8")
    skip = range(length)[skip_columns] if skip_columns is not None else range(0)
    const = np.uint32(0)
    first = rows[0]
    for k in range(length // 8):
        cols = [p for p in range(8 * k, 8 * k + 8) if p not in skip]
        if not cols:
            continue
        diff = np.bitwise_or.reduce(words[:, k] ^ words[0, k])  # bits that differ from row 0
        for p in cols:
            if (int(diff) >> (8 * (p % 8))) & 255:
                out ^= np.take(table[p], rows[:, p])
            elif first[p]:
                const ^= table[p, first[p]]
    out ^= const
    return out


@functools.lru_cache(maxsize=None)
def _leaf_mask_bit_crc() -> np.ndarray:
    """CRC contribution of voxel ``n``'s mask bit inside a 96-byte leaf, for n in 0..511."""
    table, _ = _crc_tables(LEAF_SIZE)
    n = np.arange(512)
    return table[LEAF_MASK + n // 8, 1 << (n % 8)]


def leaf_crcs(leaf_bytes: np.ndarray, voxel_n: np.ndarray | None = None,
              leaf_starts: np.ndarray | None = None) -> np.ndarray:
    """CRC32 of each 96-byte leaf. With the active voxels' offsets ``voxel_n`` (grouped by leaf,
    leaf ``i``'s voxels starting at ``leaf_starts[i]``) the 64 mask bytes are accounted for one
    bit per active voxel instead of one gather per mask byte column."""
    if voxel_n is None:
        return crc32_rows(leaf_bytes)
    out = crc32_rows(leaf_bytes, skip_columns=slice(LEAF_MASK, LEAF_MASK + 64))
    if len(voxel_n):
        out ^= _segment_xors(_leaf_mask_bit_crc()[voxel_n], leaf_starts)
    return out


# ------------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class NodeLayout:
    """Byte offsets (from the start of the grid buffer) and counts of a grid's node arrays and
    blind-data records. Offsets of node arrays are valid only when the matching count is
    nonzero."""

    grid_size: int
    tile_count: int
    upper_offset: int
    upper_count: int
    lower_offset: int
    lower_count: int
    leaf_offset: int
    leaf_count: int
    blind_meta_offset: int

    @property
    def head_end(self) -> int:
        """End of the bytes covered by the low word of NanoVDB 32.4's checksum."""
        return TILES_OFF + TILE_SIZE * self.tile_count


@dataclasses.dataclass(frozen=True)
class GridLayout(NodeLayout):
    """A weight grid's layout: ``values_offset`` is where the float32 values channel starts
    (``value_count`` floats, index 0 = background), ``meta_offset`` the meta channel."""

    meta_offset: int
    values_offset: int
    value_count: int

    @property
    def voxel_count(self) -> int:
        return self.value_count - 1


def plan(tile_count: int, upper_count: int, lower_count: int, leaf_count: int,
         value_count: int) -> GridLayout:
    upper = TILES_OFF + TILE_SIZE * tile_count
    lower = upper + UPPER_SIZE * upper_count
    leaf = lower + LOWER_SIZE * lower_count
    blind = leaf + LEAF_SIZE * leaf_count
    meta = blind + 2 * BLIND_META_SIZE
    values = meta + _pad(8 * 4)
    end = values + _pad(4 * value_count)
    return GridLayout(end, tile_count, upper, upper_count, lower, lower_count, leaf, leaf_count,
                      blind, meta, values, value_count)


def sort_key(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """An int64 per voxel whose order is the grid's index order: root tile key, then the child
    slot in the upper node, the child slot in the lower node, and the offset in the leaf.

    Bits, high to low: x>>12, y>>12 | (x>>7)&31, (y>>7)&31 | (x>>3)&15, (y>>3)&15 | x&7, y&7, z.
    Assumes 0 <= x < 2^31, 0 <= y < 2^28, 0 <= z < 8 (so z never leaves the first leaf layer).
    """
    kx = (x >> 12) << 43
    kx |= (x & 0xF80) << 15
    kx |= (x & 0x78) << 10
    kx |= (x & 7) << 6
    ky = (y >> 12) << 27
    ky |= (y & 0xF80) << 10
    ky |= (y & 0x78) << 6
    ky |= (y & 7) << 3
    kx |= ky
    kx |= z
    return kx


def _starts(keys: np.ndarray) -> np.ndarray:
    """Indices where a sorted key array changes value (always including 0)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))


def _group_ids(starts: np.ndarray, n: int) -> np.ndarray:
    """Group number of each of ``n`` sorted items, given where the groups start."""
    return np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n)))


def _segment_sums(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of uint64 segments (modulo 2^64), by differences of one running sum: cheaper than
    ``np.add.reduceat`` when segments are short. For distinct bits a sum is their OR."""
    run = np.cumsum(a, dtype=np.uint64)
    out = run[np.append(starts[1:], len(a)) - 1]
    out[1:] -= run[starts[1:] - 1]
    return out


def _segment_xors(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    run = np.bitwise_xor.accumulate(a)
    out = run[np.append(starts[1:], len(a)) - 1]
    out[1:] ^= run[starts[1:] - 1]
    return out


def _masks(group: np.ndarray, slot: np.ndarray, n_groups: int, words: int) -> np.ndarray:
    """(n_groups, words) uint64 bit masks with bit ``slot`` of group ``group`` set for every
    pair; pairs sorted by (group, slot) and distinct."""
    out = np.zeros((n_groups, words), dtype=np.uint64)
    if len(slot):
        word = group * words + (slot >> 6)
        ws = _starts(word)
        bits = np.left_shift(np.uint64(1), (slot & 63).astype(np.uint64))
        out.reshape(-1)[word[ws]] = _segment_sums(bits, ws)
    return out


_LOW_BIT = np.array([(b & -b).bit_length() - 1 if b else 8 for b in range(256)], dtype=np.int32)
_HIGH_BIT = np.array([b.bit_length() - 1 for b in range(256)], dtype=np.int32)


_PACK_BYTES = np.uint64(0x0102040810204080)  # (v * this) >> 56 packs 8 bytes of 0/1 into bits


def _nonzero_bytes(v: np.ndarray) -> np.ndarray:
    """uint8 whose bit i says whether byte i of each uint64 is nonzero."""
    on = (v.view(np.uint8).reshape(-1, 8) != 0).view(np.uint64).reshape(-1)
    return ((on * _PACK_BYTES) >> np.uint64(56)).astype(np.uint8)


def _leaf_bboxes(origin: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(n, 6) int32 active bboxes of leaves from their origins (n, 3) and masks (n, 8), the
    way ``LeafNode::updateBBox`` finds them: mask word w is x = w, byte b of a word is y = b,
    bit k of a byte is z = k."""
    n = len(masks)
    out = np.empty((n, 6), dtype=np.int32)
    words_on = ((((masks != 0).view(np.uint64).reshape(-1)) * _PACK_BYTES) >> np.uint64(56))
    words_on = words_on.astype(np.uint8)
    union = masks[:, 0].copy()
    for w in range(1, 8):
        union |= masks[:, w]
    bytes_on = _nonzero_bytes(union)
    bits_on = union | (union >> np.uint64(32))
    bits_on |= bits_on >> np.uint64(16)
    bits_on |= bits_on >> np.uint64(8)
    bits_on = (bits_on & np.uint64(255)).astype(np.uint8)
    for axis, on in enumerate((words_on, bytes_on, bits_on)):
        out[:, axis] = _LOW_BIT[on]
        out[:, 3 + axis] = _HIGH_BIT[on]
    out[:, :3] += origin
    out[:, 3:] += origin
    return out


def _bbox_reduce(bbox: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(groups, 6) int32 union of the (n, 6) bboxes of consecutive groups of children."""
    out = np.empty((len(starts), 6), dtype=np.int32)
    out[:, :3] = np.minimum.reduceat(bbox[:, :3], starts, axis=0)
    out[:, 3:] = np.maximum.reduceat(bbox[:, 3:], starts, axis=0)
    return out


@dataclasses.dataclass(frozen=True)
class Channel:
    """One blind-data channel: its record (name, class, NanoVDB type tag) and its elements.
    ``data`` is a 1-D little-endian array; the record's element count is ``len(data)``."""

    name: bytes
    data_class: int
    data_type: int
    data: np.ndarray


@dataclasses.dataclass(frozen=True)
class TreeLayout(NodeLayout):
    """The layout of a grid of any blind channels: ``channel_offsets[i]`` is where the data of
    record ``i`` starts."""

    channel_offsets: tuple[int, ...]
    voxel_count: int


def index_key(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For voxels already in index order: (key, root) with ``root`` NanoVDB's root-tile key
    of each voxel and ``key`` an int64 that spells out the walk, high to low: the rank of the
    root tile among those present, the child slot in the upper node (15 bits), the child slot
    in the lower node (12 bits) and the offset in the leaf (9 bits)."""
    u = np.uint64
    root = (x >> 12).astype(u) << u(42)
    root |= (y >> 12).astype(u) << u(21)
    root |= (z >> 12).astype(u)
    key = np.zeros(len(x), dtype=np.int64)
    if len(x) > 1:
        np.cumsum(root[1:] != root[:-1], out=key[1:])
    key <<= 15
    key |= ((x >> 7) & 31) << 10 | ((y >> 7) & 31) << 5 | ((z >> 7) & 31)
    key <<= 12
    key |= ((x >> 3) & 15) << 8 | ((y >> 3) & 15) << 4 | ((z >> 3) & 15)
    key <<= 9
    key |= (x & 7) << 6 | (y & 7) << 3 | (z & 7)
    return key, root


def build(keys: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, values: np.ndarray,
          *, name: bytes, meta: np.ndarray) -> tuple[np.ndarray, GridLayout]:
    """Write one weight grid for active voxels sorted by ``sort_key`` (unique keys).

    ``values[k]`` belongs to voxel k; ``meta`` is the int64[4] meta channel. Returns the buffer
    (64-byte aligned uint8) and its layout.
    """
    vals = np.zeros(len(keys) + 1, dtype="<f4")
    vals[1:] = values
    channels = [Channel(VALUES_CHANNEL, BLIND_CLASS_CHANNEL, GRID_TYPE_FLOAT, vals),
                Channel(META_CHANNEL, BLIND_CLASS_UNKNOWN, GRID_TYPE_INT64,
                        np.asarray(meta, dtype="<i8"))]
    buf, t = build_grid(x, y, z, channels, name=name, data_order=(1, 0))
    lay = plan(t.tile_count, t.upper_count, t.lower_count, t.leaf_count, len(keys) + 1)
    assert (lay.grid_size, lay.values_offset, lay.meta_offset) == (
        t.grid_size, t.channel_offsets[0], t.channel_offsets[1])
    return buf, lay


def build_grid(x: np.ndarray, y: np.ndarray, z: np.ndarray, channels: list[Channel], *,
               name: bytes, data_order: tuple[int, ...] | None = None
               ) -> tuple[np.ndarray, TreeLayout]:
    """Write one ``ValueIndex`` grid whose active voxels are ``(x, y, z)``, given unique and in
    index order, with ``channels`` as its blind data (records in list order, data blocks in
    ``data_order``, each 32-byte aligned). Leaf ``mValueOff`` and ``GridData::mData1`` follow
    NanoVDB's active-only convention (index k + 1 for the k-th voxel, 0 the background)."""
    nnz = len(x)
    key, root_key = index_key(x, y, z)
    # leaves: voxels are sorted by (leaf, offset in leaf)
    leaf_start = _starts(key >> 9)
    n_leaf = len(leaf_start) if nnz else 0
    voxel_n = key & 511
    leaf_key = key[leaf_start]
    # lower nodes: leaves sorted by (lower, child slot)
    lower_start = _starts(leaf_key >> 21)
    n_lower = len(lower_start)
    lower_of_leaf = _group_ids(lower_start, n_leaf)
    leaf_slot = (leaf_key >> 9) & 4095
    lower_key = leaf_key[lower_start]
    # upper nodes: lowers sorted by (upper, child slot)
    upper_start = _starts(lower_key >> 36)
    n_upper = len(upper_start)
    upper_of_lower = _group_ids(upper_start, n_lower)
    lower_slot = (lower_key >> 21) & 32767

    order = range(len(channels)) if data_order is None else data_order
    upper_off = TILES_OFF + TILE_SIZE * n_upper
    lower_off = upper_off + UPPER_SIZE * n_upper
    leaf_off = lower_off + LOWER_SIZE * n_lower
    blind_off = leaf_off + LEAF_SIZE * n_leaf
    at = blind_off + BLIND_META_SIZE * len(channels)
    data_at = [0] * len(channels)
    for i in order:
        data_at[i] = at
        at += _pad(channels[i].data.nbytes)
    lay = TreeLayout(at, n_upper, upper_off, n_upper, lower_off, n_lower, leaf_off, n_leaf,
                     blind_off, tuple(data_at), nnz)
    buf = aligned_empty(lay.grid_size)
    buf[:] = 0

    if n_leaf:
        # leaves: mask word w holds voxels with x & 7 == w, so a voxel's word is voxel_n >> 6
        masks = np.zeros(n_leaf * 8, dtype=np.uint64)
        ws = _starts(key >> 6)
        new_leaf = np.zeros(nnz, dtype=np.int64)
        new_leaf[leaf_start] = 1
        leaf_of_word = (np.cumsum(new_leaf) - 1)[ws]
        masks[leaf_of_word * 8 + (voxel_n[ws] >> 6)] = _segment_sums(
            np.left_shift(np.uint64(1), (voxel_n & 63).astype(np.uint64)), ws)
        masks = masks.reshape(n_leaf, 8)
        origin = np.stack((x[leaf_start], y[leaf_start], z[leaf_start]), axis=1) & ~7
        leaf_bbox = _leaf_bboxes(origin, masks)
        # one 96-byte record = 12 little-endian words: (x, y) | (z, dif xyz, flags) | mask x8 |
        # stats offset | value offset
        lo = leaf_bbox[:, :3].astype(np.uint32).astype(np.uint64)
        dif = (leaf_bbox[:, 3:] - leaf_bbox[:, :3]).astype(np.uint64)
        rec = np.empty((n_leaf, LEAF_SIZE // 8), dtype=np.uint64)
        rec[:, 0] = lo[:, 0] | (lo[:, 1] << np.uint64(32))
        rec[:, 1] = lo[:, 2] | (dif[:, 0] << np.uint64(32)) | (dif[:, 1] << np.uint64(40)) \
            | (dif[:, 2] << np.uint64(48)) \
            | np.uint64((LEAF_FLAG_ACTIVE_ONLY | LEAF_FLAG_HAS_BBOX) << 56)
        rec[:, 2:10] = masks
        rec[:, 10] = 0
        rec[:, 11] = 1 + leaf_start
        buf[lay.leaf_offset:lay.blind_meta_offset].view("<u8")[:] = rec.reshape(-1)
        # lower internal nodes
        lowers = buf[lay.lower_offset:lay.leaf_offset].view(LOWER_DT)
        lower_bbox = _bbox_reduce(leaf_bbox, lower_start)
        lowers["bbox"] = lower_bbox
        lowers["flags"] = NODE_FLAG_ACTIVE
        lowers["child_mask"] = _masks(lower_of_leaf, leaf_slot, n_lower, 64)
        leaf_addr = lay.leaf_offset + LEAF_SIZE * np.arange(n_leaf)
        lowers["table"][lower_of_leaf, leaf_slot] = (
            leaf_addr - (lay.lower_offset + LOWER_SIZE * lower_of_leaf))
        # upper internal nodes
        uppers = buf[lay.upper_offset:lay.lower_offset].view(UPPER_DT)
        upper_bbox = _bbox_reduce(lower_bbox, upper_start)
        uppers["bbox"] = upper_bbox
        uppers["flags"] = NODE_FLAG_ACTIVE
        uppers["child_mask"] = _masks(upper_of_lower, lower_slot, n_upper, 512)
        lower_addr = lay.lower_offset + LOWER_SIZE * np.arange(n_lower)
        uppers["table"][upper_of_lower, lower_slot] = (
            lower_addr - (lay.upper_offset + UPPER_SIZE * upper_of_lower))
        # root tiles, one per upper node, in key order
        tiles = buf[TILES_OFF:lay.upper_offset].view(TILE_DT)
        tiles["key"] = root_key[leaf_start[lower_start[upper_start]]]
        tiles["child"] = lay.upper_offset + UPPER_SIZE * np.arange(n_upper) - ROOT_OFF
        tiles["value"] = CHILD_TILE_VALUE
        index_bbox = tuple(int(v) for v in _bbox_reduce(upper_bbox, np.zeros(1, np.int64))[0])
    else:
        index_bbox = _EMPTY_COORD_BBOX

    root = buf[ROOT_OFF:TILES_OFF].view(ROOT_DT)[0]
    root["bbox"] = index_bbox
    root["table_size"] = n_upper

    tree = buf[TREE_OFF:ROOT_OFF].view(TREE_DT)[0]
    tree["node_offset"] = [lay.leaf_offset - TREE_OFF if n_leaf else 0,
                           lay.lower_offset - TREE_OFF if n_lower else 0,
                           lay.upper_offset - TREE_OFF if n_upper else 0,
                           ROOT_OFF - TREE_OFF]
    tree["node_count"] = [n_leaf, n_lower, n_upper]
    tree["voxel_count"] = nnz

    grid = buf[:GRID_SIZE].view(GRID_DT)[0]
    grid["magic"] = MAGIC
    grid["version"] = VERSION
    grid["flags"] = GRID_FLAG_BREADTH_FIRST | (GRID_FLAG_HAS_BBOX if nnz else 0)
    grid["grid_count"] = 1
    grid["grid_size"] = lay.grid_size
    grid["grid_name"] = name
    eye = np.eye(3).reshape(-1)
    grid["map_matf"] = grid["map_invmatf"] = grid["map_matd"] = grid["map_invmatd"] = eye
    grid["map_taperf"] = grid["map_taperd"] = 1.0
    if nnz:  # world bbox of voxel *cells*: max corner is one past the last index
        grid["world_bbox"] = index_bbox[:3] + tuple(v + 1 for v in index_bbox[3:])
    else:
        grid["world_bbox"] = _EMPTY_WORLD_BBOX
    grid["voxel_size"] = (1.0, 1.0, 1.0)
    grid["grid_class"] = GRID_CLASS_INDEX
    grid["grid_type"] = GRID_TYPE_INDEX
    grid["blind_metadata_offset"] = lay.blind_meta_offset
    grid["blind_metadata_count"] = len(channels)
    grid["data1"] = nnz + 1

    blind = buf[lay.blind_meta_offset:lay.blind_meta_offset
                + BLIND_META_SIZE * len(channels)].view(BLIND_DT)
    for i, ch in enumerate(channels):
        blind[i]["byte_offset"] = data_at[i] - (lay.blind_meta_offset + BLIND_META_SIZE * i)
        blind[i]["element_count"] = len(ch.data)
        blind[i]["semantic"] = BLIND_SEMANTIC_UNKNOWN
        blind[i]["data_class"] = ch.data_class
        blind[i]["data_type"] = ch.data_type
        blind[i]["name"] = ch.name
        raw = np.ascontiguousarray(ch.data).view(np.uint8).reshape(-1)
        buf[data_at[i]:data_at[i] + len(raw)] = raw

    grid["data2"] = blind_crc(buf, lay)
    leaf_bytes = buf[lay.leaf_offset:lay.blind_meta_offset].reshape(n_leaf, LEAF_SIZE)
    grid["checksum"] = checksum(buf, lay, leaf_crc=leaf_crcs(leaf_bytes, voxel_n, leaf_start))
    return buf, lay


# ------------------------------------------------------------------------------ checksums
def head_crc(buf: np.ndarray, lay: GridLayout) -> int:
    return zlib.crc32(buf[CHECKSUM_HEAD_START:lay.head_end])


def node_crcs(buf: np.ndarray, lay: GridLayout, leaf_crc: np.ndarray | None = None) -> np.ndarray:
    """Per-node CRC32s in NanoVDB's order (upper, lower, leaf). The internal nodes are few and
    large (264 KB / 33 KB, mostly zero), so zlib does them one by one."""
    out = []
    for i in range(lay.upper_count):
        a = lay.upper_offset + UPPER_SIZE * i
        out.append(zlib.crc32(buf[a:a + UPPER_SIZE]))
    for i in range(lay.lower_count):
        a = lay.lower_offset + LOWER_SIZE * i
        out.append(zlib.crc32(buf[a:a + LOWER_SIZE]))
    if leaf_crc is None:
        leaf_bytes = buf[lay.leaf_offset:lay.leaf_offset + LEAF_SIZE * lay.leaf_count]
        leaf_crc = leaf_crcs(leaf_bytes.reshape(lay.leaf_count, LEAF_SIZE))
    return np.concatenate((np.array(out, dtype=np.uint64), leaf_crc.astype(np.uint64)))


def checksum(buf: np.ndarray, lay: GridLayout, *, leaf_crc: np.ndarray | None = None,
             full: bool = True) -> int:
    """NanoVDB 32.4.2's ``GridChecksum`` (``ChecksumMode::Full`` unless ``full=False``), with
    ``std::uint_fast32_t`` of 8 bytes as on LP64 Linux."""
    head = head_crc(buf, lay)
    if not full or lay.tile_count == 0:
        return head | (CRC_EMPTY << 32)
    tail = zlib.crc32(node_crcs(buf, lay, leaf_crc).astype("<u8").tobytes())
    return head | (tail << 32)


def blind_crc(buf: np.ndarray, lay: GridLayout) -> int:
    """CRC32 of the blind-data section, kept in ``GridData::mData2``."""
    return zlib.crc32(buf[lay.blind_meta_offset:lay.grid_size])


def restamp(buf: np.ndarray, lay: GridLayout) -> None:
    """Refresh ``mData2`` and the head CRC after blind data changed; the node CRCs (high word of
    the checksum) do not cover blind data and stay as they are."""
    grid = buf[:GRID_SIZE].view(GRID_DT)[0]
    grid["data2"] = blind_crc(buf, lay)
    grid["checksum"] = (int(grid["checksum"]) & ~0xFFFFFFFF) | head_crc(buf, lay)


# --------------------------------------------------------------------------------- reading
def grid_header(buf: np.ndarray) -> np.void:
    return buf[:GRID_SIZE].view(GRID_DT)[0]


def parse(buf: np.ndarray) -> GridLayout:
    """Locate the parts of a weight grid (:func:`build`), checking that every offset stays
    inside it.

    Raises :class:`LayoutError` for buffers that do not have the shape written by
    :func:`build` (node arrays in breadth-first order, two blind channels after the leaves).
    It does not verify checksums or node contents.
    """
    t = parse_tree(buf, (VALUES_CHANNEL, META_CHANNEL), ("<f4", "<i8"), data_order=(1, 0))
    recs = buf[t.blind_meta_offset:t.blind_meta_offset + 2 * BLIND_META_SIZE].view(BLIND_DT)
    value_count = t.voxel_count + 1
    if [int(n) for n in recs["element_count"]] != [value_count, 4] \
            or list(recs["data_type"]) != [GRID_TYPE_FLOAT, GRID_TYPE_INT64]:
        raise LayoutError("blind-data records do not describe hyprvdb's values and meta channels")
    lay = plan(t.tile_count, t.upper_count, t.lower_count, t.leaf_count, value_count)
    assert (lay.values_offset, lay.meta_offset, lay.grid_size) == (
        t.channel_offsets[0], t.channel_offsets[1], t.grid_size)
    return lay


def parse_tree(buf: np.ndarray, names: tuple[bytes, ...], dtypes: tuple[str, ...], *,
               data_order: tuple[int, ...] | None = None) -> TreeLayout:
    """Locate the parts of a grid that :func:`build_grid` wrote with channels ``names`` of
    element types ``dtypes`` (data blocks in ``data_order``, default record order), checking
    every offset and count against the buffer. Raises :class:`LayoutError`; checksums are not
    verified here."""
    size = len(buf)
    if size < TILES_OFF:
        raise LayoutError(f"a grid buffer needs at least {TILES_OFF} bytes, got {size}")
    grid = grid_header(buf)
    if int(grid["grid_size"]) != size:
        raise LayoutError(f"the grid says it is {int(grid['grid_size'])} bytes, got {size}")
    tree = buf[TREE_OFF:ROOT_OFF].view(TREE_DT)[0]
    root = buf[ROOT_OFF:TILES_OFF].view(ROOT_DT)[0]
    if int(tree["node_offset"][3]) != ROOT_OFF - TREE_OFF:
        raise LayoutError("the root node does not follow the tree header")
    n_leaf, n_lower, n_upper = (int(v) for v in tree["node_count"])
    tiles, voxels = int(root["table_size"]), int(tree["voxel_count"])
    if tiles != n_upper or int(grid["data1"]) != voxels + 1:
        raise LayoutError(f"inconsistent counts: {tiles} root tiles, {n_upper} upper nodes, "
                          f"{voxels} active voxels, {int(grid['data1'])} values")
    upper = TILES_OFF + TILE_SIZE * tiles
    lower = upper + UPPER_SIZE * n_upper
    leaf = lower + LOWER_SIZE * n_lower
    blind = leaf + LEAF_SIZE * n_leaf
    offsets = [int(v) for v in tree["node_offset"][:3]]
    expected = [leaf - TREE_OFF if n_leaf else 0, lower - TREE_OFF if n_lower else 0,
                upper - TREE_OFF if n_upper else 0]
    if offsets != expected:
        raise LayoutError(f"node arrays are not packed breadth-first after the root "
                          f"(tree offsets {offsets}, expected {expected})")
    n_ch = len(names)
    if (int(grid["blind_metadata_offset"]) != blind
            or int(grid["blind_metadata_count"]) != n_ch
            or blind + BLIND_META_SIZE * n_ch > size):
        raise LayoutError(f"the grid does not have {n_ch} blind-data channels after the leaves")
    recs = buf[blind:blind + BLIND_META_SIZE * n_ch].view(BLIND_DT)
    got = [bytes(n) for n in recs["name"]]
    if got != list(names):
        raise LayoutError(f"blind-data channels are {got}, expected {list(names)}")
    at = blind + BLIND_META_SIZE * n_ch
    data_at = [0] * n_ch
    for i in (range(n_ch) if data_order is None else data_order):
        where = int(recs["byte_offset"][i]) + blind + BLIND_META_SIZE * i
        nbytes = int(recs["element_count"][i]) * np.dtype(dtypes[i]).itemsize
        if where != at or at + nbytes > size:
            raise LayoutError(f"channel {names[i].decode()} is not where it belongs")
        data_at[i] = at
        at += _pad(nbytes)
    if at != size:
        raise LayoutError(f"a grid with these counts is {at} bytes, the buffer is {size}")
    return TreeLayout(size, tiles, upper, n_upper, lower, n_lower, leaf, n_leaf, blind,
                      tuple(data_at), voxels)


def channel_counts(buf: np.ndarray, lay: TreeLayout) -> list[int]:
    """Element counts of the blind-data records of a grid :func:`parse_tree` accepted."""
    n = len(lay.channel_offsets)
    recs = buf[lay.blind_meta_offset:lay.blind_meta_offset + BLIND_META_SIZE * n].view(BLIND_DT)
    return [int(c) for c in recs["element_count"]]


def values_view(buf: np.ndarray, lay: GridLayout) -> np.ndarray:
    return buf[lay.values_offset:lay.values_offset + 4 * lay.value_count].view("<f4")


def meta_view(buf: np.ndarray, lay: GridLayout) -> np.ndarray:
    return buf[lay.meta_offset:lay.meta_offset + 32].view("<i8")


def leaves_view(buf: np.ndarray, lay: GridLayout) -> np.ndarray:
    return buf[lay.leaf_offset:lay.blind_meta_offset].view(LEAF_DT)


def decode_active(buf: np.ndarray, lay: GridLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates (x, y, z int64) of all active voxels in index order, read from the leaves'
    origins and value masks."""
    leaves = leaves_view(buf, lay)
    if lay.leaf_count == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    mask_bytes = leaves["value_mask"].view(np.uint8).reshape(lay.leaf_count, 64)
    nz = np.flatnonzero(mask_bytes)
    bits = np.unpackbits(mask_bytes.reshape(-1)[nz][:, None], axis=1, bitorder="little")
    byte_i, bit_i = np.nonzero(bits)  # row-major: byte order, then bit order = mask order
    flat = nz[byte_i]
    leaf = flat // 64
    n = (flat % 64) * 8 + bit_i
    origin = leaves["bbox_min"].astype(np.int64) & ~7
    return origin[leaf, 0] + (n >> 6), origin[leaf, 1] + ((n >> 3) & 7), origin[leaf, 2] + (n & 7)


def mask_prefix(buf: np.ndarray, lay: GridLayout) -> np.ndarray:
    """(leaf_count, 8) int64: active voxels in the words of a leaf mask before word w."""
    words = leaves_view(buf, lay)["value_mask"]
    counts = popcount64(words)
    return np.cumsum(counts, axis=1) - counts


def index_of(buf: np.ndarray, lay: GridLayout, prefix: np.ndarray, x: np.ndarray,
             y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``ReadAccessor<ValueIndex>::getValue`` for many voxels at once: find the root tile by
    key, test the upper and lower nodes' child-mask bits and follow their child offsets, then
    add the leaf's ``mValueOff`` and the popcount of its mask below the voxel.

    Returns int64 indices into the values channel; 0 (the background) where inactive.
    ``prefix`` is :func:`mask_prefix` of the same buffer.
    """
    if lay.tile_count == 0 or len(x) == 0:
        return np.zeros(len(x), dtype=np.int64)
    u64 = buf.view("<u8")
    tiles = buf[TILES_OFF:lay.head_end].view(TILE_DT)
    # root: the tile whose key matches; misses walk the first upper node and are masked out
    keys = tiles["key"]
    order = np.argsort(keys)
    sorted_keys = keys[order]
    k = (x >> 12).astype(np.uint64) << np.uint64(42)
    k |= (y >> 12).astype(np.uint64) << np.uint64(21)
    k |= (z >> 12).astype(np.uint64)
    pos = np.minimum(np.searchsorted(sorted_keys, k), len(keys) - 1)
    hit = sorted_keys[pos] == k
    node = ROOT_OFF + tiles["child"][order][pos]
    node[~hit] = lay.upper_offset
    # upper (32^3) and lower (16^3) nodes: child-mask bit, then the child's byte offset
    for mask_at, table_at, shift, log2, miss in (
            (UPPER_CHILD_MASK, UPPER_TABLE, 7, 5, lay.lower_offset),
            (LOWER_CHILD_MASK, LOWER_TABLE, 3, 4, lay.leaf_offset)):
        side = (1 << log2) - 1
        slot = ((x >> shift) & side) << (2 * log2)
        slot |= ((y >> shift) & side) << log2
        slot |= (z >> shift) & side
        words = node >> 3
        bit = u64[words + (mask_at >> 3) + (slot >> 6)] >> (slot & 63).astype(np.uint64)
        hit &= (bit & np.uint64(1)).astype(bool)
        node += u64[words + (table_at >> 3) + slot].view(np.int64)
        node[~hit] = miss
    # leaf: mValueOff + countOn(n) where the mask bit is on
    n = (x & 7) << 6
    n |= (y & 7) << 3
    n |= z & 7
    w = n >> 6
    bit = (n & 63).astype(np.uint64)
    words = node >> 3
    word = u64[words + (LEAF_MASK >> 3) + w]
    hit &= ((word >> bit) & np.uint64(1)).astype(bool)
    below = popcount64(word & ((np.uint64(1) << bit) - np.uint64(1)))
    leaf = (node - lay.leaf_offset) // LEAF_SIZE
    idx = u64[words + (LEAF_VALUE_OFF >> 3)].view(np.int64)
    idx += prefix.reshape(-1)[leaf * 8 + w]
    idx += below
    idx[~hit] = 0
    return idx


# ------------------------------------------------------------------------------ .nvdb files
def string_hash(name: bytes) -> int:
    """``nanovdb::io::stringHash``: the key NanoVDB files store to find grids by name."""
    h = 0
    for c in name:
        overflow = h >> 56
        h = (h * 67 + c + overflow) & 0xFFFFFFFFFFFFFFFF
    return h


def file_prefix(buf: np.ndarray, lay: GridLayout) -> bytes:
    """Segment header, the one grid's metadata record and its name, as ``io::writeGrid`` writes
    them with ``Codec::NONE``, for NanoVDB 32.4 or 32.9 after the grid's own version; the grid
    buffer follows."""
    grid = grid_header(buf)
    tree = buf[TREE_OFF:ROOT_OFF].view(TREE_DT)[0]
    root = buf[ROOT_OFF:TILES_OFF].view(ROOT_DT)[0]
    name = grid_name(buf)
    current = int(grid["version"]) == VERSION_CURRENT
    version = VERSION_CURRENT if current else VERSION
    header = np.zeros(1, FILE_HEADER_DT)
    header["magic"] = MAGIC_FILE if current else MAGIC
    header["version"], header["grid_count"] = version, 1
    header["codec"] = CODEC_NONE
    meta = np.zeros(1, FILE_META_DT)
    meta["grid_size"] = meta["file_size"] = lay.grid_size
    meta["name_key"] = string_hash(name)
    meta["voxel_count"] = tree["voxel_count"]
    meta["grid_type"], meta["grid_class"] = grid["grid_type"], grid["grid_class"]
    meta["world_bbox"] = grid["world_bbox"]
    meta["index_bbox"] = root["bbox"]
    meta["voxel_size"] = grid["voxel_size"]
    meta["name_size"] = len(name) + 1
    meta["node_count"] = list(tree["node_count"]) + [1]
    meta["tile_count"] = tree["tile_count"]
    meta["codec"] = CODEC_NONE
    if current:  # 32.4's padding became the blind-data count
        meta["padding"] = grid["blind_metadata_count"]
    meta["version"] = version
    return header.tobytes() + meta.tobytes() + name + b"\0"


# ------------------------------------------------------------- current NanoVDB (32.6+)
#
# The same tree in NanoVDB 32.9's terms: grid magic "NanoVDB1", version 32.9.2, grid type
# OnIndex (20); a leaf keeps mOffset (its first index, 32.4's mValueOff) at byte 80 and
# mPrefixSum at 88 (seven 9-bit counts: bits 9(n-1).. hold the active voxels of mask words
# 0..n-1), flags 2 (bit 4 now means "has stats"); each blind record's word at byte 16 is the
# element's size (mValueSize). Checksum: the low word is the CRC32 of bytes [16, 736) (grid
# and tree headers), the high word the CRC32 of the CRC32s of the rest in 4 KB blocks, the
# last block taking the remainder (tools/GridChecksum.h, versions after 32.6.0), so it covers
# the blind data too. In memory hyprvdb keeps the 32.4 form, which its kernels are compiled
# against; these two functions convert whole buffers.

_ELEMENT_SIZE = {GRID_TYPE_UNKNOWN: 1, GRID_TYPE_FLOAT: 4, GRID_TYPE_INT16: 2, GRID_TYPE_INT32: 4,
                 GRID_TYPE_INT64: 8}
HEAD_END_CURRENT = GRID_SIZE + TREE_SIZE


def _prefix_sums(masks: np.ndarray) -> np.ndarray:
    """mPrefixSum of leaves from their (n, 8) uint64 masks."""
    counts = popcount64(masks).astype(np.uint64)
    run = np.cumsum(counts[:, :7], axis=1)
    out = np.zeros(len(masks), dtype=np.uint64)
    for n in range(7):
        out |= run[:, n] << np.uint64(9 * n)
    return out


def _blocked_crc(data: np.ndarray) -> int:
    n = len(data) // CRC_BLOCK
    if n == 0:
        return 0
    crcs = crc32_rows(data[:n * CRC_BLOCK].reshape(n, CRC_BLOCK)).astype("<u4")
    if len(data) > n * CRC_BLOCK:
        crcs[-1] = zlib.crc32(data[(n - 1) * CRC_BLOCK:])
    return zlib.crc32(crcs.tobytes())


def checksum_current(buf: np.ndarray) -> int:
    """NanoVDB 32.9's full checksum of a buffer in its layout."""
    head = zlib.crc32(buf[CHECKSUM_HEAD_START:HEAD_END_CURRENT])
    return head | (_blocked_crc(buf[HEAD_END_CURRENT:]) << 32)


def _leaves_and_blind(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(leaves as an (n, 96) uint8 view, blind-data records) of a grid buffer, from its
    headers, checked to lie inside it."""
    tree = buf[TREE_OFF:ROOT_OFF].view(TREE_DT)[0]
    grid = grid_header(buf)
    n_leaf = int(tree["node_count"][0])
    leaf_at = int(tree["node_offset"][0]) + TREE_OFF if n_leaf else 0
    blind_at, n_blind = int(grid["blind_metadata_offset"]), int(grid["blind_metadata_count"])
    if not (0 <= leaf_at and leaf_at + LEAF_SIZE * n_leaf <= len(buf)
            and 0 <= blind_at and blind_at + BLIND_META_SIZE * n_blind <= len(buf)) \
            or leaf_at % 8 or blind_at % 8:
        raise LayoutError("its leaves or blind-data records lie outside the grid")
    leaves = buf[leaf_at:leaf_at + LEAF_SIZE * n_leaf].reshape(n_leaf, LEAF_SIZE)
    return leaves, buf[blind_at:blind_at + BLIND_META_SIZE * n_blind].view(BLIND_DT)


def _empty_levels(buf: np.ndarray, *, current: bool) -> None:
    """Node offsets of empty levels: 0 in 32.4's form; in 32.9's, where the level's array
    would start (its validator adds the grid size to the first leaf's address, which must
    not be null)."""
    tree = buf[TREE_OFF:ROOT_OFF].view(TREE_DT)[0]
    n_leaf, n_lower, n_upper = (int(v) for v in tree["node_count"])
    upper = TILES_OFF + TILE_SIZE * int(buf[ROOT_OFF:TILES_OFF].view(ROOT_DT)[0]["table_size"])
    lower = upper + UPPER_SIZE * n_upper
    leaf = lower + LOWER_SIZE * n_lower
    for level, (count, at) in enumerate(((n_leaf, leaf), (n_lower, lower), (n_upper, upper))):
        if count == 0:
            tree["node_offset"][level] = at - TREE_OFF if current else 0


def to_current(buf: np.ndarray) -> np.ndarray:
    """A copy of a grid (32.4 form, as built here) in NanoVDB 32.9's layout and checksum."""
    out = aligned_copy(buf)
    grid = grid_header(out)
    grid["magic"] = MAGIC_GRID
    grid["version"] = VERSION_CURRENT
    grid["grid_type"] = GRID_TYPE_ON_INDEX
    leaves, blind = _leaves_and_blind(out)
    _empty_levels(out, current=True)
    if len(leaves):
        words = leaves.view("<u8")
        words[:, 10] = words[:, 11]                       # mOffset = 32.4's mValueOff
        words[:, 11] = _prefix_sums(words[:, 2:10])       # mPrefixSum
        leaves[:, 15] = LEAF_FLAG_HAS_BBOX
    blind["flags"] = [_ELEMENT_SIZE[int(t)] for t in blind["data_type"]]
    grid["checksum"] = checksum_current(out)
    return out


def from_current(buf: np.ndarray) -> np.ndarray:
    """A copy of a grid in NanoVDB 32.9's layout (as :func:`to_current` writes it) in the
    32.4 form, its 32.4 checksums not yet stamped. The caller verifies the 32.9 checksum
    first and compares ``to_current`` of what it rebuilds with the original. Raises
    :class:`LayoutError` where the conversion cannot be made."""
    out = aligned_copy(buf)
    grid = grid_header(out)
    if int(grid["grid_type"]) != GRID_TYPE_ON_INDEX:
        raise LayoutError(f"grid type {int(grid['grid_type'])}, not OnIndex "
                          f"({GRID_TYPE_ON_INDEX})")
    grid["magic"] = MAGIC
    grid["version"] = VERSION
    grid["grid_type"] = GRID_TYPE_INDEX
    _empty_levels(out, current=False)
    leaves, blind = _leaves_and_blind(out)
    if len(leaves):
        if (leaves[:, 15] & (1 << 4)).any():
            raise LayoutError("a leaf has stats")
        words = leaves.view("<u8")
        words[:, 11] = words[:, 10]
        words[:, 10] = 0
        leaves[:, 15] = LEAF_FLAG_ACTIVE_ONLY | LEAF_FLAG_HAS_BBOX
    blind["flags"] = 0
    return out


def grid_name(buf: np.ndarray) -> bytes:
    return bytes(grid_header(buf)["grid_name"]).split(b"\0", 1)[0]


def version_str(v: int) -> str:
    return f"{v >> 21}.{(v >> 10) & 2047}.{v & 1023}"
