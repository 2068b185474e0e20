"""Snapshot: a sparse matrix's active weights as one NanoVDB index grid, for the read path.

A snapshot is what serving reads: a NanoVDB 32.4.2 ``ValueIndex`` grid (byte for byte what
``nanovdb/NanoVDB.h`` expects, so ``nanovdb::io::readGrid`` and ``nanovdb::isValid`` accept it)
whose float32 values travel inside the same buffer as blind data. It is written and read with
numpy alone: no OpenVDB, no compiled code.

Coordinates: weight ``(row, col)`` is voxel ``(row, col >> 3, col & 7)``, so one 8^3 leaf
covers 8 rows x 64 columns. Index ``i`` of an active voxel addresses ``values[i]``; every
inactive coordinate has index 0, and ``values[0]`` is the background, 0.0. The layout (node
order, checksums, where the shape is kept) is described in :mod:`hyprvdb.snapshot._nanovdb`.

Snapshots are immutable: :meth:`Snapshot.with_values` returns a new snapshot that shares the
topology (and every cache derived from it) and copies the buffer.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import numpy as np

from .. import _coo
from .. import _validate as V
from .._atomic import write_bytes
from .._errors import CorruptFileError, ForeignFileError
from . import _nanovdb as N

__all__ = ["Snapshot"]

_KEEP: Any = object()  # with_values(step=...) default: keep the step


class _Topology:
    """Facts about a tree that do not depend on its values; shared by ``with_values`` copies."""

    __slots__ = ("layout", "_prefix", "_coords", "_row_major", "_indptr")

    def __init__(self, layout: N.GridLayout) -> None:
        self.layout = layout
        self._prefix: np.ndarray | None = None
        self._coords: tuple[np.ndarray, np.ndarray] | None = None
        self._row_major: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._indptr: np.ndarray | None = None

    def prefix(self, buf: np.ndarray) -> np.ndarray:
        if self._prefix is None:
            self._prefix = _frozen(N.mask_prefix(buf, self.layout))
        return self._prefix

    def coords(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) int64 of the active weights in index order, decoded from the leaves."""
        if self._coords is None:
            x, y, z = N.decode_active(buf, self.layout)
            self._coords = (_frozen(x), _frozen(y * 8 + z))
        return self._coords

    def row_major(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(perm, rows, cols): ``perm`` puts index order (less the background) into row-major
        order."""
        if self._row_major is None:
            r, c = self.coords(buf)
            perm = _coo.row_major(r, c)
            self._row_major = (_frozen(perm), _frozen(r[perm]), _frozen(c[perm]))
        return self._row_major

    def indptr(self, buf: np.ndarray, n_rows: int) -> np.ndarray:
        """CSR row pointers, int64 (n_rows + 1,)."""
        if self._indptr is None:
            self._indptr = _frozen(_coo.indptr(self.row_major(buf)[1], n_rows))
        return self._indptr


class Snapshot:
    """An immutable ``rows x cols`` float32 sparse matrix stored as a NanoVDB index grid.

    Build one with :meth:`from_coo` or :meth:`from_adapter`, or read one with
    :meth:`load_nvdb`.

    Attributes
    ----------
    shape : (int, int)
        Matrix shape (kept in the grid's ``hyprvdb_meta`` blind-data channel).
    step : int or None
        Training step the snapshot was taken at.
    buffer : ndarray of uint8, read-only
        The whole NanoVDB grid, blind data included, 64-byte aligned: upload it as is.
    values : ndarray of float32, shape (nnz + 1,), read-only
        View of the values channel inside ``buffer``: ``values[0]`` is the background (0.0),
        ``values[1:]`` the active weights in the grid's leaf order, so that
        ``values[snap.index_of(rows, cols)]`` reads any weight.
    nnz : int
        Number of active weights.
    nbytes : int
        Size of ``buffer``.

    Examples
    --------
    >>> from hyprvdb.snapshot import Snapshot
    >>> s = Snapshot.from_coo([0, 3, 3], [1, 70, 5], [0.5, -2.0, 4.0], (4, 100), step=7)
    >>> s.nnz, s.step, s.shape
    (3, 7, (4, 100))
    >>> s.lookup([3, 0, 2], [70, 1, 2])
    array([-2. ,  0.5,  0. ], dtype=float32)
    >>> idx = s.index_of([3, 2], [5, 2])
    >>> int(idx[1]), float(s.values[idx[0]])
    (0, 4.0)
    >>> s.with_values([3], [70], [9.0]).lookup([3], [70])
    array([9.], dtype=float32)
    """

    __slots__ = ("_buf", "_shape", "_step", "_topo", "_file_version")

    def __init__(self) -> None:
        raise TypeError("build a Snapshot with Snapshot.from_coo, Snapshot.from_adapter or "
                        "Snapshot.load_nvdb")

    @classmethod
    def _wrap(cls, buf: np.ndarray, shape: tuple[int, int], step: int | None,
              topo: _Topology) -> Snapshot:
        self = object.__new__(cls)
        buf.flags.writeable = False
        self._buf, self._shape, self._step, self._topo = buf, shape, step, topo
        self._file_version = None
        return self

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_coo(cls, rows: Any, cols: Any, values: Any, shape: tuple[int, int], *,
                 step: int | None = None, name: str = "lora_delta",
                 allow_nonfinite: bool = False) -> Snapshot:
        """Snapshot of the weights ``(rows[k], cols[k]) = values[k]``.

        Parameters
        ----------
        rows, cols : array_like of int, shape (n,)
            Coordinates; each weight must appear once.
        values : array_like of real, shape (n,)
            Cast to float32 (float64 rounds to nearest).
        shape : (int, int)
            Matrix shape; both at most 2**31 - 1 (NanoVDB coordinates are int32).
        step : int >= 0 or None
            Training step, stored in the grid.
        name : str
            Grid name, at most 255 bytes of UTF-8.
        allow_nonfinite : bool
            Accept NaN and infinity among the values.

        Raises
        ------
        IndexError
            A coordinate lies outside ``shape``.
        ValueError
            Duplicate coordinates, mismatched lengths, non-finite values, bad shape or name.
        TypeError
            Coordinates that are not integers, values that are not real numbers.
        """
        n_rows, n_cols = _check_shape(shape)
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        v = V.as_value_array("values", values, allow_nonfinite=allow_nonfinite)
        V.same_length(rows=r, cols=c, values=v)
        V.check_range("rows", r, n_rows)
        V.check_range("cols", c, n_cols)
        step = _check_step(step)
        name_bytes = _check_name(name)
        x, y, z = r, c >> 3, c & 7
        keys = N.sort_key(x, y, z)
        order = np.argsort(keys)
        keys = keys[order]
        dup = np.flatnonzero(keys[1:] == keys[:-1])
        if len(dup):
            i, j = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
            raise ValueError(f"(rows[{j}], cols[{j}]) = ({r[j]}, {c[j]}) repeats "
                             f"(rows[{i}], cols[{i}]); each weight must appear once")
        buf, lay = N.build(keys, x[order], y[order], z[order], v[order], name=name_bytes,
                           meta=_meta(n_rows, n_cols, step))
        return cls._wrap(buf, (n_rows, n_cols), step, _Topology(lay))

    @classmethod
    def from_adapter(cls, adapter: Any, *, step: int | None = None) -> Snapshot:
        """Snapshot of an adapter's active weights.

        ``adapter`` is anything with ``.shape`` and ``.active_weights() -> (rows, cols,
        values)``, such as a :class:`hyprvdb.SparseAdapter`; its ``.name``, when a str, names
        the grid. Non-finite values the adapter holds are kept.
        """
        if not hasattr(adapter, "active_weights") or not hasattr(adapter, "shape"):
            raise TypeError("adapter must have .shape and .active_weights() (such as a "
                            f"SparseAdapter), got {type(adapter).__name__}")
        rows, cols, values = adapter.active_weights()
        name = getattr(adapter, "name", None)
        return cls.from_coo(rows, cols, values, tuple(adapter.shape), step=step,
                            name=name if isinstance(name, str) and name else "lora_delta",
                            allow_nonfinite=True)

    # ------------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def step(self) -> int | None:
        return self._step

    @property
    def buffer(self) -> np.ndarray:
        return self._buf

    @property
    def values(self) -> np.ndarray:
        return N.values_view(self._buf, self._topo.layout)

    @property
    def nnz(self) -> int:
        return self._topo.layout.voxel_count

    @property
    def nbytes(self) -> int:
        return int(self._buf.nbytes)

    @property
    def name(self) -> str:
        """The grid name."""
        return N.grid_name(self._buf).decode("utf-8", "replace")

    @property
    def layout(self) -> N.GridLayout:
        """Byte offsets and counts of the grid's parts inside ``buffer`` (for kernels)."""
        return self._topo.layout

    @property
    def checksum(self) -> int:
        """NanoVDB's 64-bit grid checksum (low word: headers and root; high word: nodes)."""
        return int(N.grid_header(self._buf)["checksum"])

    def __repr__(self) -> str:
        return (f"Snapshot(shape={self._shape}, nnz={self.nnz}, step={self._step}, "
                f"name={self.name!r}, nbytes={self.nbytes})")

    # ----------------------------------------------------------------------- reads
    def index_of(self, rows: Any, cols: Any) -> np.ndarray:
        """Indices into :attr:`values` (int64, shape (n,)) of the weights ``(rows, cols)``,
        found by walking the NanoVDB tree; 0 (the background) where a weight is inactive."""
        r, c = self._coords_in_range(rows, cols)
        return N.index_of(self._buf, self._topo.layout, self._topo.prefix(self._buf),
                          r, c >> 3, c & 7)

    def lookup(self, rows: Any, cols: Any) -> np.ndarray:
        """Weights at ``(rows, cols)`` as float32, shape (n,); 0 where inactive."""
        return self.values[self.index_of(rows, cols)]

    def active_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All active weights as ``(rows int64, cols int64, values float32)`` in row-major
        order (sorted by row, then column)."""
        perm, rows, cols = self._topo.row_major(self._buf)
        return rows.copy(), cols.copy(), self.values[1:][perm]

    def to_csr_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row-major CSR of the matrix: ``(indptr int64 (rows + 1,), indices int32 (nnz,),
        data float32 (nnz,))``, columns sorted within each row."""
        perm, _, cols = self._topo.row_major(self._buf)
        indptr = self._topo.indptr(self._buf, self._shape[0])
        return indptr.copy(), cols.astype(np.int32), self.values[1:][perm]

    def same_topology(self, rows: Any, cols: Any) -> bool:
        """Whether ``(rows, cols)`` are exactly this snapshot's active weights (any order)."""
        idx = self.index_of(rows, cols)
        if len(idx) != self.nnz or (len(idx) and idx.min() == 0):
            return False
        return bool((np.bincount(idx, minlength=self.nnz + 1)[1:] == 1).all())

    # ----------------------------------------------------------------------- writes
    def with_values(self, rows: Any, cols: Any, values: Any, *, step: Any = _KEEP,
                    allow_nonfinite: bool = False) -> Snapshot:
        """A snapshot with the same topology and new values at ``(rows, cols)``.

        Every coordinate must be active here. The tree is not rebuilt: the buffer is copied,
        the values are written at their indices and the checksums are refreshed (a CRC over
        the values channel and one over the ~1 KB grid head; the node CRCs do not cover values).
        ``step`` defaults to this snapshot's step.

        Raises
        ------
        ValueError
            A coordinate that is not active (the first is named), a repeated coordinate,
            mismatched lengths or non-finite values.
        IndexError
            A coordinate outside the matrix.
        """
        v = V.as_value_array("values", values, allow_nonfinite=allow_nonfinite)
        r, c = self._coords_in_range(rows, cols)
        V.same_length(rows=r, cols=c, values=v)
        new_step = self._step if step is _KEEP else _check_step(step)
        lay = self._topo.layout
        idx = N.index_of(self._buf, lay, self._topo.prefix(self._buf), r, c >> 3, c & 7)
        off = np.flatnonzero(idx == 0)
        if len(off):
            i = int(off[0])
            raise ValueError(f"(rows[{i}], cols[{i}]) = ({r[i]}, {c[i]}) is not an active weight "
                             f"of this snapshot; with_values keeps the topology (use "
                             f"Snapshot.from_coo to add weights)")
        if len(idx) > 1:
            order = np.argsort(idx, kind="stable")
            rep = np.flatnonzero(idx[order][1:] == idx[order][:-1])
            if len(rep):
                i, j = int(order[rep[0]]), int(order[rep[0] + 1])
                raise ValueError(f"(rows[{j}], cols[{j}]) = ({r[j]}, {c[j]}) repeats "
                                 f"(rows[{i}], cols[{i}]); each weight must appear once")
        buf = N.aligned_copy(self._buf)
        N.values_view(buf, lay)[idx] = v
        if new_step != self._step:
            N.meta_view(buf, lay)[3] = -1 if new_step is None else new_step
        N.restamp(buf, lay)
        return Snapshot._wrap(buf, self._shape, new_step, self._topo)

    # ------------------------------------------------------------------------ files
    @property
    def file_version(self) -> str | None:
        """The NanoVDB version of the file this snapshot was read from ("32.4.2" or "32.9.2");
        None for one built in memory."""
        return self._file_version

    def save_nvdb(self, path: os.PathLike | str, *, version: str = "32.9") -> None:
        """Write the grid as a NanoVDB file (``nanovdb::io::writeGrid`` format, no compression):
        ``version="32.9"`` (default) in the layout and checksum of current NanoVDB (32.6 and
        later: OpenVDB 11-13), ``"32.4"`` in those of NanoVDB 32.4 (Debian 12's tools).

        The write is atomic: a temporary file in the same folder is flushed to disk and renamed
        over ``path``.
        """
        path = _check_path(path)
        write_bytes(path, *_file_parts(self._buf, self._topo.layout, version))

    @classmethod
    def load_nvdb(cls, path: os.PathLike | str) -> Snapshot:
        """Read a snapshot written by :meth:`save_nvdb`.

        Raises
        ------
        CorruptFileError
            The file is truncated, damaged, or fails its checksums.
        ForeignFileError
            The file is not a NanoVDB file, or holds a grid hyprvdb did not write (another grid
            type, another NanoVDB version, compression, several grids, another layout).
        """
        path = _check_path(path)
        with open(path, "rb") as f:
            data = f.read()
        return _load(data, repr(os.fspath(path)))

    # ------------------------------------------------------------------------ helpers
    def _coords_in_range(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        V.same_length(rows=r, cols=c)
        V.check_range("rows", r, self._shape[0])
        V.check_range("cols", c, self._shape[1])
        return r, c


# ----------------------------------------------------------------------------- validation
def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        n_rows, n_cols = shape
    except (TypeError, ValueError):
        raise TypeError(f"shape must be a pair of ints (rows, cols), got {shape!r}") from None
    return V.matrix_dims(n_rows, n_cols, ("shape[0]", "shape[1]"))


def _check_step(step: Any) -> int | None:
    if step is None:
        return None
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int or None, got {type(step).__name__} {step!r}")
    if not 0 <= step < 2**63:
        raise ValueError(f"step must be in 0..2**63 - 1 (it is kept as an int64), got {step}")
    return int(step)


def _check_name(name: Any) -> bytes:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    b = name.encode("utf-8")
    if b"\0" in b:
        raise ValueError(f"name must not contain NUL characters, got {name!r}")
    if len(b) > N.NAME_MAX:
        raise ValueError(f"name must be at most {N.NAME_MAX} bytes of UTF-8 (NanoVDB's grid "
                         f"name field), got {len(b)} bytes")
    return b


def _check_path(path: Any) -> os.PathLike | str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return path


def _meta(n_rows: int, n_cols: int, step: int | None) -> np.ndarray:
    return np.array([N.META_FORMAT, n_rows, n_cols, -1 if step is None else step], dtype=np.int64)


# ---------------------------------------------------------------------------------- loading
def _file_parts(buf: np.ndarray, lay: Any, version: str) -> tuple[bytes, Any]:
    """(file prefix, grid bytes) of a grid held in the 32.4 form, for NanoVDB ``version``."""
    if version not in ("32.9", "32.4"):
        raise ValueError(f"version must be '32.9' (current NanoVDB) or '32.4', got {version!r}")
    if version == "32.9":
        buf = N.to_current(buf)
    return N.file_prefix(buf, lay), buf.data


def _read_grid(data: bytes, shown: str) -> tuple[np.ndarray, bytes, np.ndarray | None]:
    """(grid buffer in the 32.4 form, file bytes before the grid, the file's own grid buffer
    when it is in NanoVDB 32.9's layout, else None). A 32.9 grid's checksums are verified
    here, then it is converted and stamped with a 32.4 head checksum in "partial" mode: the
    caller rebuilds it and compares ``N.to_current`` of the rebuild with the original."""
    grid_bytes, prefix = _split_file(data, shown)
    buf = N.aligned_empty(len(grid_bytes))
    buf[:] = np.frombuffer(grid_bytes, dtype=np.uint8)
    if int(np.frombuffer(data, N.FILE_HEADER_DT, count=1)[0]["version"]) != N.VERSION_CURRENT:
        return buf, prefix, None
    grid = N.grid_header(buf)
    if int(grid["magic"]) != N.MAGIC_GRID or int(grid["version"]) != N.VERSION_CURRENT:
        raise CorruptFileError(f"{shown} is damaged: its header says NanoVDB 32.9.2, its grid "
                               f"has magic {int(grid['magic']):016x} and version "
                               f"{N.version_str(int(grid['version']))}")
    stored = int(grid["checksum"])
    if stored == (N.CRC_EMPTY << 32 | N.CRC_EMPTY):
        raise ForeignFileError(f"{shown} holds a grid without a checksum; hyprvdb always "
                               f"writes one")
    actual = N.checksum_current(buf)
    for word, what in ((0, "grid head"), (32, "grid's nodes and blind data")):
        got, want = (actual >> word) & N.CRC_EMPTY, (stored >> word) & N.CRC_EMPTY
        if got != want and not (word and want == N.CRC_EMPTY):
            raise CorruptFileError(f"{shown} is damaged: the {what}'s checksum is {got:08x}, "
                                   f"the grid says {want:08x}")
    try:
        old = N.from_current(buf)
    except N.LayoutError as exc:
        raise ForeignFileError(f"{shown} holds a NanoVDB index grid that hyprvdb did not "
                               f"write: {exc}") from None
    tiles = int(old[N.ROOT_OFF:N.TILES_OFF].view(N.ROOT_DT)[0]["table_size"])
    end = N.TILES_OFF + N.TILE_SIZE * tiles
    if end > len(old):
        raise CorruptFileError(f"{shown} is damaged: its root has {tiles} tiles, more than fit "
                               f"in the grid")
    N.grid_header(old)["checksum"] = zlib.crc32(old[N.CHECKSUM_HEAD_START:end]) \
        | (N.CRC_EMPTY << 32)
    return old, prefix, buf


def _same_as_current(rebuilt: np.ndarray, original: np.ndarray, lay: Any, prefix: bytes,
                     shown: str) -> None:
    """A 32.9 file must be exactly what hyprvdb writes for the grid it decoded to."""
    current = N.to_current(rebuilt)
    stored = int(N.grid_header(original)["checksum"])
    if stored >> 32 == N.CRC_EMPTY:  # NanoVDB's partial checksum: the head was verified
        N.grid_header(current)["checksum"] = stored
    if not np.array_equal(current, original):
        at = int(np.flatnonzero(current != original)[0])
        raise ForeignFileError(f"{shown} holds a valid NanoVDB 32.9 index grid in another "
                               f"layout than hyprvdb's (first difference at grid byte {at})")
    if prefix != N.file_prefix(current, lay):
        raise CorruptFileError(f"{shown} is damaged: its grid metadata record disagrees with "
                               f"the grid")


def _load(data: bytes, shown: str) -> Snapshot:
    buf, prefix, original = _read_grid(data, shown)
    grid = N.grid_header(buf)
    if int(grid["magic"]) != N.MAGIC:
        raise CorruptFileError(f"{shown} is damaged: the grid's magic number is "
                               f"{int(grid['magic']):016x}")
    version = int(grid["version"])
    if version >> 10 != N.VERSION >> 10:
        raise CorruptFileError(f"{shown} is damaged: its header says NanoVDB {N.MAJOR}.{N.MINOR}, "
                               f"its grid says {N.version_str(version)}")
    stored = int(grid["checksum"])
    try:
        lay = N.parse(buf)
    except N.LayoutError as exc:
        # Offsets and counts live in the bytes the low checksum word covers: if they check out,
        # the grid is intact but laid out by someone else.
        _check_head(buf, stored, shown)
        blind = int(grid["blind_metadata_offset"])
        crc = int(grid["data2"])  # NanoVDB's own builders leave it 0
        if crc and N.TILES_OFF <= blind < len(buf) and crc != zlib.crc32(buf[blind:]):
            raise CorruptFileError(f"{shown} is damaged: the values or the metadata channel "
                                   f"fail their CRC32 ({zlib.crc32(buf[blind:]):08x}, the grid "
                                   f"says {crc:08x})") from None
        raise ForeignFileError(f"{shown} holds a NanoVDB index grid that hyprvdb did not "
                               f"write: {exc}") from None
    _check_head(buf, stored, shown, lay)
    tail = _check_body(buf, lay, stored, shown, "the values or the metadata channel")
    fmt, n_rows, n_cols, step = (int(v) for v in N.meta_view(buf, lay))
    if fmt != N.META_FORMAT:
        raise ForeignFileError(f"{shown} holds hyprvdb snapshot format {fmt}; this version "
                               f"reads format {N.META_FORMAT}")
    try:
        shape = _check_shape((n_rows, n_cols))
        step_ = None if step == -1 else _check_step(step)
        x, y, z = N.decode_active(buf, lay)
        rows, cols = x, y * 8 + z
        if len(x) != lay.voxel_count:
            raise ValueError(f"its leaves hold {len(x)} active voxels, its tree says "
                             f"{lay.voxel_count}")
        if len(x) and (z.max() > 7 or z.min() < 0):
            raise ValueError("it has voxels outside the (row, col >> 3, col & 7) map")
        V.check_range("rows", rows, shape[0])
        V.check_range("cols", cols, shape[1])
        keys = N.sort_key(x, y, z)
        if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
            raise ValueError("its voxels are not in hyprvdb's index order")
        vals = N.values_view(buf, lay)
        if vals[0] != 0:
            raise ValueError(f"its background value is {vals[0]}, not 0")
        rebuilt, _ = N.build(keys, x, y, z, vals[1:], name=N.grid_name(buf),
                             meta=_meta(shape[0], shape[1], step_))
    except (ValueError, IndexError, TypeError) as exc:
        raise ForeignFileError(f"{shown} holds a NanoVDB index grid that is not a hyprvdb "
                               f"snapshot: {exc}") from None
    if tail == N.CRC_EMPTY:  # NanoVDB's "partial" checksum: legitimate, the head was verified
        N.grid_header(rebuilt)["checksum"] = stored
    if not np.array_equal(rebuilt, buf):
        differs = rebuilt != buf
        differs[8:16] &= not differs[16:].any()  # name the cause, not the checksum it changed
        at = int(np.flatnonzero(differs)[0])
        raise ForeignFileError(f"{shown} holds a valid NanoVDB index grid in another layout "
                               f"than hyprvdb's (first difference at grid byte {at}, "
                               f"{_region(lay, at)})")
    if original is not None:
        _same_as_current(rebuilt, original, lay, prefix, shown)
        N.grid_header(buf)["checksum"] = N.checksum(buf, lay)  # its 32.4 form, in full
    else:
        expected = N.file_prefix(rebuilt, lay)
        if prefix != expected:
            field = _file_field(prefix, expected)
            raise CorruptFileError(f"{shown} is damaged: its grid metadata record disagrees "
                                   f"with the grid ({field})")
    snap = Snapshot._wrap(buf, shape, step_, _Topology(lay))
    snap._file_version = N.version_str(N.VERSION if original is None else N.VERSION_CURRENT)
    snap._topo._coords = (_frozen(rows), _frozen(cols))
    return snap


def _split_file(data: bytes, shown: str) -> tuple[bytes, bytes]:
    """Check the segment header and the grid record; return (grid bytes, bytes before them)."""
    magics = [m.to_bytes(8, "little") for m in (N.MAGIC, N.MAGIC_FILE)]
    if len(data) == 0:
        raise CorruptFileError(f"{shown} is empty")
    if data[:8] not in magics:
        if any(m.startswith(data) for m in magics):
            raise CorruptFileError(f"{shown} is truncated: {len(data)} bytes")
        if data[:8] in [m[::-1] for m in magics]:
            raise ForeignFileError(f"{shown} is a big-endian NanoVDB file")
        raise ForeignFileError(f"{shown} is not a NanoVDB file (magic number {data[:8].hex()}, "
                               f"expected {magics[0].hex()} or {magics[1].hex()})")
    head_size, meta_size = N.FILE_HEADER_DT.itemsize, N.FILE_META_DT.itemsize
    if len(data) < head_size:
        raise CorruptFileError(f"{shown} is truncated: {len(data)} bytes, its header alone "
                               f"needs {head_size}")
    header = np.frombuffer(data, N.FILE_HEADER_DT, count=1)[0]
    version = int(header["version"])
    if version >> 10 != N.VERSION >> 10 and version != N.VERSION_CURRENT:
        raise ForeignFileError(f"{shown} was written by NanoVDB {N.version_str(version)}; "
                               f"hyprvdb reads the files it writes, NanoVDB "
                               f"{N.version_str(N.VERSION)} and {N.version_str(N.VERSION_CURRENT)}")
    if data[:8] != magics[version == N.VERSION_CURRENT]:
        raise CorruptFileError(f"{shown} is damaged: its magic number {data[:8].hex()} does not "
                               f"go with NanoVDB {N.version_str(version)}")
    if int(header["codec"]) not in (N.CODEC_NONE, 1, 2):
        raise CorruptFileError(f"{shown} is damaged: unknown codec {int(header['codec'])}")
    if int(header["codec"]) != N.CODEC_NONE:
        codec = {1: "ZIP", 2: "BLOSC"}[int(header["codec"])]
        raise ForeignFileError(f"{shown} is compressed with {codec}; hyprvdb writes and reads "
                               f"uncompressed .nvdb files")
    count = int(header["grid_count"])
    if count == 0:
        raise CorruptFileError(f"{shown} is damaged: its header lists no grid")
    if count != 1:
        raise ForeignFileError(f"{shown} holds {count} grids; a hyprvdb snapshot file holds one")
    if len(data) < head_size + meta_size:
        raise CorruptFileError(f"{shown} is truncated: {len(data)} bytes, its headers need "
                               f"{head_size + meta_size}")
    meta = np.frombuffer(data, N.FILE_META_DT, count=1, offset=head_size)[0]
    current = version == N.VERSION_CURRENT
    type_end, class_end = (27, 11) if current else (N.GRID_TYPE_END, N.GRID_CLASS_END)
    want_type = N.GRID_TYPE_ON_INDEX if current else N.GRID_TYPE_INDEX
    if int(meta["grid_type"]) >= type_end or int(meta["grid_class"]) >= class_end:
        raise CorruptFileError(f"{shown} is damaged: grid type {int(meta['grid_type'])}, grid "
                               f"class {int(meta['grid_class'])}")
    if (int(meta["grid_type"]), int(meta["grid_class"])) != (want_type, N.GRID_CLASS_INDEX):
        raise ForeignFileError(f"{shown} holds a NanoVDB grid of type {int(meta['grid_type'])} "
                               f"and class {int(meta['grid_class'])}, not an index grid "
                               f"({want_type}, {N.GRID_CLASS_INDEX}) as hyprvdb writes")
    name_size = int(meta["name_size"])
    if not 1 <= name_size <= N.NAME_MAX + 1:
        raise CorruptFileError(f"{shown} is damaged: grid name size {name_size}")
    start = head_size + meta_size + name_size
    grid_size, file_size = int(meta["grid_size"]), int(meta["file_size"])
    if grid_size != file_size or grid_size % N.ALIGN or grid_size < N.TILES_OFF:
        raise CorruptFileError(f"{shown} is damaged: grid size {grid_size}, size on disk "
                               f"{file_size}")
    if len(data) < start + grid_size:
        raise CorruptFileError(f"{shown} is truncated: {len(data)} bytes, its header says "
                               f"{start + grid_size}")
    if len(data) > start + grid_size:
        raise CorruptFileError(f"{shown} is damaged: {len(data) - start - grid_size} unexpected "
                               f"bytes after the grid")
    return data[start:], data[:start]


def _check_body(buf: np.ndarray, lay: Any, stored: int, shown: str, blind: str) -> int:
    """Compare the high word of NanoVDB 32.4's checksum (unless "partial") with the nodes and
    ``mData2`` with the blind data (named ``blind`` in the error); returns the high word."""
    tail = stored >> 32
    if tail != N.CRC_EMPTY:
        actual = N.checksum(buf, lay) >> 32
        if actual != tail:
            raise CorruptFileError(f"{shown} is damaged: the nodes' checksum is {actual:08x}, "
                                   f"the grid says {tail:08x}")
    crc = N.blind_crc(buf, lay)
    if int(N.grid_header(buf)["data2"]) != crc:
        raise CorruptFileError(f"{shown} is damaged: {blind} fail their CRC32 ({crc:08x}, the "
                               f"grid says {int(N.grid_header(buf)['data2']):08x})")
    return tail


def _check_head(buf: np.ndarray, stored: int, shown: str, lay: N.GridLayout | None = None) -> None:
    """Compare the low word of NanoVDB's checksum with the grid head."""
    if stored == (N.CRC_EMPTY << 32 | N.CRC_EMPTY):
        raise ForeignFileError(f"{shown} holds a grid without a checksum; hyprvdb always "
                               f"writes one")
    if lay is None:
        tiles = int(buf[N.ROOT_OFF:N.TILES_OFF].view(N.ROOT_DT)[0]["table_size"])
        end = N.TILES_OFF + N.TILE_SIZE * tiles
        if end > len(buf):
            raise CorruptFileError(f"{shown} is damaged: its root has {tiles} tiles, more "
                                   f"than fit in the grid")
        head = zlib.crc32(buf[N.CHECKSUM_HEAD_START:end])
    else:
        head = N.head_crc(buf, lay)
    if head != stored & N.CRC_EMPTY:
        raise CorruptFileError(f"{shown} is damaged: the grid head's checksum is {head:08x}, "
                               f"the grid says {stored & N.CRC_EMPTY:08x}")


def _region(lay: N.GridLayout, at: int) -> str:
    for name, start in (("blind data", lay.blind_meta_offset), ("leaves", lay.leaf_offset),
                        ("lower nodes", lay.lower_offset), ("upper nodes", lay.upper_offset),
                        ("root tiles", N.TILES_OFF), ("root", N.ROOT_OFF),
                        ("tree header", N.TREE_OFF)):
        if at >= start:
            return name
    return "grid header"


def _file_field(got: bytes, expected: bytes) -> str:
    if len(got) != len(expected):
        return "name size"
    at = next(i for i in range(len(got)) if got[i] != expected[i])
    head = N.FILE_HEADER_DT.itemsize
    if at < head:
        return "segment header"
    at -= head
    if at >= N.FILE_META_DT.itemsize:
        return "grid name"
    dt = N.FILE_META_DT
    for field in sorted(dt.names, key=lambda f: dt.fields[f][1], reverse=True):
        if at >= dt.fields[field][1]:
            return field
    return "grid record"  # pragma: no cover
