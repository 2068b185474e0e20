"""SparseAdapter: a sparse LoRA delta whose live structure is an OpenVDB tree.

The tree is an OpenVDB ``ValueMask`` tree of 16^3-cell leaves. Unstructured adapters use
cells of 64 consecutive columns of a row, each leaf keeping its weights (in-block offsets or
per-cell bitmasks, and packed values) in one payload beside it; several adapters can share
one tree (:class:`~hyprvdb.AdapterSet`). Tile-mode adapters use one cell per block, its values
stored densely. All work on many weights at once happens in C++ over whole numpy arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _coo
from .. import _validate as V
from .._atomic import atomic_write
from .._errors import CorruptFileError, ForeignFileError
from .._native import core as _core_module
from ._vdbfile import CRC_KEY, CRC_PLACEHOLDER, check_vdb_bytes, stamp_checksum

__all__ = ["SparseAdapter", "fuse_adapters", "enforce_sparsity"]

FORMAT_KEY = "hyprvdb_format"
_NONFINITE_HINT = "; create the adapter with allow_nonfinite=True to store it"
FORMAT = "sparse_adapter/1"


class SparseAdapter:
    """A ``rows x cols`` float32 matrix with few active entries, stored in an OpenVDB tree.

    Parameters
    ----------
    rows, cols : int
        Shape of the matrix (for a LoRA delta: ``out_features x in_features``).
    block_shape : (int, int), default (1, 1)
        Granularity of activity. ``(1, 1)`` is unstructured sparsity. A larger block, such as
        ``(8, 64)``, is tile-structured sparsity: writing any weight activates its whole block,
        whose values are stored densely (4 bytes per weight). Must divide the shape.
    allow_nonfinite : bool, default False
        Accept NaN and infinity as values. By default they are refused with ``ValueError``.
    name : str, default "lora_delta"
        Grid name used in ``.vdb`` files.

    Notes
    -----
    Values are float32. Inputs of other real dtypes are cast (float64 rounds to nearest;
    values beyond float32's range become infinite and are refused unless allowed).
    Coordinates must have an integer dtype. Every write checks all its coordinates before it
    changes anything. A weight that is not active reads as 0.

    Examples
    --------
    >>> import hyprvdb
    >>> a = hyprvdb.SparseAdapter(4, 6)
    >>> a.batch_update([0, 3], [1, 5], [0.5, -2.0])
    >>> a.get_weights([0, 3, 2], [1, 5, 2])
    array([ 0.5, -2. ,  0. ], dtype=float32)
    >>> a.active_count(), a.is_active(2, 2)
    (2, False)
    """

    __slots__ = ("_c", "_allow_nonfinite", "name")

    def __init__(self, rows: int, cols: int, *, block_shape: tuple[int, int] = (1, 1),
                 allow_nonfinite: bool = False, name: str = "lora_delta") -> None:
        rows, cols = V.matrix_dims(rows, cols)
        bh, bw = _block_shape(block_shape)
        if rows % bh or cols % bw:
            raise ValueError(f"block_shape {(bh, bw)} must divide the shape {(rows, cols)}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        if not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self._c = _new_core(rows, cols, bh, bw)
        self._allow_nonfinite = bool(allow_nonfinite)
        self.name = name

    @classmethod
    def _wrap(cls, c: Any, *, allow_nonfinite: bool = False,
              name: str = "lora_delta") -> SparseAdapter:
        self = cls.__new__(cls)
        self._c = c
        self._allow_nonfinite = allow_nonfinite
        self.name = name
        return self

    # ---------------------------------------------------------------- description
    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self._c.rows, self._c.cols)

    @property
    def block_shape(self) -> tuple[int, int]:
        """Granularity of activity: ``(1, 1)`` unstructured, larger for tile-structured."""
        return (self._c.block_rows, self._c.block_cols)

    @property
    def dtype(self) -> np.dtype:
        """The values' dtype: always float32."""
        return np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes held by every structure of the adapter; the same as :meth:`memory_usage`."""
        return self.memory_usage()

    def active_count(self) -> int:
        """Number of active weights (in tile mode: active blocks x block size)."""
        return int(self._c.active_count())

    def memory_usage(self) -> int:
        """Bytes held: OpenVDB tree nodes, leaf payloads, tables, and malloc's per-chunk words.

        For a member of an :class:`~hyprvdb.AdapterSet`: its own leaves and payloads, and a
        share of the tree's internal nodes and tables in proportion to its leaves (the
        members' figures add up to the set's).
        """
        return int(self._c.memory_usage())

    def density(self) -> float:
        """Active weights / (rows x cols)."""
        r, c = self.shape
        return self.active_count() / (r * c)

    def sparsity_ratio(self) -> float:
        """Fraction of the full ``rows x cols`` matrix that is inactive: ``1 - density()``."""
        return 1.0 - self.density()

    def __len__(self) -> int:
        return self.active_count()

    def __repr__(self) -> str:
        r, c = self.shape
        tile = "" if self.block_shape == (1, 1) else f", block_shape={self.block_shape}"
        return (f"SparseAdapter({r}, {c}{tile}, active={self.active_count()}, "
                f"density={self.density():.4g}, bytes={self.memory_usage()})")

    # ---------------------------------------------------------------- single weights
    def set_weight(self, row: int, col: int, value: float) -> None:
        """Set one weight and make it active."""
        r, c = self._coord(row, col)
        _scalar("value", value, self._allow_nonfinite)
        v = V.as_value_array("value", [value], allow_nonfinite=self._allow_nonfinite,
                             hint=_NONFINITE_HINT)
        self._c.set(r, c, v, False)

    def get_weight(self, row: int, col: int) -> float:
        """Value of one weight (0.0 when inactive)."""
        return float(self._c.get(*self._coord(row, col))[0][0])

    def is_active(self, row: int, col: int) -> bool:
        """Whether the weight at ``(row, col)`` is active."""
        return bool(self._c.get(*self._coord(row, col))[1][0])

    def _coord(self, row: Any, col: Any) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for name, v, hi in (("row", row, self.shape[0]), ("col", col, self.shape[1])):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
            if not 0 <= v < hi:
                what = "rows" if name == "row" else "columns"
                raise IndexError(f"{name} = {v} is out of range for {hi} {what} "
                                 f"(valid: 0..{hi - 1})")
            out.append(np.array([v], np.int64))
        return out[0], out[1]

    def remove_weight(self, row: int, col: int) -> bool:
        """Deactivate one weight; return whether it was active.

        In tile mode the weight is set to 0 and its block stays active (a block is dropped by
        :meth:`optimize` once all its weights are 0).
        """
        return self._remove(*self._coord(row, col)) == 1

    def __contains__(self, key: tuple[int, int]) -> bool:
        row, col = key
        return self.is_active(row, col)

    # ---------------------------------------------------------------- many weights
    def batch_update(self, rows: Any, cols: Any = None, values: Any = None) -> None:
        """Set many weights, making them active.

        ``rows, cols, values`` are equal-length 1-D arrays; alternatively pass a single
        sequence of ``(row, col, value)`` tuples. Where a coordinate repeats, the last value
        wins.
        """
        r, c, v = self._triplets(rows, cols, values, "values")
        self._c.set(r, c, v, False)

    def add_weights(self, rows: Any, cols: Any, deltas: Any) -> None:
        """Accumulate: ``w[rows[i], cols[i]] += deltas[i]``; repeated coordinates sum.

        Unless the adapter allows non-finite values, a sum that would overflow float32 is
        refused (``ValueError``) before anything changes.
        """
        r, c, v = self._triplets(rows, cols, deltas, "deltas")
        self._check_sums(r, c, v, "deltas")
        self._c.set(r, c, v, True)

    def _check_sums(self, r: np.ndarray, c: np.ndarray, v: np.ndarray, name: str) -> None:
        """Refuse accumulations whose float32 result would not be finite."""
        if self._allow_nonfinite or not len(v):
            return
        cur = self._c.get(r, c)[0]
        bound = float(np.abs(cur).max()) + float(np.abs(v.astype(np.float64)).sum())
        if bound < 1e38:  # far from float32's 3.4e38: no sum can overflow
            return
        # Replay the float32 additions in the order the core does them.
        key = r * self.shape[1] + c
        uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
        acc = cur[first].astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for i in range(len(v)):
                acc[inv[i]] = np.float32(acc[inv[i]] + v[i])
        bad = ~np.isfinite(acc)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            row, col = divmod(int(uniq[j]), self.shape[1])
            raise ValueError(f"adding {name} would make the weight at ({row}, {col}) "
                             f"{float(acc[j])}, which is not finite (float32 overflow)"
                             f"{_NONFINITE_HINT}")

    def get_weights(self, rows: Any, cols: Any) -> np.ndarray:
        """Values at many coordinates as a float32 array (0.0 where inactive)."""
        r, c = self._pairs(rows, cols)
        return self._c.get(r, c)[0]

    def are_active(self, rows: Any, cols: Any) -> np.ndarray:
        """Whether each coordinate is active, as a bool array."""
        r, c = self._pairs(rows, cols)
        return self._c.get(r, c)[1].astype(bool)

    def remove_weights(self, rows: Any, cols: Any) -> int:
        """Deactivate many weights; return how many were active (tile mode: zeroes them)."""
        return self._remove(*self._pairs(rows, cols))

    def _remove(self, r: np.ndarray, c: np.ndarray) -> int:
        """Deactivate (tile mode: zero) validated coordinates; count the active ones."""
        if self.block_shape == (1, 1):
            return int(self._c.remove(r, c))
        return int(self._c.zero(r, c))

    def _pairs(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        V.same_length(rows=r, cols=c)
        return r, c

    def _triplets(self, rows: Any, cols: Any, values: Any,
                  value_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if cols is None and values is None:
            rows, cols, values = _unzip_triplets(rows)
        elif cols is None or values is None:
            raise TypeError(f"pass rows, cols and {value_name}, or one sequence of "
                            "(row, col, value) tuples")
        r, c = self._pairs(rows, cols)
        v = V.as_value_array(value_name, values, allow_nonfinite=self._allow_nonfinite,
                             hint=_NONFINITE_HINT)
        V.same_length(rows=r, **{value_name: v})
        return r, c, v

    # ---------------------------------------------------------------- whole adapter
    def active_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All active weights as ``(rows int64, cols int64, values float32)``, row-major order
        (sorted by row, then column)."""
        return self._c.export_active()

    def __iter__(self) -> Iterator[tuple[int, int, float]]:
        """Yield ``(row, col, value)`` for every active weight, in row-major order."""
        r, c, v = self.active_weights()
        return zip(r.tolist(), c.tolist(), v.tolist())

    def copy(self) -> SparseAdapter:
        """An independent deep copy."""
        return SparseAdapter._wrap(self._c.copy(), allow_nonfinite=self._allow_nonfinite,
                                   name=self.name)

    def clear(self) -> None:
        """Deactivate every weight and free every node."""
        self._c.clear()

    def optimize(self, tolerance: float = 0.0) -> int:
        """Drop weights with ``|w| <= tolerance`` and free empty leaves and nodes.

        In tile mode a block is dropped when all its weights are within the tolerance.
        Returns the number of weights dropped.
        """
        tol = V.real_scalar("tolerance", tolerance)
        if tol < 0:
            raise ValueError(f"tolerance must be >= 0, got {tol}")
        bh, bw = self.block_shape
        return int(self._c.prune(tol)) * bh * bw

    def merge_with(self, other: SparseAdapter, scale: float = 1.0) -> SparseAdapter:
        """Add ``scale * other`` into this adapter (``other`` is left untouched); returns self.

        Weights active in ``other`` become active here.
        """
        _same_shape("other", self, other)
        s = V.real_scalar("scale", scale)
        r, c, v = other.active_weights()
        if len(v):
            with np.errstate(over="ignore", invalid="ignore"):
                scaled = (v.astype(np.float64) * s).astype(np.float32)
            if not self._allow_nonfinite:
                V.check_finite("scale * other", scaled, source=v.astype(np.float64) * s,
                               hint=_NONFINITE_HINT)
            self._check_sums(r, c, scaled, "scale * other")
            self._c.set(r, c, scaled, True)
        return self

    def top_k(self, k: int) -> SparseAdapter:
        """A new adapter holding the ``k`` weights of largest magnitude (ties: lowest index).

        In tile mode the result keeps the block shape: the blocks of the kept weights are
        active, their other weights 0.
        """
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__} {k!r}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        r, c, v = self.active_weights()
        out = SparseAdapter(*self.shape, block_shape=self.block_shape,
                            allow_nonfinite=self._allow_nonfinite, name=self.name)
        if k >= len(v):
            keep = np.arange(len(v))
        else:
            keep = np.sort(np.argsort(-np.abs(v), kind="stable")[:k])
        out._c.set(r[keep], c[keep], v[keep], False)
        return out

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write a standard OpenVDB file holding one FloatGrid of the active weights.

        The grid's metadata carries the shape (``hyprvdb_rows``, ``hyprvdb_cols``), the block
        shape and the coordinate mapping (``x=row y=col>>3 z=col&7``); the file carries a CRC32
        of its bytes. The write is atomic.
        """
        path = _fspath("path", path)
        file_meta = [(FORMAT_KEY, FORMAT), (CRC_KEY, CRC_PLACEHOLDER)]
        grids = [self._grid("SparseAdapter")]
        atomic_write(path, lambda tmp: _core_module().save_vdb(grids, tmp, file_meta),
                     stamp=stamp_checksum)

    def _grid(self, kind: str) -> tuple:
        """This adapter as one grid for ``_core.save_vdb``."""
        r, c, v = self._c.export_active()
        return (self.name, *self.shape, *self.block_shape, r, c, v, [("hyprvdb_kind", kind)])

    @classmethod
    def load(cls, path: str | os.PathLike, *, allow_nonfinite: bool = False) -> SparseAdapter:
        """Read an adapter written by :meth:`save`.

        Raises ``FileNotFoundError`` for a missing file, :class:`CorruptFileError` for a
        truncated or damaged one, :class:`ForeignFileError` for a file hyprvdb did not write.
        """
        path, grids = read_vdb_file(path, FORMAT, "this hyprvdb")
        if len(grids) != 1:
            raise CorruptFileError(f"{path!r} holds {len(grids)} adapter grids; a SparseAdapter "
                                   f"file holds one")
        name, rows, cols, bh, bw, r, c, v = grids[0]
        out = cls._wrap(_new_core(rows, cols, bh, bw), allow_nonfinite=allow_nonfinite,
                        name=name)
        out._fill_from_file(r, c, v, path)
        return out

    def _fill_from_file(self, r: np.ndarray, c: np.ndarray, v: np.ndarray, path: str) -> None:
        """Load a grid's weights read from ``path`` into this empty adapter."""
        if not self._allow_nonfinite and not np.isfinite(v).all():
            raise CorruptFileError(f"{path!r} holds non-finite values; "
                                   "pass allow_nonfinite=True to load it")
        self._c.set(r, c, v, False)
        if self.active_count() != len(v):
            bh, bw = self.block_shape
            raise CorruptFileError(f"{path!r}: {len(v)} active voxels of grid {self.name!r} do "
                                   f"not fill whole {bh}x{bw} blocks")

    # ---------------------------------------------------------------- conversions
    @classmethod
    def from_dict(cls, weights: Mapping[tuple[int, int], float],
                  shape: tuple[int, int] | None = None, **kwargs: Any) -> SparseAdapter:
        """Build from ``{(row, col): value}`` (the seed design's HashMap).

        ``shape`` defaults to one past the largest row and column.
        """
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights must be a mapping {{(row, col): value}}, "
                            f"got {type(weights).__name__}")
        def is_int(x: Any) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))

        keys = list(weights.keys())
        for k in keys:
            if not (isinstance(k, tuple) and len(k) == 2):
                raise TypeError(f"weights keys must be (row, col) tuples, got {k!r}")
            if not (is_int(k[0]) and is_int(k[1])):
                raise TypeError(f"weights keys must be (row, col) tuples of ints, got {k!r}")
        values = list(weights.values())
        for k, v in zip(keys, values):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                                     np.floating)):
                raise TypeError(f"weights[{k!r}] must be a real number, got "
                                f"{type(v).__name__} {v!r}")
        rows = np.array([k[0] for k in keys], dtype=np.int64) if keys else np.zeros(0, np.int64)
        cols = np.array([k[1] for k in keys], dtype=np.int64) if keys else np.zeros(0, np.int64)
        vals = np.array(values, dtype=np.float64)
        if shape is None:
            if not keys:
                raise ValueError("shape is required for an empty mapping")
            # Negative coordinates are reported by batch_update below, naming them.
            shape = (max(int(rows.max()) + 1, 1), max(int(cols.max()) + 1, 1))
        out = cls(*shape, **kwargs)
        out.batch_update(rows, cols, vals)
        return out

    def to_dict(self) -> dict[tuple[int, int], float]:
        """``{(row, col): value}`` of every active weight."""
        r, c, v = self.active_weights()
        return dict(zip(zip(r.tolist(), c.tolist()), v.tolist()))

    @classmethod
    def from_dense(cls, dense: Any, *, tolerance: float = 0.0, **kwargs: Any) -> SparseAdapter:
        """Build from a 2-D array: entries with ``|w| > tolerance`` become active
        (in tile mode, every block holding one)."""
        a = V.as_matrix("dense", dense)
        tol = V.real_scalar("tolerance", tolerance)
        if tol < 0:
            raise ValueError(f"tolerance must be >= 0, got {tol}")
        out = cls(*a.shape, **kwargs)
        with np.errstate(over="ignore"):
            a32 = np.ascontiguousarray(a, dtype=np.float32)
        if not out._allow_nonfinite:
            bad = ~np.isfinite(a32)
            if bad.any():
                i, j = (int(x) for x in np.argwhere(bad)[0])
                raise ValueError(f"dense[{i}, {j}] = {a[i, j]!r} is not finite"
                                 f"{_NONFINITE_HINT}")
        out._c.from_dense(a32, tol)
        return out

    def to_dense(self) -> np.ndarray:
        """The full ``rows x cols`` float32 matrix."""
        out = np.zeros(self.shape, dtype=np.float32)
        self._c.to_dense(out)
        return out

    @classmethod
    def from_scipy(cls, matrix: Any, **kwargs: Any) -> SparseAdapter:
        """Build from any ``scipy.sparse`` matrix or array; stored entries become active
        (duplicates are summed, explicit zeros stay active)."""
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise TypeError(f"matrix must be a scipy.sparse matrix, got {type(matrix).__name__}")
        coo = sp.coo_matrix(matrix)
        coo.sum_duplicates()
        out = cls(*coo.shape, **kwargs)
        out.batch_update(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data)
        return out

    def to_scipy(self, format: str = "csr") -> Any:
        """A ``scipy.sparse`` matrix (``"csr"``, ``"csc"`` or ``"coo"``) of the active weights,
        explicit zeros included."""
        import scipy.sparse as sp

        if format not in ("csr", "csc", "coo"):
            raise ValueError(f"format must be one of 'csr', 'csc', 'coo', got {format!r}")
        r, c, v = self.active_weights()
        if format == "coo":
            return sp.coo_matrix((v, (r, c)), shape=self.shape)
        indptr, indices, data = _coo.to_csr(r, c, v, self.shape[0], index_dtype=np.int64,
                                            presorted=True)
        csr = sp.csr_matrix((data, indices, indptr), shape=self.shape)
        return csr if format == "csr" else csr.tocsc()

    @classmethod
    def from_lora(cls, A: Any, B: Any, alpha: float, density: float,
                  **kwargs: Any) -> SparseAdapter:
        """Sparsify a PEFT-style low-rank pair.

        ``A`` is ``lora_A`` (``r x in_features``), ``B`` is ``lora_B`` (``out_features x r``);
        the delta is ``(alpha / r) * B @ A`` (computed in float64). The
        ``max(1, round(density * out_features * in_features))`` entries of largest magnitude
        are kept.
        """
        a = V.as_matrix("A", A).astype(np.float64)
        b = V.as_matrix("B", B).astype(np.float64)
        if a.shape[0] == 0:
            raise ValueError(f"A must have at least one row (the LoRA rank r), got shape "
                             f"{a.shape}")
        if b.shape[1] != a.shape[0]:
            raise ValueError(f"B has {b.shape[1]} columns but A has {a.shape[0]} rows "
                             f"(B: {b.shape}, A: {a.shape}); expected B: (out, r), A: (r, in)")
        alpha = V.real_scalar("alpha", alpha)
        density = V.real_scalar("density", density)
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        from .. import _peft
        out = cls(b.shape[0], a.shape[1], **kwargs)
        out.batch_update(*_peft.lora_topk(a, b, alpha / a.shape[0], density))
        return out


