"""SetSnapshot: the adapters of many matrices (a model's) as one NanoVDB index grid whose size
follows the weights.

A per-matrix :class:`~hyprvdb.snapshot.Snapshot` makes every weight a voxel, so each 8^3 leaf
(96 B) holds the handful of weights that fall in its 8 rows x 64 columns, and each grid pays
for its own upper (264 KB) and lower (33 KB) nodes. A set snapshot folds *cells* instead:

* A cell is one block of 64 consecutive columns of one row of one matrix. Matrix ``m`` owns the
  cells ``g0[m] + row * ceil(cols / 64) + (col >> 6)``; each matrix starts on a multiple of 512
  cells (a leaf), matrices follow one another in the order given.
* Cell ``g`` is voxel ``unfold(g)``: bits 0-8 of g are the offset in the 8^3 leaf (x, y, z
  three bits each, in NanoVDB's ``x << 6 | y << 3 | z`` order), bits 9-20 the child slot in the
  lower node, bits 21-35 the child slot in the upper node and bits 36 up the root tile (x),
  so cell order is NanoVDB's index order and the cells of all matrices share internal nodes.
* The accessor gives an active cell its index k (1-based, 0 for an inactive cell). The weights
  of cell k are ``[start(k), start(k + 1))`` in two channels: their in-cell column offsets
  (``uint8``, ascending) and their float32 values. ``start(k) = base[k >> 4] + rel[k]``: an
  int32 per 16 cells and an int16 per cell (a cell holds at most 64 weights, so ``rel`` stays
  below 1024). Inside a matrix the weights are therefore in row-major (CSR) order.

Channels (records in this order): ``hyprvdb_cell_start`` (Int16, cells + 2: the background
cell 0, cells 1..n, and the end), ``hyprvdb_cell_base`` (Int32, one per 16 of those),
``hyprvdb_offsets`` (Unknown class and type: uint8, one per weight), ``hyprvdb_values`` (Float,
one per weight), ``hyprvdb_matrices`` (Int64, 7 per matrix: first cell, rows, cols, first
weight, weights, name offset, name length), ``hyprvdb_names`` (Unknown: the names' UTF-8
bytes, end to end) and ``hyprvdb_meta`` (Int64: format 2, matrices, step or -1, weights,
cells). Everything else (header, checksums, ``mData2`` holding the CRC32 of the blind data,
files) is as for a :class:`~hyprvdb.snapshot.Snapshot`; see :mod:`hyprvdb.snapshot._nanovdb`.

The per-thread rule a kernel follows, one weight ``(m, row, col)``: ``k = acc.getValue(
unfold(g))``, then scan ``offsets[start(k) .. start(k + 1))`` for ``col & 63``
(``kernels/nanovdb_index.cuh``: ``nvdb_set_gather``). Its numpy twin is
:meth:`SetSnapshot.lookup`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .. import _validate as V
from .._atomic import write_bytes
from .._errors import CorruptFileError, ForeignFileError
from . import _nanovdb as N
from ._snapshot import _check_body, _check_head, _check_name, _check_path, _check_shape, _check_step, \
    _file_parts, _read_grid, _same_as_current

__all__ = ["SetSnapshot"]

SET_FORMAT = 2
CELL = 64  # columns per cell
GROUP = 16  # cells per int32 base
LEAF_CELLS = 512
TABLE = 7  # int64 per matrix in the matrices channel
MAX_CELL = 1 << 55  # unfold keeps x below 2^31
CHANNELS = (b"hyprvdb_cell_start", b"hyprvdb_cell_base", b"hyprvdb_offsets", b"hyprvdb_values",
            b"hyprvdb_matrices", b"hyprvdb_names", b"hyprvdb_meta")
_TYPES = (N.GRID_TYPE_INT16, N.GRID_TYPE_INT32, N.GRID_TYPE_UNKNOWN, N.GRID_TYPE_FLOAT,
          N.GRID_TYPE_INT64, N.GRID_TYPE_UNKNOWN, N.GRID_TYPE_INT64)
_DTYPES = ("<i2", "<i4", "u1", "<f4", "<i8", "u1", "<i8")


def unfold(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel (x, y, z) of cells ``g`` (int64); see the module's docstring for the bits."""
    x = (g >> 36) << 12 | ((g >> 31) & 31) << 7 | ((g >> 17) & 15) << 3 | ((g >> 6) & 7)
    y = ((g >> 26) & 31) << 7 | ((g >> 13) & 15) << 3 | ((g >> 3) & 7)
    z = ((g >> 21) & 31) << 7 | ((g >> 9) & 15) << 3 | (g & 7)
    return x, y, z


