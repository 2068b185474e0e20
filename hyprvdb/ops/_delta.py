"""DeviceDelta and the delta products, gather and merges on a device (see the package
docstring)."""

from __future__ import annotations

import functools
import zlib
from typing import Any

import numpy as np

from .. import _native
from .. import _validate as V
from . import _kernels

__all__ = ["DeviceDelta", "resolve_device", "delta_matmul", "delta_matmul_segments",
           "delta_matmul_segments_csr", "segment_tiles", "gpu_plan",
           "fused_linear", "gather", "merge", "unmerge", "merge_layers"]

_DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is usable, else ``"cpu"``.

    Examples
    --------
    >>> from hyprvdb import ops
    >>> ops.resolve_device("cpu")
    'cpu'
    >>> ops.resolve_device("auto") in ("cpu", "cuda")
    True
    """
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}, got {device!r}")
    if device == "auto":
        return "cuda" if _native.cuda_available() else "cpu"
    if device == "cuda" and not _native.cuda_available():
        raise RuntimeError("device='cuda' needs CuPy and a CUDA device; none is usable here")
    return device


def _bf16() -> Any:
    try:
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        return None


def _dtype_code(dt: Any) -> int:
    dt = np.dtype(dt)
    if dt == np.float32:
        return 0
    if dt == np.float16:
        return 1
    if dt.name == "bfloat16":
        return 2
    raise TypeError(f"x must be float32, float16 or bfloat16, got dtype {dt}")


def _xp(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        return np
    import cupy
    return cupy


class DeviceDelta:
    """A snapshot's sparse delta on a device, in the layouts the kernels read.

    Holds the snapshot's NanoVDB grid buffer and its packed values (for tree walks such as
    :func:`gather`) and a CSR view (row pointers int32, columns int32, float32 values in
    row-major order, and each nonzero's row) for the matmul and merge kernels. :meth:`update`
    re-sends only the values when the topology is unchanged.

    Examples
    --------
    >>> import hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> d = ops.DeviceDelta.upload(snap, "cpu")
    >>> d.shape, d.nnz, d.indptr.tolist(), d.indices.tolist()
    ((2, 3), 2, [0, 1, 2], [2, 0])
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.shape: tuple[int, int] = (0, 0)
        self.step: int | None = None
        self._key = -1

    @classmethod
    def upload(cls, snapshot: Any, device: str = "auto") -> DeviceDelta:
        """Send ``snapshot`` (a :class:`hyprvdb.Snapshot`) to ``device``."""
        out = cls(resolve_device(device))
        out.update(snapshot)
        return out

    @classmethod
    def from_csr(cls, indptr: Any, indices: Any, data: Any, rows: Any, shape: tuple[int, int],
                 device: str, *, check: bool = True) -> DeviceDelta:
        """A delta over CSR arrays already on ``device`` ("cpu": numpy, "cuda": CuPy), used as
        they are, without copies: int32 ``indptr`` (shape[0] + 1), int32 ``indices`` and
        ``rows`` and float32 ``data`` (one per nonzero, row-major). It has no NanoVDB grid,
        so it serves the matmul and merge kernels but not :func:`gather`.

        The kernels read these arrays as they are, so their contents are checked first:
        ``indptr`` starts at 0, never decreases and ends at the nonzero count, every column
        lies in ``0..shape[1] - 1``, ``rows`` repeats each row once per nonzero of it, and the
        values are finite (a ``ValueError`` names the first entry that is not so).
        ``check=False`` skips the contents (not the dtypes and shapes) for arrays the caller
        built and checked itself, such as :class:`hyprvdb.jax.SparseDelta`'s; never pass it
        for arrays from elsewhere: a bad index is then a read outside memory.
        """
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        try:
            n_rows, n_cols = shape
        except (TypeError, ValueError):
            raise TypeError(f"shape must be a pair of ints (rows, cols), got {shape!r}") from None
        shape = V.matrix_dims(n_rows, n_cols, ("shape[0]", "shape[1]"))
        xp = np if device == "cpu" else __import__("cupy")
        nnz = None
        for name, a, dtype in (("data", data, np.float32), ("indices", indices, np.int32),
                               ("rows", rows, np.int32), ("indptr", indptr, np.int32)):
            if not isinstance(a, xp.ndarray):
                raise TypeError(f"{name} must be a {xp.__name__} array (device {device!r}), "
                                f"got {type(a).__module__}.{type(a).__name__}")
            dt, sh = a.dtype, tuple(a.shape)
            nnz = sh[0] if nnz is None and len(sh) == 1 else nnz
            want = (shape[0] + 1,) if name == "indptr" else (nnz,)
            if dt != dtype or sh != want or not a.flags.c_contiguous:
                raise ValueError(f"{name} must be a contiguous {np.dtype(dtype)} array of shape "
                                 f"{want}, got {dt} of shape {sh}")
        if check:
            _check_csr(xp, indptr, indices, data, rows, shape)
        out = cls(device)
        out.shape = shape
        out.indptr, out.indices, out.data, out.rows = indptr, indices, data, rows
        out.grid = None
        return out

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    def update(self, snapshot: Any) -> bool:
        """Take a newer snapshot; returns True when the topology had to be re-sent."""
        if not hasattr(snapshot, "to_csr_arrays"):
            raise TypeError(f"snapshot must be a hyprvdb.Snapshot, got {type(snapshot).__name__}")
        if self._key != -1 and tuple(snapshot.shape) != self.shape:
            raise ValueError(f"snapshot has shape {tuple(snapshot.shape)}, this delta "
                             f"{self.shape}")
        indptr, indices, data = snapshot.to_csr_arrays()
        indptr = np.ascontiguousarray(indptr, dtype=np.int32)
        indices = np.ascontiguousarray(indices, dtype=np.int32)
        key = zlib.crc32(indices.tobytes(), zlib.crc32(indptr.tobytes()))
        xp = np if self.device == "cpu" else __import__("cupy")
        rebuilt = key != self._key
        if rebuilt:
            self.shape = tuple(int(s) for s in snapshot.shape)
            self.indptr = xp.asarray(indptr)
            self.indices = xp.asarray(indices)
            self.rows = xp.asarray(np.repeat(np.arange(len(indptr) - 1, dtype=np.int32),
                                             np.diff(indptr)))
            self.grid = xp.asarray(snapshot.buffer)
            self._key = key
        self.data = xp.asarray(np.ascontiguousarray(data, dtype=np.float32))
        self.values = xp.asarray(np.ascontiguousarray(snapshot.values, dtype=np.float32))
        self.step = snapshot.step
        return rebuilt

    def to_dense(self) -> Any:
        """The dense float32 delta on the device (for references and debugging)."""
        xp = np if self.device == "cpu" else __import__("cupy")
        out = xp.zeros(self.shape, dtype=xp.float32)
        out[self.rows, self.indices] = self.data
        return out


def _first(xp: Any, bad: Any) -> int:
    return int(xp.flatnonzero(bad)[0])


def _check_csr(xp: Any, indptr: Any, indices: Any, data: Any, rows: Any,
               shape: tuple[int, int]) -> None:
    """Raise ValueError unless the CSR arrays are what the kernels may read safely."""
    nnz = int(data.shape[0])
    if int(indptr[0]) != 0 or int(indptr[-1]) != nnz:
        raise ValueError(f"indptr must start at 0 and end at the {nnz} nonzeros, got "
                         f"{int(indptr[0])} .. {int(indptr[-1])}")
    step = xp.diff(indptr)
    if bool((step < 0).any()):
        i = _first(xp, step < 0)
        raise ValueError(f"indptr must not decrease: indptr[{i + 1}] = {int(indptr[i + 1])} < "
                         f"indptr[{i}] = {int(indptr[i])}")
    bad = (indices < 0) | (indices >= shape[1])
    if bool(bad.any()):
        i = _first(xp, bad)
        raise ValueError(f"indices[{i}] = {int(indices[i])} is outside the {shape[1]} columns")
    want = xp.repeat(xp.arange(shape[0], dtype=xp.int32), step)
    if not bool((rows == want).all()):
        i = _first(xp, rows != want)
        raise ValueError(f"rows[{i}] = {int(rows[i])} disagrees with indptr, which puts "
                         f"nonzero {i} in row {int(want[i])}")
    if not bool(xp.isfinite(data).all()):
        i = _first(xp, ~xp.isfinite(data))
        raise ValueError(f"data[{i}] = {float(data[i])!r} is not finite")


def _scale(scale: Any) -> float:
    return V.real_scalar("scale", scale)


def _out_array(name: str, a: Any, xp: Any) -> Any:
    if not isinstance(a, xp.ndarray):
        raise TypeError(f"{name} must be a {xp.__name__} array on the delta's device, got "
                        f"{type(a).__module__}.{type(a).__name__}")
    return a


def _coords(name: str, a: Any, xp: Any) -> Any:
    """Integer coordinates (any shape, read flat) as a contiguous int64 array on ``xp``'s
    device."""
    if xp is np:
        return V.as_index_array(name, np.asarray(a).ravel())
    a = xp.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {a.dtype}")
    return xp.ascontiguousarray(a.astype(xp.int64).ravel())


def _as_delta(delta: Any, operand: Any) -> DeviceDelta:
    """A DeviceDelta as is; a Snapshot uploaded to the operand's device (the GPU for a CuPy
    array, the CPU for anything else), so that results live where the operands do."""
    if isinstance(delta, DeviceDelta):
        return delta
    if hasattr(delta, "to_csr_arrays"):
        on_gpu = hasattr(operand, "__cuda_array_interface__")
        return DeviceDelta.upload(delta, "cuda" if on_gpu else "cpu")
    raise TypeError(f"delta must be a Snapshot or DeviceDelta, got {type(delta).__name__}")


def _check_x(x: Any, k: int, xp: Any) -> Any:
    if not isinstance(x, xp.ndarray):
        want = "numpy" if xp is np else "cupy"
        raise TypeError(f"x must be a {want} array on the delta's device, got "
                        f"{type(x).__module__}.{type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(f"x must have shape (batch, {k}), got {tuple(x.shape)}")
    _dtype_code(x.dtype)
    return xp.ascontiguousarray(x)


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a


def delta_matmul(x: Any, delta: Any, scale: float = 1.0, *, out: Any = None,
                 method: str = "auto") -> Any:
    """``out += scale * x @ dW.T`` (or a new array ``scale * x @ dW.T`` when ``out`` is None).

    ``x``: (batch, in_features) float32/float16/bfloat16 on the delta's device; result:
    (batch, out_features), x's dtype. ``method`` picks the GPU's kernel: ``"rows"`` (a warp
    per output row over tiles of 8 batch rows, for small batches), ``"staged"`` (tiles of x
    staged in shared memory, for wide batches) or ``"auto"``, the rule of :func:`gpu_plan`;
    the CPU has kernels of its own and checks the name only.

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> ops.delta_matmul(np.ones((1, 3), np.float32), snap).tolist()
    [[0.5, -1.0]]
    """
    scale = _scale(scale)
    _method(method, with_w=False)
    d = _as_delta(delta, x)
    xp = np if d.device == "cpu" else __import__("cupy")
    x = _check_x(x, d.shape[1], xp)
    if out is None:
        out = xp.zeros((x.shape[0], d.shape[0]), dtype=x.dtype)
    elif _out_array("out", out, xp).shape != (x.shape[0], d.shape[0]) or out.dtype != x.dtype \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {x.dtype} array of shape "
                         f"{(x.shape[0], d.shape[0])}, got {out.dtype} {tuple(out.shape)}")
    if x.shape[0] == 0 or d.nnz == 0:
        return out
    if d.device == "cuda":
        _cuda_linear(x, None, None, d, out, float(scale), fused=False, method=method)
    elif _native.cpu() is not None:
        _native.cpu().delta_matmul(d.indptr, d.indices, d.data, _bits(x), _bits(out),
                                _dtype_code(x.dtype), float(scale))
    else:
        out[...] = (out.astype(np.float32) + scale * _np_spmm(d, x)).astype(out.dtype)
    return out


def delta_matmul_segments(x: Any, deltas: Any, segment_ids: Any, scale: float = 1.0, *,
                          out: Any = None, method: str = "auto") -> Any:
    """A batch that mixes deltas: ``out[b] += scale * x[b] @ dW_s.T`` with ``s =
    segment_ids[b]`` (-1: no delta for that row), all in one launch.

    ``deltas``: a list of Snapshots or DeviceDeltas of one shape on one device (many
    adapters, or many past steps of one); ``segment_ids``: ``batch`` integers in -1 ..
    len(deltas) - 1; ``x``, ``out`` and ``method`` as for :func:`delta_matmul` (on a GPU,
    tiles of one delta's rows go through the row or the staged kernel).

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> other = hyprvdb.Snapshot.from_coo([1], [1], [3.0], (2, 3))
    >>> x = np.ones((3, 3), np.float32)
    >>> ops.delta_matmul_segments(x, [snap, other], [1, -1, 0]).tolist()
    [[0.0, 3.0], [0.0, 0.0], [0.5, -1.0]]
    """
    scale = _scale(scale)
    _method(method, with_w=False)
    if not isinstance(deltas, (list, tuple)) or not deltas:
        raise ValueError(f"deltas must be a non-empty list of deltas, got "
                         f"{type(deltas).__name__}")
    ds = [_as_delta(d, x) for d in deltas]
    shape, device = ds[0].shape, ds[0].device
    for i, d in enumerate(ds):
        if d.shape != shape or d.device != device:
            raise ValueError(f"deltas[{i}] is {d.shape} on {d.device}; deltas[0] is {shape} "
                             f"on {device}: a mixed batch needs one shape on one device")
    xp = np if device == "cpu" else __import__("cupy")
    x = _check_x(x, shape[1], xp)
    seg = V.as_index_array("segment_ids", np.asarray(
        segment_ids.get() if hasattr(segment_ids, "get") else segment_ids).ravel())
    if len(seg) != x.shape[0]:
        raise ValueError(f"segment_ids must have one entry per row of x ({x.shape[0]}), got "
                         f"{len(seg)}")
    bad = (seg < -1) | (seg >= len(ds))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"segment_ids[{i}] = {int(seg[i])} is not a delta's number (-1 .. "
                         f"{len(ds) - 1})")
    seg = seg.astype(np.int32)
    if out is None:
        out = xp.zeros((x.shape[0], shape[0]), dtype=x.dtype)
    elif _out_array("out", out, xp).shape != (x.shape[0], shape[0]) or out.dtype != x.dtype \
            or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {x.dtype} array of shape "
                         f"{(x.shape[0], shape[0])}, got {out.dtype} {tuple(out.shape)}")
    if x.shape[0] == 0 or not any(d.nnz for d in ds):
        return out
    indptr, indices, data = _stack(xp, ds)
    delta_matmul_segments_csr(device, x, indptr, indices, data, shape[0], seg, out,
                              float(scale), method=method)
    return out