def fuse_adapters(adapters: Sequence[SparseAdapter],
                  scales: Sequence[float] | None = None) -> SparseAdapter:
    """A new adapter equal to ``sum(scales[i] * adapters[i])`` (scales default to 1).

    All adapters must have the same shape; the result is unstructured unless every input
    shares one block shape.

    Examples
    --------
    >>> import hyprvdb
    >>> a = hyprvdb.SparseAdapter(2, 2)
    >>> a.set_weight(0, 0, 1.0)
    >>> b = hyprvdb.SparseAdapter(2, 2)
    >>> b.batch_update([0, 1], [0, 1], [0.5, 2.0])
    >>> hyprvdb.fuse_adapters([a, b], scales=[1.0, -2.0]).to_dense().tolist()
    [[0.0, 0.0], [0.0, -4.0]]
    """
    adapters = list(adapters)
    if not adapters:
        raise ValueError("adapters must hold at least one SparseAdapter, got none")
    for i, a in enumerate(adapters):
        if not isinstance(a, SparseAdapter):
            raise TypeError(f"adapters[{i}] must be a SparseAdapter, got {type(a).__name__}")
    scales = [1.0] * len(adapters) if scales is None else list(scales)
    if len(scales) != len(adapters):
        raise ValueError(f"scales must have one entry per adapter: "
                         f"{len(adapters)} adapters, {len(scales)} scales")
    first = adapters[0]
    for i, a in enumerate(adapters[1:], 1):
        if a.shape != first.shape:
            raise ValueError(f"adapters[{i}] has shape {a.shape}, adapters[0] has {first.shape}")
    blocks = {a.block_shape for a in adapters}
    out = SparseAdapter(*first.shape, block_shape=blocks.pop() if len(blocks) == 1 else (1, 1),
                        name=first.name)
    for a, s in zip(adapters, scales):
        out.merge_with(a, s)
    return out