def fold(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unfold` for voxels with y and z below 4096."""
    return ((x >> 12) << 36 | ((x >> 7) & 31) << 31 | ((y >> 7) & 31) << 26 | ((z >> 7) & 31) << 21
            | ((x >> 3) & 15) << 17 | ((y >> 3) & 15) << 13 | ((z >> 3) & 15) << 9
            | (x & 7) << 6 | (y & 7) << 3 | (z & 7))


class SetSnapshot(Mapping):
    """An immutable snapshot of many sparse matrices in one NanoVDB index grid of 64-column
    cells: a read-only mapping ``name -> (shape, weights)`` whose size follows the weights.

    Build one with :meth:`from_matrices` (an :class:`hyprvdb.AdapterSet`, or any mapping of
    names to objects with ``.shape`` and ``.active_weights()``), with
    :meth:`hyprvdb.TemporalGroup.set_snapshot`, or read one with :meth:`load_nvdb`.

    Examples
    --------
    >>> import hyprvdb
    >>> s = hyprvdb.AdapterSet({"q": (8, 8), "up": (16, 8)})
    >>> s["q"].batch_update([1], [2], [0.5])
    >>> snap = hyprvdb.SetSnapshot.from_matrices(s)
    >>> sorted(snap), snap.lookup("q", [1, 0], [2, 0]).tolist()
    (['q', 'up'], [0.5, 0.0])
    """

    def __init__(self) -> None:
        raise TypeError("use SetSnapshot.from_matrices or SetSnapshot.load_nvdb")

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_matrices(cls, matrices: Mapping[str, Any], *, step: int | None = None,
                      name: str = "hyprvdb_set") -> SetSnapshot:
        """Snapshot of ``matrices`` (name -> object with ``.shape`` and
        ``.active_weights() -> (rows, cols, values)``), in the mapping's order."""
        if not isinstance(matrices, Mapping):
            raise TypeError(f"matrices must be a mapping of names to matrices (such as an "
                            f"AdapterSet), got {type(matrices).__name__}")
        entries = []
        for key, m in matrices.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"matrix names must be non-empty str, got {key!r}")
            if not hasattr(m, "active_weights") or not hasattr(m, "shape"):
                raise TypeError(f"matrices[{key!r}] must have .shape and .active_weights() "
                                f"(such as a SparseAdapter), got {type(m).__name__}")
            r, c, v = m.active_weights()
            entries.append((key, tuple(m.shape), r, c, v))
        return cls.from_coo(entries, step=step, name=name, allow_nonfinite=True)

    @classmethod
    def from_coo(cls, entries: list[tuple[str, tuple[int, int], Any, Any, Any]], *,
                 step: int | None = None, name: str = "hyprvdb_set",
                 allow_nonfinite: bool = False) -> SetSnapshot:
        """Snapshot of ``entries``: ``(name, shape, rows, cols, values)`` per matrix; each
        weight appears once; values are cast to float32."""
        step = _check_step(step)
        grid_name = _check_name(name)
        names, shapes, rows, cols, vals = [], [], [], [], []
        for i, entry in enumerate(entries):
            try:
                key, shape, r, c, v = entry
            except (TypeError, ValueError):
                raise TypeError(f"entries[{i}] must be (name, shape, rows, cols, values), got "
                                f"{type(entry).__name__}") from None
            if not isinstance(key, str) or not key:
                raise TypeError(f"entries[{i}]: the name must be a non-empty str, got {key!r}")
            if key in names:
                raise ValueError(f"entries[{i}]: the name {key!r} repeats entries"
                                 f"[{names.index(key)}]")
            n_rows, n_cols = _check_shape(shape)
            r = V.as_index_array("rows", r)
            c = V.as_index_array("cols", c)
            v = V.as_value_array("values", v, allow_nonfinite=allow_nonfinite)
            V.same_length(rows=r, cols=c, values=v)
            V.check_range("rows", r, n_rows)
            V.check_range("cols", c, n_cols)
            lin = r * n_cols + c
            order = np.argsort(lin, kind="stable")
            dup = np.flatnonzero(lin[order][1:] == lin[order][:-1])
            if len(dup):
                a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
                raise ValueError(f"{key!r}: (rows[{b}], cols[{b}]) = ({r[b]}, {c[b]}) repeats "
                                 f"(rows[{a}], cols[{a}]); each weight must appear once")
            names.append(key)
            shapes.append((n_rows, n_cols))
            rows.append(r[order])
            cols.append(c[order])
            vals.append(v[order].astype(np.float32))
        buf, lay = _build(names, shapes, rows, cols, vals, step, grid_name)
        return cls._wrap(buf, lay)

    @classmethod
    def _wrap(cls, buf: np.ndarray, lay: N.TreeLayout) -> SetSnapshot:
        self = object.__new__(cls)
        buf.flags.writeable = False
        self._buf, self._lay = buf, lay
        ch = [buf[lay.channel_offsets[i]:].view(_DTYPES[i]) for i in range(len(CHANNELS))]
        meta = ch[6][:5]
        n_mat, step, nnz, n_cell = int(meta[1]), int(meta[2]), int(meta[3]), int(meta[4])
        self._step = None if step == -1 else step
        self._rel = ch[0][:n_cell + 2]
        self._base = ch[1][:_groups(n_cell)]
        self._offs = ch[2][:nnz]
        self._values = ch[3][:nnz]
        self._table = ch[4][:TABLE * n_mat].reshape(n_mat, TABLE)
        blob = ch[5]
        self._names = {}
        for i, row in enumerate(self._table):
            self._names[bytes(blob[row[5]:row[5] + row[6]]).decode()] = i
        self._prefix = None
        self._cell_of_weight = None
        self._file_version = None
        return self

    # ------------------------------------------------------------------- mapping
    def __getitem__(self, key: str) -> tuple[tuple[int, int], int]:
        i = self._index(key)
        return (int(self._table[i, 1]), int(self._table[i, 2])), int(self._table[i, 4])

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return (f"SetSnapshot({len(self)} matrices, {self.nnz} weights, step={self._step}, "
                f"{self.nbytes} bytes)")

    # ------------------------------------------------------------------- properties
    @property
    def step(self) -> int | None:
        return self._step

    @property
    def nnz(self) -> int:
        return len(self._values)

    @property
    def file_version(self) -> str | None:
        """The NanoVDB version of the file this was read from; None if built in memory."""
        return self._file_version

    @property
    def nbytes(self) -> int:
        """Bytes of the grid: what a device holds and what a file holds past its ~0.5 KB of
        headers."""
        return int(self._buf.nbytes)

    @property
    def buffer(self) -> np.ndarray:
        """The NanoVDB grid (read-only uint8, 32-byte aligned)."""
        return self._buf

    @property
    def layout(self) -> N.TreeLayout:
        return self._lay

    def shape(self, name: str) -> tuple[int, int]:
        return self[name][0]

    def cell_base(self, name: str) -> int:
        """First cell of matrix ``name``: its weight ``(r, c)`` is cell
        ``cell_base + r * ceil(cols / 64) + (c >> 6)``."""
        return int(self._table[self._index(name), 0])

    # ------------------------------------------------------------------- reads
    def active_weights(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows int64, cols int64, values float32) of matrix ``name`` in row-major order."""
        i = self._index(name)
        g0, _, n_cols, w0, n = (int(v) for v in self._table[i, :5])
        cells = self._cells()[w0:w0 + n] - g0
        bpr = -(-n_cols // CELL)
        rows = cells // bpr
        cols = (cells - rows * bpr) * CELL + self._offs[w0:w0 + n]
        return rows, cols, self._values[w0:w0 + n].copy()

    def to_csr_arrays(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr int64, indices int64, data float32) of matrix ``name``."""
        rows, cols, vals = self.active_weights(name)
        indptr = np.zeros(self.shape(name)[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(indptr) - 1), out=indptr[1:])
        return indptr, cols, vals

    def lookup(self, name: str, rows: Any, cols: Any) -> np.ndarray:
        """float32 values of matrix ``name`` at ``(rows, cols)``, 0 where a weight is inactive,
        found the way the kernels find them: NanoVDB's tree walk to the cell's index, then the
        cell's offsets."""
        i = self._index(name)
        n_rows, n_cols = self.shape(name)
        r = V.as_index_array("rows", np.asarray(rows).ravel())
        c = V.as_index_array("cols", np.asarray(cols).ravel())
        if r.shape != c.shape:
            raise ValueError(f"rows and cols must have the same length, got {r.size} and "
                             f"{c.size}")
        V.check_range("rows", r, n_rows)
        V.check_range("cols", c, n_cols)
        g = int(self._table[i, 0]) + r * -(-n_cols // CELL) + (c >> 6)
        if self._prefix is None:
            self._prefix = N.mask_prefix(self._buf, self._lay)
        k = N.index_of(self._buf, self._lay, self._prefix, *unfold(g))
        start = self._base[k >> 4].astype(np.int64) + self._rel[k]
        end = self._base[(k + 1) >> 4].astype(np.int64) + self._rel[k + 1]
        # within [start, end) the offsets ascend: a binary search of (cell, offset) pairs
        pos = start + _segment_search(self._offs, start, end, c & (CELL - 1))
        hit = (pos < end)
        hit[hit] &= self._offs[pos[hit]] == (c[hit] & (CELL - 1))
        out = np.zeros(len(r), dtype=np.float32)
        out[hit] = self._values[pos[hit]]
        return out

    # ------------------------------------------------------------------------ files
    def save_nvdb(self, path: os.PathLike | str, *, version: str = "32.9") -> None:
        """Write the grid as a NanoVDB file (``io::writeGrid``, no compression), atomically:
        ``version="32.9"`` (default) for current NanoVDB (32.6 and later), ``"32.4"`` for
        Debian 12's."""
        path = _check_path(path)
        write_bytes(path, *_file_parts(self._buf, self._lay, version))

    @classmethod
    def load_nvdb(cls, path: os.PathLike | str) -> SetSnapshot:
        """Read a file written by :meth:`save_nvdb`.

        Raises
        ------
        CorruptFileError
            The file is truncated, damaged, or fails its checksums.
        ForeignFileError
            Not a NanoVDB file, or a grid hyprvdb did not write as a set snapshot.
        """
        path = _check_path(path)
        with open(path, "rb") as f:
            data = f.read()
        return _load(data, repr(os.fspath(path)))

    # ---------------------------------------------------------------------- private
    def _index(self, name: Any) -> int:
        try:
            return self._names[name]
        except (KeyError, TypeError):
            raise KeyError(f"no matrix named {name!r} in this set snapshot (it has "
                           f"{len(self._names)}: {list(self._names)[:5]}"
                           f"{' ...' if len(self._names) > 5 else ''})") from None

    def _cells(self) -> np.ndarray:
        """The cell g of every weight, in weight order."""
        if self._cell_of_weight is None:
            x, y, z = N.decode_active(self._buf, self._lay)
            counts = np.diff(self._base[np.arange(1, len(x) + 2) >> 4].astype(np.int64)
                             + self._rel[1:len(x) + 2])
            self._cell_of_weight = np.repeat(fold(x, y, z), counts)
            self._cell_of_weight.flags.writeable = False
        return self._cell_of_weight


def _groups(n_cell: int) -> int:
    return (n_cell + 2 + GROUP - 1) // GROUP


def _segment_search(offs: np.ndarray, start: np.ndarray, end: np.ndarray,
                    want: np.ndarray) -> np.ndarray:
    """For each query, the number of ``offs[start:end]`` below ``want`` (segments ascend and
    are at most 64 long): a branch-free binary search over 7 halvings."""
    lo = np.zeros(len(start), dtype=np.int64)
    n = end - start
    step = 64
    while step:
        probe = lo + step
        ok = probe <= n
        at = np.where(ok, start + probe - 1, 0)
        ok &= offs[at] < want if len(offs) else False
        lo = np.where(ok, probe, lo)
        step >>= 1
    return lo


def _meta(n_mat: int, step: int | None, nnz: int, n_cell: int) -> np.ndarray:
    return np.array([SET_FORMAT, n_mat, -1 if step is None else step, nnz, n_cell],
                    dtype="<i8")


def _build(names: list[str], shapes: list[tuple[int, int]], rows: list[np.ndarray],
           cols: list[np.ndarray], vals: list[np.ndarray], step: int | None,
           grid_name: bytes) -> tuple[np.ndarray, N.TreeLayout]:
    """The grid of matrices whose weights are given in row-major order."""
    n_mat = len(names)
    table = np.zeros((n_mat, TABLE), dtype="<i8")
    blob = [s.encode() for s in names]
    at = w = name_at = 0
    cells = []
    for i, ((n_rows, n_cols), r, c) in enumerate(zip(shapes, rows, cols)):
        bpr = -(-n_cols // CELL)
        table[i] = (at, n_rows, n_cols, w, len(r), name_at, len(blob[i]))
        cells.append(at + r * bpr + (c >> 6))
        at += -(-(n_rows * bpr) // LEAF_CELLS) * LEAF_CELLS
        w += len(r)
        name_at += len(blob[i])
    if at > MAX_CELL:
        raise ValueError(f"the matrices need {at} cells; a set snapshot holds at most "
                         f"{MAX_CELL}")
    if w >= 2**31:
        raise ValueError(f"the matrices hold {w} weights; a set snapshot holds fewer than 2^31")
    g = np.concatenate(cells) if cells else np.zeros(0, np.int64)
    offs = (np.concatenate(cols) & (CELL - 1)).astype(np.uint8) if cols else np.zeros(0, np.uint8)
    values = np.concatenate(vals).astype("<f4") if vals else np.zeros(0, "<f4")
    first = N._starts(g) if len(g) else np.zeros(0, np.int64)
    n_cell = len(first)
    start = np.zeros(n_cell + 2, dtype=np.int64)  # start[k]: first weight of cell k
    start[1:-1] = first
    start[-1] = len(g)
    base = start[::GROUP].copy()
    assert len(base) == _groups(n_cell)
    rel = start - np.repeat(base, GROUP)[:len(start)]
    x, y, z = unfold(g[first])
    channels = [N.Channel(CHANNELS[0], N.BLIND_CLASS_UNKNOWN, _TYPES[0], rel.astype("<i2")),
                N.Channel(CHANNELS[1], N.BLIND_CLASS_UNKNOWN, _TYPES[1], base.astype("<i4")),
                N.Channel(CHANNELS[2], N.BLIND_CLASS_UNKNOWN, _TYPES[2], offs),
                N.Channel(CHANNELS[3], N.BLIND_CLASS_UNKNOWN, _TYPES[3], values),
                N.Channel(CHANNELS[4], N.BLIND_CLASS_UNKNOWN, _TYPES[4], table.reshape(-1)),
                N.Channel(CHANNELS[5], N.BLIND_CLASS_UNKNOWN, _TYPES[5],
                          np.frombuffer(b"".join(blob), dtype=np.uint8)),
                N.Channel(CHANNELS[6], N.BLIND_CLASS_UNKNOWN, _TYPES[6],
                          _meta(n_mat, step, len(g), n_cell))]
    return N.build_grid(x, y, z, channels, name=grid_name)


# ---------------------------------------------------------------------------------- loading
def _load(data: bytes, shown: str) -> SetSnapshot:
    buf, prefix, original = _read_grid(data, shown)
    grid = N.grid_header(buf)
    stored = int(grid["checksum"])
    _check_head(buf, stored, shown)
    try:
        lay = N.parse_tree(buf, CHANNELS, _DTYPES)
    except N.LayoutError as exc:
        raise ForeignFileError(f"{shown} holds a NanoVDB index grid that is not a hyprvdb set "
                               f"snapshot: {exc}") from None
    tail = _check_body(buf, lay, stored, shown, "the blind data")
    try:
        snap = _decode(buf, lay)
    except (ValueError, IndexError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise ForeignFileError(f"{shown} holds a NanoVDB index grid that is not a hyprvdb set "
                               f"snapshot: {exc}") from None
    rebuilt = snap._buf
    if tail == N.CRC_EMPTY:
        rebuilt = N.aligned_copy(rebuilt)
        N.grid_header(rebuilt)["checksum"] = stored
    if not np.array_equal(rebuilt, buf):
        at = int(np.flatnonzero(rebuilt != buf)[0])
        raise ForeignFileError(f"{shown} holds a valid NanoVDB index grid in another layout "
                               f"than hyprvdb's set snapshots (first difference at grid byte "
                               f"{at})")
    if original is not None:
        _same_as_current(rebuilt, original, lay, prefix, shown)
        buf = snap._buf  # its 32.4 form, with full checksums
    elif prefix != N.file_prefix(buf, lay):
        raise CorruptFileError(f"{shown} is damaged: its grid metadata record disagrees with "
                               f"the grid")
    out = SetSnapshot._wrap(buf, lay)
    out._file_version = N.version_str(N.VERSION if original is None else N.VERSION_CURRENT)
    return out


def _decode(buf: np.ndarray, lay: N.TreeLayout) -> SetSnapshot:
    """The snapshot rebuilt from what the grid says; raises ValueError where it says nonsense."""
    ch = [buf[lay.channel_offsets[i]:].view(_DTYPES[i]) for i in range(len(CHANNELS))]
    counts = N.channel_counts(buf, lay)
    meta = ch[6][:counts[6]]
    if len(meta) != 5 or int(meta[0]) != SET_FORMAT:
        raise ValueError(f"its meta channel is {meta.tolist()}, expected format {SET_FORMAT}")
    _, n_mat, step, nnz, n_cell = (int(v) for v in meta)
    want = [n_cell + 2, _groups(n_cell), nnz, nnz, TABLE * n_mat, counts[5], 5]
    if counts != want or n_cell != lay.voxel_count:
        raise ValueError(f"its channels hold {counts} elements, its meta says {want}")
    rel = ch[0][:n_cell + 2].astype(np.int64)
    base = ch[1][:_groups(n_cell)].astype(np.int64)
    start = base[np.arange(n_cell + 2) >> 4] + rel
    if start[0] != 0 or start[1] != 0 or start[-1] != nnz or (np.diff(start[1:]) < 1).any():
        raise ValueError("its cell starts do not give every cell one weight or more")
    offs = ch[2][:nnz].astype(np.int64)
    if len(offs) and offs.max() >= CELL:
        raise ValueError("an in-cell offset is 64 or more")
    x, y, z = N.decode_active(buf, lay)
    if len(x) != n_cell or (len(x) and (y.max() >= 4096 or z.max() >= 4096)):
        raise ValueError("its cells do not fit hyprvdb's fold")
    g = np.repeat(fold(x, y, z), np.diff(start[1:]))
    table = ch[4][:TABLE * n_mat].reshape(n_mat, TABLE)
    blob = bytes(ch[5][:counts[5]])
    entries = []
    for i, (g0, n_rows, n_cols, w0, n, name_at, name_len) in enumerate(table.tolist()):
        if not (0 <= w0 <= w0 + n <= nnz and 0 <= name_at <= name_at + name_len <= len(blob)):
            raise ValueError(f"matrix {i}'s weights or name lie outside their channels")
        bpr = -(-n_cols // CELL) if n_cols > 0 else 1
        local = g[w0:w0 + n] - g0
        r = local // bpr
        entries.append((blob[name_at:name_at + name_len].decode(), (n_rows, n_cols), r,
                        (local - r * bpr) * CELL + offs[w0:w0 + n], ch[3][w0:w0 + n]))
    snap = SetSnapshot.from_coo(entries, step=None if step == -1 else step,
                                name=N.grid_name(buf).decode(), allow_nonfinite=True)
    return snap
