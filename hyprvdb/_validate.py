"""Argument checking at the Python boundary: dtypes, lengths, finiteness.

Coordinates may be any integer dtype; values may be any real floating or integer dtype and are
cast to float32 (float64 rounds to nearest). Booleans, complex numbers, strings and floats used
as coordinates are refused with ``TypeError``. NaN and infinity are refused with ``ValueError``
unless the caller allows them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _describe(a: np.ndarray) -> str:
    return f"dtype {a.dtype}"


def _as_1d(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    return a


def as_index_array(name: str, x: Any) -> np.ndarray:
    """Return ``x`` as a contiguous 1-D int64 array, refusing non-integer kinds."""
    a = _as_1d(name, x)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype == object and all(isinstance(v, int) and not isinstance(v, bool)
                                 for v in a.tolist()):
        # Python ints too large for int64: certainly outside any matrix.
        i = next(i for i, v in enumerate(a.tolist()) if not -2**63 <= v < 2**63)
        raise IndexError(f"{name}[{i}] = {a[i]} is out of range (beyond any matrix dimension)")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got {_describe(a)}")
    if a.dtype.kind == "u" and a.dtype.itemsize == 8 and a.max() > np.iinfo(np.int64).max:
        raise IndexError(f"{name} holds {a.max()}, beyond any matrix dimension")
    return np.ascontiguousarray(a, dtype=np.int64)


def as_value_array(name: str, x: Any, *, allow_nonfinite: bool = False,
                   hint: str = "") -> np.ndarray:
    """Return ``x`` as a contiguous 1-D float32 array, refusing non-real kinds and NaN/inf
    (``hint`` is appended to that error, e.g. how to allow them)."""
    a = _as_1d(name, x)
    if a.size == 0:
        return np.zeros(0, dtype=np.float32)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got {_describe(a)}")
    with np.errstate(over="ignore"):  # overflow becomes inf, refused below with its value
        out = np.ascontiguousarray(a, dtype=np.float32)
    if not allow_nonfinite:
        check_finite(name, out, source=a, hint=hint)
    return out


def check_finite(name: str, out: np.ndarray, *, source: np.ndarray | None = None,
                 hint: str = "") -> None:
    finite = np.isfinite(out)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        shown = (source[i] if source is not None else out[i]).item()  # a plain float's repr
        why = " (overflows float32)" if np.isfinite(shown) else ""
        raise ValueError(f"{name}[{i}] = {shown!r} is not finite{why}{hint}")


def as_matrix(name: str, x: Any) -> np.ndarray:
    """Return ``x`` as a 2-D float array (dtype kept if floating), refusing other kinds."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional, got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got {_describe(a)}")
    return a


def same_length(**arrays: np.ndarray) -> int:
    names = list(arrays)
    n = len(arrays[names[0]])
    for other in names[1:]:
        if len(arrays[other]) != n:
            raise ValueError(
                f"{names[0]} and {other} must have the same length, "
                f"got {n} and {len(arrays[other])}"
            )
    return n


#: The largest row or column count of any matrix hyprvdb holds: OpenVDB and NanoVDB
#: coordinates are int32, and with both dimensions below 2**31 a linear index
#: ``row * cols + col`` stays below 2**62, so no index computation can overflow int64.
MAX_DIM = 2**31 - 1


def matrix_dims(rows: Any, cols: Any, names: tuple[str, str] = ("rows", "cols")
                ) -> tuple[int, int]:
    """``(rows, cols)`` as ints in ``1..MAX_DIM`` (the one shape rule of every class)."""
    return (positive_int(names[0], rows, limit=MAX_DIM),
            positive_int(names[1], cols, limit=MAX_DIM))


def positive_int(name: str, x: Any, *, limit: int | None = None) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    if x <= 0:
        raise ValueError(f"{name} must be positive, got {x}")
    if limit is not None and x > limit:
        raise ValueError(f"{name} must be in 1..{limit}, got {x}")
    return int(x)


def real_scalar(name: str, x: Any, *, allow_nonfinite: bool = False) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__} {x!r}")
    v = float(x)
    if not allow_nonfinite and not np.isfinite(v):
        raise ValueError(f"{name} = {v!r} is not finite")
    return v


def check_range(name: str, a: np.ndarray, hi: int) -> None:
    """Raise IndexError naming the first entry of ``a`` outside ``0..hi-1``."""
    if len(a) == 0 or (a.min() >= 0 and a.max() < hi):
        return
    bad = (a < 0) | (a >= hi)
    i = int(np.flatnonzero(bad)[0])
    what = "rows" if name == "rows" else "columns"
    raise IndexError(f"{name}[{i}] = {a[i]} is out of range for {hi} {what} "
                     f"(valid: 0..{hi - 1})")