def enforce_sparsity(adapter: SparseAdapter, threshold: float = 0.0, *,
                     top_k: int | None = None, in_place: bool = False) -> SparseAdapter:
    """Drop weights with ``|w| <= threshold``, then keep at most ``top_k`` of the largest.

    Returns a new adapter unless ``in_place`` is true.

    Examples
    --------
    >>> import hyprvdb
    >>> a = hyprvdb.SparseAdapter(4, 4)
    >>> a.batch_update([0, 1, 2], [0, 1, 2], [0.1, -2.0, 0.5])
    >>> hyprvdb.enforce_sparsity(a, 0.2).active_count()
    2
    >>> hyprvdb.enforce_sparsity(a, top_k=1).active_weights()[2].tolist()
    [-2.0]
    """
    if not isinstance(adapter, SparseAdapter):
        raise TypeError(f"adapter must be a SparseAdapter, got {type(adapter).__name__}")
    tol = V.real_scalar("threshold", threshold)
    if tol < 0:
        raise ValueError(f"threshold must be >= 0, got {tol}")
    if top_k is not None:
        if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)):
            raise TypeError(f"top_k must be an int, got {type(top_k).__name__} {top_k!r}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
    out = adapter if in_place else adapter.copy()
    out.optimize(tol)
    if top_k is not None:
        kept = out.top_k(top_k)
        if in_place:
            out._c = kept._c
        else:
            out = kept
    return out


# -------------------------------------------------------------------- helpers
def _new_core(rows: int, cols: int, bh: int, bw: int) -> Any:
    """The live structure for a shape: a one-matrix tree of 64-column cells when unstructured,
    a tree of whole blocks in tile mode."""
    mod = _core_module()
    return mod.View(rows, cols) if (bh, bw) == (1, 1) else mod.Core(rows, cols, bh, bw)


def read_vdb_file(path: Any, fmt: str, reader: str) -> tuple[str, list[tuple]]:
    """(path as str, the grids) of a hyprvdb ``.vdb`` file whose format must be ``fmt``;
    ``reader`` names who reads it in the error for another format."""
    path = _fspath("path", path)
    with open(path, "rb") as f:
        data = f.read()
    got = check_vdb_bytes(data, path)
    if got != fmt:
        raise ForeignFileError(f"{path!r} holds format {got!r}; {reader} reads {fmt!r}")
    return path, read_grids(data, path)


def read_grids(data: bytes, path: str) -> list[tuple]:
    """Every adapter grid of a ``.vdb`` file's bytes as (name, rows, cols, block_rows,
    block_cols, rows[], cols[], values[]), with the core's errors as hyprvdb's."""
    mod = _core_module()
    try:
        return mod.load_vdb(data, repr(path))
    except mod.ForeignFile as exc:
        raise ForeignFileError(str(exc)) from None
    except mod.CorruptFile as exc:
        raise CorruptFileError(str(exc)) from None


def _block_shape(block_shape: Any) -> tuple[int, int]:
    try:
        bh, bw = block_shape
    except (TypeError, ValueError):
        raise TypeError(f"block_shape must be a pair of ints, got {block_shape!r}") from None
    return V.positive_int("block_shape[0]", bh), V.positive_int("block_shape[1]", bw)


def _scalar(name: str, value: Any, allow_nonfinite: bool) -> float:
    try:
        return V.real_scalar(name, value, allow_nonfinite=allow_nonfinite)
    except ValueError as exc:
        raise ValueError(f"{exc}{_NONFINITE_HINT}") from None


def _unzip_triplets(items: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(items, np.ndarray):
        if items.ndim != 2 or items.shape[1] != 3:
            raise ValueError(f"a single array of updates must have shape (n, 3), got {items.shape}")
        return items[:, 0], items[:, 1], items[:, 2]
    if not isinstance(items, Iterable):
        raise TypeError(f"updates must be a sequence of (row, col, value) tuples, "
                        f"got {type(items).__name__}")
    items = list(items)
    for i, t in enumerate(items):
        if not (isinstance(t, (tuple, list)) and len(t) == 3):
            raise ValueError(f"updates[{i}] must be a (row, col, value) tuple, got {t!r}")
    if not items:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows, cols, vals = zip(*items)
    return np.array(rows), np.array(cols), np.array(vals)


def _same_shape(name: str, a: SparseAdapter, b: Any) -> None:
    if not isinstance(b, SparseAdapter):
        raise TypeError(f"{name} must be a SparseAdapter, got {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name} has shape {b.shape}, expected {a.shape}")


def _fspath(name: str, path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)