def delta_matmul_segments_csr(device: str, x: Any, indptr: Any, indices: Any, data: Any,
                              rows: int, seg: np.ndarray, out: Any, scale: float, *,
                              method: str = "auto") -> None:
    """:func:`delta_matmul_segments` on stacked CSR arrays already checked (hyprvdb.jax's
    callback path calls it with JAX's buffers): ``indptr`` holds ``nseg * (rows + 1)``
    offsets into the concatenated ``indices`` and ``data``; ``seg`` int32 per row of ``x``.
    The CUDA kernel, the C++ kernels, or numpy.

    Examples
    --------
    >>> import numpy as np
    >>> from hyprvdb import ops
    >>> indptr = np.array([0, 1, 2, 2, 2, 3], np.int32)  # two 2-row deltas, stacked
    >>> indices = np.array([2, 0, 1], np.int32)
    >>> data = np.array([0.5, -1.0, 3.0], np.float32)
    >>> x, out = np.ones((2, 3), np.float32), np.zeros((2, 2), np.float32)
    >>> ops.delta_matmul_segments_csr("cpu", x, indptr, indices, data, 2,
    ...                               np.array([1, 0], np.int32), out, 1.0)
    >>> out.tolist()
    [[0.0, 3.0], [0.5, -1.0]]
    """
    if device == "cuda":
        _cuda_segments(x, indptr, indices, data, rows, seg, out, scale, method)
    elif _native.cpu() is not None:
        _native.cpu().delta_matmul_segments(indptr, indices, data, rows, seg, _bits(x),
                                            _bits(out), _dtype_code(x.dtype), scale)
    else:
        for s in range(len(indptr) // (rows + 1)):
            b = np.flatnonzero(seg == s)
            if len(b):
                ip = indptr[s * (rows + 1):(s + 1) * (rows + 1)]
                part = _np_spmm_csr(ip - ip[0], indices[ip[0]:ip[-1]], data[ip[0]:ip[-1]],
                                    rows, x[b])
                out[b] = (out[b].astype(np.float32) + scale * part).astype(out.dtype)


def _stack(xp: Any, ds: list[DeviceDelta]) -> tuple[Any, Any, Any]:
    """The deltas' CSR arrays stacked: indptr (n * (rows + 1),) offsets into the concatenated
    indices and data."""
    starts = np.concatenate([[0], np.cumsum([d.nnz for d in ds])])
    if starts[-1] >= 2**31:
        raise ValueError(f"the deltas hold {int(starts[-1])} nonzeros together; a mixed batch "
                         f"takes at most 2**31 - 1")
    indptr = xp.concatenate([d.indptr + xp.int32(o) for d, o in zip(ds, starts[:-1])])
    return (xp.ascontiguousarray(indptr.astype(xp.int32)),
            xp.concatenate([d.indices for d in ds]), xp.concatenate([d.data for d in ds]))


def segment_tiles(segment_ids: np.ndarray, nseg: int, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch rows grouped by segment in tiles of at most ``nb`` rows of one segment:
    ``order`` (the rows, segment by segment, batch order within one; -1 rows left out) and
    ``tiles`` (n, 3): start in ``order``, length, segment. The C++ rule
    (``csrc/cpu/linear.h`` segment_tiles) where the extension is built; this numpy twin
    otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from hyprvdb import ops
    >>> order, tiles = ops.segment_tiles(np.array([1, 0, 1, -1], np.int32), 2, 8)
    >>> order.tolist(), tiles.tolist()
    ([1, 0, 2], [[0, 1, 0], [1, 2, 1]])
    """
    seg = np.asarray(segment_ids, np.int32)
    if _native.cpu() is not None:
        return _native.cpu().segment_tiles(seg, int(nseg), int(nb))
    order = np.argsort(np.where(seg < 0, nseg, seg), kind="stable")[:int((seg >= 0).sum())]
    counts = np.bincount(seg[seg >= 0], minlength=nseg)
    tiles = [(at, min(nb, int(start + n - at)), s)
             for s, (start, n) in enumerate(zip(np.concatenate([[0], np.cumsum(counts)[:-1]]),
                                                counts))
             for at in range(int(start), int(start + n), nb)]
    return order.astype(np.int32), np.array(tiles, np.int32).reshape(-1, 3)


def fused_linear(x: Any, W: Any, delta: Any, scale: float = 1.0, bias: Any = None, *,
                 method: str = "auto") -> Any:
    """``x @ W.T + bias + scale * x @ dW.T``.

    On a GPU, ``method`` is one of
    ``"rows"``/``"staged"``: the dense part on cuBLAS (CuPy's matmul into the output), then
    that delta kernel (see :func:`delta_matmul`) accumulating into it on the same stream;
    ``"merge"``: the delta merged into a scratch copy of W, then one cuBLAS GEMM (the
    merged weights are rounded to W's dtype before the product, as serving merged weights
    does: for 16-bit types the result differs from the other ways by that rounding);
    ``"fused"``: the one-pass kernel (W's row and the delta's together, no tensor cores; what
    runs for a dtype CuPy's matmul does not take);
    ``"auto"``: the rule of :func:`gpu_plan`. On the CPU one pass over W and the delta, and
    the name is only checked.
    ``W``: (out_features, in_features) of x's dtype; ``bias``: (out_features,) or None.

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> x, W = np.ones((1, 3), np.float32), np.ones((2, 3), np.float32)
    >>> ops.fused_linear(x, W, snap).tolist()
    [[3.5, 2.0]]
    """
    scale = _scale(scale)
    _method(method, with_w=True)
    d = _as_delta(delta, x)
    xp = np if d.device == "cpu" else __import__("cupy")
    x = _check_x(x, d.shape[1], xp)
    if not isinstance(W, xp.ndarray) or W.shape != d.shape or W.dtype != x.dtype:
        raise ValueError(f"W must be a {x.dtype} array of shape {d.shape} on the delta's "
                         f"device, got {getattr(W, 'dtype', type(W).__name__)} "
                         f"{tuple(getattr(W, 'shape', ()))}")
    W = xp.ascontiguousarray(W)
    if bias is not None:
        if _out_array("bias", bias, xp).shape != (d.shape[0],) or bias.dtype != x.dtype:
            raise ValueError(f"bias must be a {x.dtype} array of shape ({d.shape[0]},), got "
                             f"{bias.dtype} {tuple(bias.shape)}")
        bias = xp.ascontiguousarray(bias)
    out = xp.empty((x.shape[0], d.shape[0]), dtype=x.dtype)
    if out.size == 0:
        return out
    if d.device == "cuda":
        _cuda_linear(x, W, bias, d, out, float(scale), fused=True, method=method)
    elif _native.cpu() is not None:
        _native.cpu().fused_linear(_bits(W), None if bias is None else _bits(bias), d.indptr,
                                d.indices, d.data, _bits(x), _bits(out),
                                _dtype_code(x.dtype), float(scale))
    else:
        y = x.astype(np.float32) @ W.astype(np.float32).T + scale * _np_spmm(d, x)
        if bias is not None:
            y += bias.astype(np.float32)
        out[...] = y.astype(out.dtype)
    return out


def gather(delta: Any, rows: Any, cols: Any) -> Any:
    """Values of the delta at ``(rows, cols)`` (0 where inactive), float32, found by walking
    the snapshot's NanoVDB tree (``kernels/nanovdb_index.cuh``).

    Examples
    --------
    >>> import hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> ops.gather(snap, [0, 1], [2, 2]).tolist()
    [0.5, 0.0]
    """
    d = _as_delta(delta, rows)
    if d.grid is None:
        raise ValueError("delta has no NanoVDB grid (it was built from CSR arrays); upload a "
                         "Snapshot to gather from it")
    xp = np if d.device == "cpu" else __import__("cupy")
    r = _coords("rows", rows, xp)
    c = _coords("cols", cols, xp)
    if r.shape != c.shape:
        raise ValueError(f"rows and cols must have the same length, got {r.size} and {c.size}")
    for name, a, hi in (("rows", r, d.shape[0]), ("cols", c, d.shape[1])):
        bad = (a < 0) | (a >= hi)
        if bool(bad.any()):
            i = int(xp.flatnonzero(bad)[0])
            raise IndexError(f"{name}[{i}] = {int(a[i])} is out of range (valid: 0..{hi - 1})")
    out = xp.zeros(r.shape, xp.float32)
    if r.size == 0:
        return out
    cpu = _native.cpu()
    if d.device == "cuda":
        fn = _kernels.function("gather.cu", "gather_index")
        threads = 256
        fn(((r.size + threads - 1) // threads,), (threads,),
           (d.grid, d.values, r, c, np.int64(r.size), out))
    elif hasattr(cpu, "gather_nanovdb"):  # built where the NanoVDB headers were found
        cpu.gather_nanovdb(d.grid, d.values, r, c, out)
    else:
        # numpy alone: binary search of each column in its row's sorted CSR segment
        key = d.rows.astype(np.int64) * d.shape[1] + d.indices
        q = r * d.shape[1] + c
        pos = np.minimum(np.searchsorted(key, q), max(d.nnz - 1, 0))
        hit = (key[pos] == q) if d.nnz else np.zeros(r.shape, bool)
        out[hit] = d.data[pos[hit]]
    return out


def merge(W: Any, delta: Any, scale: float = 1.0) -> Any:
    """``W += scale * dW`` in place (adapter switching); returns W.

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> W = np.zeros((2, 3), np.float32)
    >>> ops.merge(W, snap, 2.0).tolist()
    [[0.0, 0.0, 1.0], [-2.0, 0.0, 0.0]]
    """
    return merge_layers([W], [delta], scale)[0]


def unmerge(W: Any, delta: Any, scale: float = 1.0) -> Any:
    """``W -= scale * dW`` in place; undoes :func:`merge` up to rounding.

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> W = np.ones((2, 3), np.float32)
    >>> ops.unmerge(ops.merge(W, snap), snap).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return merge_layers([W], [delta], -_scale(scale))[0]


def merge_layers(Ws: list[Any], deltas: list[Any], scale: float = 1.0) -> list[Any]:
    """``Ws[i] += scale * deltas[i]`` for every layer, in one kernel launch on a GPU.

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> from hyprvdb import ops
    >>> snap = hyprvdb.Snapshot.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> Ws = [np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)]
    >>> [float(W[0, 2]) for W in ops.merge_layers(Ws, [snap, snap])]
    [0.5, 1.5]
    """
    scale = _scale(scale)
    if len(Ws) != len(deltas):
        raise ValueError(f"Ws and deltas must pair up: {len(Ws)} weights, {len(deltas)} deltas")
    ds = [_as_delta(d, W) for W, d in zip(Ws, deltas)]
    if not ds:
        return Ws
    devices = {d.device for d in ds}
    if len(devices) != 1:
        raise ValueError(f"all deltas must be on one device, got {sorted(devices)}")
    xp = np if ds[0].device == "cpu" else __import__("cupy")
    for i, (W, d) in enumerate(zip(Ws, ds)):
        if not isinstance(W, xp.ndarray) or W.shape != d.shape or not W.flags.c_contiguous:
            raise ValueError(f"Ws[{i}] must be a contiguous array of shape {d.shape} on the "
                             f"delta's device, got {type(W).__name__} "
                             f"{tuple(getattr(W, 'shape', ()))}")
        _dtype_code(W.dtype)
    if ds[0].device == "cuda":
        _cuda_merge(Ws, ds, float(scale))
    else:
        for W, d in zip(Ws, ds):
            if _native.cpu() is not None:
                _native.cpu().merge(_bits(W), d.rows, d.indices, d.data, _dtype_code(W.dtype),
                                 float(scale))
            else:
                cur = W[d.rows, d.indices].astype(np.float32)
                W[d.rows, d.indices] = (cur + np.float32(scale) * d.data).astype(W.dtype)
    return Ws


# -------------------------------------------------------------------- numpy paths
def _np_spmm(d: DeviceDelta, x: np.ndarray) -> np.ndarray:
    """float32 ``x @ dW.T`` with numpy alone: gather x's columns, weight, sum per row."""
    return _np_spmm_csr(d.indptr, d.indices, d.data, d.shape[0], x)


def _np_spmm_csr(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: int,
                 x: np.ndarray) -> np.ndarray:
    xt = np.ascontiguousarray(x.astype(np.float32).T)  # (k, batch): gathered rows are contiguous
    out = np.zeros((rows, x.shape[0]), np.float32)
    nonempty = np.flatnonzero(np.diff(indptr))
    if len(nonempty):
        prod = xt[indices] * data[:, None]
        out[nonempty] = np.add.reduceat(prod, indptr[nonempty], axis=0)
    return out.T


# -------------------------------------------------------------------- the choice by shape
# The rule of kernels/sparse_ops.cuh (product_choice and its helpers), which the CUDA FFI
# targets follow too: the extension's copy where it is built, these numpy twins otherwise.
ROWS, STAGED, MERGE = 0, 1, 2
_METHODS = {"rows": ROWS, "staged": STAGED, "merge": MERGE}
_NB = 8                   # HVDB_NB
_ROWS_BATCH_MAX = 16      # HVDB_ROWS_BATCH_MAX
_STAGED_SMEM = 96 * 1024  # HVDB_STAGED_SMEM
_WARPS = 8                # warps per block of the row kernels
_STAGED_WARPS = 16        # HVDB_STAGED_WARPS: warps per block of the staged kernels


def staged_batch_tile(k: int, itemsize: int, smem_bytes: int, batch: int) -> int:
    """The staged kernel's batch tile: the largest power of two up to 32 (and up to the batch
    rounded up to one) whose tile of x, ``k * bt * itemsize`` bytes, fits ``smem_bytes``; 0
    when none does."""
    cpu = _native.cpu()
    if cpu is not None:
        return int(cpu.staged_batch_tile(k, itemsize, smem_bytes, batch))
    bt, t = 0, 1
    while t <= 32 and k * t * itemsize <= smem_bytes:
        bt = t
        if t >= batch:
            break
        t *= 2
    return bt


def staged_row_groups(rows: int, batch: int, bt: int, warps: int, sms: int) -> int:
    """Blocks per batch tile of the staged kernel: enough to fill ``sms`` multiprocessors twice
    over, at most one per ``warps`` output rows."""
    cpu = _native.cpu()
    if cpu is not None:
        return int(cpu.staged_row_groups(rows, batch, bt, warps, sms))
    tiles = -(-batch // bt)
    return max(1, min(-(-2 * sms // tiles), -(-rows // warps)))


def product_choice(rows: int, k: int, nnz: int, batch: int, itemsize: int, bt: int,
                   row_groups: int, with_w: bool) -> int:
    """How a GPU computes the product for one shape (``ROWS``, ``STAGED`` or, with W,
    ``MERGE``): the way that moves the fewest bytes by the model of kernels/sparse_ops.cuh."""
    cpu = _native.cpu()
    if cpu is not None:
        return int(cpu.product_choice(rows, k, nnz, batch, itemsize, bt, row_groups, with_w))
    best = float(-(-batch // _NB)) * nnz * 8.0 + float(nnz) * batch * 32.0
    choice = ROWS
    if batch > _ROWS_BATCH_MAX and bt >= 2:
        staged = float(-(-batch // bt)) * nnz * 8.0 + float(row_groups) * batch * k * itemsize
        if staged < best:
            best, choice = staged, STAGED
    if with_w and batch > _ROWS_BATCH_MAX:
        merge = 2.0 * rows * k * itemsize + nnz * 12.0
        if merge < best:
            best, choice = merge, MERGE
    return choice


def _method(method: str, *, with_w: bool) -> int | None:
    """``method`` checked: None for "auto", else its code."""
    names = ("auto", "rows", "staged") + (("merge", "fused") if with_w else ())
    if method not in names:
        raise ValueError(f"method must be one of {names}, got {method!r}")
    return None if method == "auto" else _METHODS.get(method, -1)


@functools.cache
def _device_limits(device_id: int) -> tuple[int, int]:
    """(multiprocessors, shared memory a block may opt into) of a CUDA device."""
    import cupy
    attrs = cupy.cuda.Device(device_id).attributes
    return int(attrs["MultiProcessorCount"]), int(attrs["MaxSharedMemoryPerBlockOptin"])


def _current_device() -> int:
    import cupy
    return int(cupy.cuda.runtime.getDevice())


def gpu_plan(rows: int, k: int, nnz: int, batch: int, dtype: Any, *, with_w: bool = False,
             method: str = "auto", sms: int | None = None,
             smem_bytes: int | None = None) -> dict[str, Any]:
    """The way a GPU computes ``delta_matmul`` (``with_w=False``) or ``fused_linear``
    (``with_w=True``) for one shape: a dict with ``method`` ("rows", "staged", "merge" or
    "fused"), the staged kernel's batch tile ``bt``, ``row_groups``, and ``smem`` bytes.
    ``sms`` and ``smem_bytes`` default to the current CUDA device's; given, no GPU is needed
    (what the benchmark prints beside its measurements, and what the tests check).

    Examples
    --------
    >>> import numpy as np
    >>> from hyprvdb import ops
    >>> p = ops.gpu_plan(4096, 4096, 167772, 256, np.float16, sms=132, smem_bytes=232448)
    >>> p["method"], p["bt"], p["row_groups"]
    ('staged', 8, 9)
    >>> ops.gpu_plan(4096, 4096, 167772, 1, np.float16, sms=132, smem_bytes=232448)["method"]
    'rows'
    """
    code = _method(method, with_w=with_w)
    itemsize = np.dtype(dtype).itemsize
    _dtype_code(dtype)
    if sms is None or smem_bytes is None:
        dev_sms, dev_smem = _device_limits(_current_device())
        sms = dev_sms if sms is None else sms
        smem_bytes = dev_smem if smem_bytes is None else smem_bytes
    return dict(_plan(int(rows), int(k), int(nnz), int(batch), itemsize, bool(with_w), code,
                      int(sms), int(smem_bytes)))


@functools.lru_cache(maxsize=4096)
def _plan(rows: int, k: int, nnz: int, batch: int, itemsize: int, with_w: bool,
          code: int | None, sms: int, smem_bytes: int) -> tuple[tuple[str, Any], ...]:
    """gpu_plan's work, remembered: a launch asks for its shape's plan on every call."""
    budget = min(smem_bytes, _STAGED_SMEM)
    bt = staged_batch_tile(k, itemsize, budget, batch)
    groups = staged_row_groups(rows, batch, bt, _STAGED_WARPS, sms) if bt else 0
    if code is None:
        code = product_choice(rows, k, nnz, batch, itemsize, bt, groups, with_w)
    elif code == STAGED and bt == 0:
        raise ValueError(f"method='staged' needs one batch row of x ({k} x {itemsize} bytes) "
                         f"in {budget} bytes of shared memory")
    name = {ROWS: "rows", STAGED: "staged", MERGE: "merge", -1: "fused"}[code]
    return (("method", name), ("bt", bt), ("row_groups", groups),
            ("smem", k * bt * itemsize if name == "staged" else 0))


# -------------------------------------------------------------------- CUDA launches
_CTYPES = ("float", "__half", "__nv_bfloat16")  # the kernels' T for each _dtype_code


def _opt_in(fn: Any, smem: int) -> None:
    """Let kernel ``fn`` take ``smem`` bytes of dynamic shared memory: past 48 KiB a kernel
    must opt in (a driver call, made only for the staged kernels' wide batches)."""
    if smem > 48 * 1024:
        fn.max_dynamic_shared_size_bytes = smem


@functools.cache
def _cublas_takes(dtype: Any) -> bool:
    """Whether CuPy's matmul (cuBLAS) multiplies arrays of ``dtype`` here (bfloat16 needs a
    CuPy that knows it)."""
    import cupy
    try:
        a = cupy.ones((2, 2), dtype=dtype)
        cupy.matmul(a, a, out=cupy.empty((2, 2), dtype=dtype))
        return True
    except (TypeError, NotImplementedError, ValueError):
        return False


def _cuda_linear(x: Any, W: Any, bias: Any, d: DeviceDelta, out: Any, scale: float,
                 *, fused: bool, method: str = "auto") -> None:
    """The GPU's ``fused_linear`` (``fused=True``) or ``delta_matmul``, the way
    :func:`gpu_plan` picks or ``method`` names."""
    rows, k = d.shape
    if fused:
        if method == "fused" or not _cublas_takes(x.dtype):
            if method not in ("auto", "fused"):
                raise ValueError(f"method={method!r} needs CuPy's matmul for {x.dtype}, which "
                                 f"this CuPy does not have; method='fused' does without")
            _cuda_fused(x, W, bias, d, out, scale)
            return
        import cupy
        plan = gpu_plan(rows, k, d.nnz, x.shape[0], x.dtype, with_w=True, method=method)
        if plan["method"] == "merge":  # a scratch copy of W, the delta merged in, one GEMM
            merged = W.copy()
            _cuda_merge([merged], [d], scale)
            cupy.matmul(x, merged.T, out=out)
            if bias is not None:
                out += bias
            return
        # The dense part on cuBLAS (tensor cores for 16-bit types), then the delta
        # accumulated into its output on the same stream.
        cupy.matmul(x, W.T, out=out)
        if bias is not None:
            out += bias
    else:
        plan = gpu_plan(rows, k, d.nnz, x.shape[0], x.dtype, method=method)
    tname = _CTYPES[_dtype_code(x.dtype)]
    if plan["method"] == "staged":
        bt, smem = plan["bt"], plan["smem"]
        fn = _kernels.function("matmul.cu", f"delta_matmul_staged<{tname}>")
        _opt_in(fn, smem)
        step = 65535 * bt  # gridDim.y is at most 65535: larger batches go in slices
        for s in range(0, x.shape[0], step):
            xs, outs = x[s:s + step], out[s:s + step]
            fn((plan["row_groups"], -(-xs.shape[0] // bt)), (32 * _STAGED_WARPS,),
               (d.indptr, d.indices, d.data, xs, np.int64(k), outs, np.int64(rows),
                np.int32(rows), np.int32(k), np.int32(xs.shape[0]), np.int32(bt),
                np.float32(scale)), shared_mem=smem)
        return
    fn = _kernels.function("matmul.cu", f"delta_matmul<{tname}>")
    step = 65535 * _NB  # gridDim.y is at most 65535: larger batches go in slices
    for s in range(0, x.shape[0], step):
        xs, outs = x[s:s + step], out[s:s + step]
        fn((-(-rows // _WARPS), -(-xs.shape[0] // _NB)), (32 * _WARPS,),
           (d.indptr, d.indices, d.data, xs, np.int64(k), outs, np.int64(rows),
            np.int32(rows), np.int32(xs.shape[0]), np.float32(scale)))


def _cuda_fused(x: Any, W: Any, bias: Any, d: DeviceDelta, out: Any, scale: float) -> None:
    """The one-pass kernel: W's row and the delta's row together, a block per output row."""
    tname = _CTYPES[_dtype_code(x.dtype)]
    rows, k = d.shape
    fn = _kernels.function("matmul.cu", f"fused_linear<{tname}>")
    step = 65535 * _NB
    for s in range(0, x.shape[0], step):
        xs, outs = x[s:s + step], out[s:s + step]
        fn((rows, -(-xs.shape[0] // _NB)), (256,),
           (W, np.int64(k), bias if bias is not None else np.uint64(0), d.indptr, d.indices,
            d.data, xs, np.int64(k), outs, np.int64(rows), np.int32(rows), np.int32(k),
            np.int32(xs.shape[0]), np.float32(scale)))


def _cuda_segments(x: Any, indptr: Any, indices: Any, data: Any, rows: int, seg: np.ndarray,
                   out: Any, scale: float, method: str = "auto") -> None:
    import cupy

    tname = _CTYPES[_dtype_code(x.dtype)]
    nseg = int(indptr.shape[0]) // (rows + 1)
    k = x.shape[1]
    # the rule of a single delta, for the deltas' mean size over the whole batch
    plan = gpu_plan(rows, k, int(indices.shape[0]) // max(1, nseg), x.shape[0], x.dtype,
                    method=method)
    staged = plan["method"] == "staged"
    nb = plan["bt"] if staged else _NB
    order, tiles = segment_tiles(seg, nseg, nb)
    if len(tiles) == 0:
        return
    order_d, tiles_d = cupy.asarray(order), cupy.asarray(tiles)
    step = 65535  # gridDim.y is at most 65535: more tiles go in slices
    if staged:
        smem = plan["smem"]
        fn = _kernels.function("matmul.cu", f"delta_matmul_segments_staged<{tname}>")
        _opt_in(fn, smem)
        for t0 in range(0, len(tiles), step):
            n = min(step, len(tiles) - t0)
            fn((plan["row_groups"], n), (32 * _STAGED_WARPS,),
               (indptr, indices, data, x, np.int64(k), out, np.int64(rows), np.int32(rows),
                np.int32(k), np.int32(nb), order_d, tiles_d[t0:t0 + n], np.float32(scale)),
               shared_mem=smem)
        return
    fn = _kernels.function("matmul.cu", f"delta_matmul_segments<{tname}>")
    for t0 in range(0, len(tiles), step):
        n = min(step, len(tiles) - t0)
        fn((-(-rows // _WARPS), n), (32 * _WARPS,),
           (indptr, indices, data, x, np.int64(k), out, np.int64(rows), np.int32(rows),
            order_d, tiles_d[t0:t0 + n], np.float32(scale)))


def _cuda_merge(Ws: list[Any], ds: list[DeviceDelta], scale: float) -> None:
    import cupy

    dt = Ws[0].dtype
    if any(W.dtype != dt for W in Ws):
        raise ValueError("all Ws must share one dtype")
    tname = _CTYPES[_dtype_code(dt)]
    ptrs = cupy.asarray(np.array([W.data.ptr for W in Ws], dtype=np.uint64))
    ldw = cupy.asarray(np.array([W.shape[1] for W in Ws], dtype=np.int64))
    offsets = np.zeros(len(ds) + 1, np.int64)
    offsets[1:] = np.cumsum([d.nnz for d in ds])
    rows = cupy.concatenate([d.rows for d in ds])
    cols = cupy.concatenate([d.indices for d in ds])
    data = cupy.concatenate([d.data for d in ds])
    total = int(offsets[-1])
    if total == 0:
        return
    fn = _kernels.function("merge.cu", f"merge_layers<{tname}>")
    threads = 256
    fn(((total + threads - 1) // threads,), (threads,),
       (ptrs, ldw, cupy.asarray(offsets), np.int32(len(Ws)), rows, cols, data,
        np.float32(scale)))
