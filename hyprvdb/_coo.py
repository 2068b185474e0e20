"""The one COO → CSR conversion of hyprvdb (snapshots, SparseAdapter.to_scipy, hyprvdb.jax
deltas and serving all build their CSR views here)."""

from __future__ import annotations

import numpy as np


def row_major(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The permutation that sorts ``(rows, cols)`` row-major (stable for equal pairs)."""
    return np.lexsort((cols, rows))


def indptr(rows: np.ndarray, n_rows: int, dtype: type = np.int64) -> np.ndarray:
    """CSR row pointers (``n_rows + 1``,) of row indices sorted ascending."""
    out = np.zeros(n_rows + 1, dtype=dtype)
    if len(rows):
        np.cumsum(np.bincount(rows, minlength=n_rows), out=out[1:])
    return out


def to_csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, *,
           index_dtype: type = np.int32, presorted: bool = False
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of distinct coordinates; columns sorted within each row.

    ``presorted`` skips the sort for coordinates already in row-major order.
    """
    if not presorted:
        order = row_major(rows, cols)
        rows, cols, values = rows[order], cols[order], values[order]
    return indptr(rows, n_rows, index_dtype), np.asarray(cols, index_dtype), values


def split_linear(idx: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of linear indices ``row * cols + col``."""
    return np.divmod(idx, cols)
