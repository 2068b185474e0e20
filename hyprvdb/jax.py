"""hyprvdb.jax: a snapshot's sparse delta inside jitted JAX code.

:class:`SparseDelta` is a pytree (CSR structure as integer arrays, values as the one
differentiable leaf). :func:`delta_matmul` computes ``scale * x @ dW.T`` for x of any leading
shape; it works under ``jit``, ``vmap`` and ``grad``, and its gradient with respect to the
values is restricted to the delta's sparsity pattern — exactly the sparse update that
:meth:`hyprvdb.TemporalAdapter.accumulate` takes (see :func:`to_update`).

Three implementations give the same results (float32 sums, up to summation order):

- ``"ffi"``: the read path's kernels as XLA FFI targets: on the CPU the C++ kernels (the logic
  of ``kernels/sparse_ops.cuh``), on a GPU the CUDA kernels of ``kernels/matmul.cu`` compiled by
  nvcc (``hyprvdb._cuda_ffi``; the forward products, backward by the ``"jax"`` formulas) —
  chosen by ``impl="auto"`` wherever the targets for JAX's backend were built;
- ``"callback"``: :mod:`hyprvdb.ops`' kernels on JAX's own buffers through
  ``jax.experimental.buffer_callback``, with no copies: on a GPU the CUDA kernel
  (``kernels/matmul.cu``, through CuPy) is launched on JAX's stream — chosen by
  ``impl="auto"`` on a GPU without the CUDA FFI targets, where CuPy is usable; on the CPU the
  C++ kernels (or numpy) run on the host buffers. Its gradients are computed by the
  ``"jax"`` formulas;
- ``"jax"``: gathers and segment sums in pure JAX, on any backend.

Importing this module imports JAX; ``import hyprvdb`` does not import it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _coo, _native

__all__ = ["SparseDelta", "MixedDeltas", "delta_matmul", "delta_add", "delta_add_segments",
           "linear", "to_dense", "to_update", "ffi_available", "implementation", "kernel_path"]


@jax.tree_util.register_pytree_node_class
class SparseDelta:
    """A sparse ``rows x cols`` delta in CSR form, ready for JAX.

    ``indptr`` (rows + 1,) int32, ``indices`` (nnz,) int32 columns, ``row_ids`` (nnz,) int32
    rows, ``values`` (nnz,) float32; entries sorted row-major. ``step`` is the history step the
    values belong to, if known (plain metadata: it does not survive tree transformations).

    The kernels read the structure as it is, so concrete arrays given to the constructor are
    checked (as :meth:`hyprvdb.ops.DeviceDelta.from_csr` checks its arrays); arrays traced
    inside a jitted function cannot be, and are the caller's to get right. :meth:`from_coo`
    builds a checked delta from coordinates.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> d.shape, d.nnz, d.indptr.tolist()
    ((2, 3), 2, [0, 1, 2])
    >>> hj.SparseDelta.from_coo([0], [2], [0.5], (2, 3), capacity=4).nnz  # padded
    4
    """

    def __init__(self, indptr: Any, indices: Any, row_ids: Any, values: Any,
                 shape: tuple[int, int], step: int | None = None,
                 n_real: int | None = None) -> None:
        self._set(indptr, indices, row_ids, values, shape, step, n_real)
        arrays = (indptr, indices, row_ids, values)
        if not any(isinstance(a, jax.core.Tracer) for a in arrays):
            from . import ops
            host = [np.ascontiguousarray(np.asarray(a)) for a in arrays]
            ops.DeviceDelta.from_csr(host[0], host[1], host[3], host[2], self.shape, "cpu")

    def _set(self, indptr: Any, indices: Any, row_ids: Any, values: Any,
             shape: tuple[int, int], step: int | None, n_real: int | None) -> None:
        self.indptr, self.indices, self.row_ids, self.values = indptr, indices, row_ids, values
        self.shape = (int(shape[0]), int(shape[1]))
        self.step = step
        self.n_real = n_real  # entries before the padding (None: all are real)

    @classmethod
    def _trusted(cls, *args: Any) -> SparseDelta:
        """A delta from arrays this module built and checked (or tracers of them)."""
        self = cls.__new__(cls)
        self._set(*args)
        return self

    def tree_flatten(self):  # noqa: ANN201
        # The step is not part of the tree structure: a new step must not retrace jitted code.
        return (self.indptr, self.indices, self.row_ids, self.values), (self.shape,)

    @classmethod
    def tree_unflatten(cls, aux, children):  # noqa: ANN001, ANN206
        return cls._trusted(*children, *aux, None, None)

    @property
    def nnz(self) -> int:
        return int(self.values.shape[-1])

    def with_values(self, values: Any) -> SparseDelta:
        """Same structure, other values (e.g. a newer step with unchanged topology)."""
        return SparseDelta._trusted(self.indptr, self.indices, self.row_ids, values, self.shape,
                                    self.step, self.n_real)

    @classmethod
    def from_coo(cls, rows: Any, cols: Any, values: Any, shape: tuple[int, int], *,
                 step: int | None = None, capacity: int | None = None) -> SparseDelta:
        """From coordinates (duplicates summed). ``capacity`` pads to a fixed number of
        entries (explicit zeros at the end of the last row), so that a jitted function sees the
        same shapes from step to step and is not traced again."""
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        vals = np.asarray(values, np.float32)
        if not (rows.shape == cols.shape == vals.shape) or rows.ndim != 1:
            raise ValueError(f"rows, cols and values must be 1-D of one length, got "
                             f"{rows.shape}, {cols.shape}, {vals.shape}")
        r, c = shape
        for name, a, hi in (("rows", rows, r), ("cols", cols, c)):
            bad = (a < 0) | (a >= hi)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise IndexError(f"{name}[{i}] = {a[i]} is out of range (valid: 0..{hi - 1})")
        uniq, inv = np.unique(rows * c + cols, return_inverse=True)
        summed = np.zeros(len(uniq), np.float64)
        np.add.at(summed, inv, vals)
        n = len(uniq)
        cap = n if capacity is None else int(capacity)
        if cap < n:
            raise ValueError(f"capacity = {cap} is below the {n} entries of the delta")
        ri = np.full(cap, r - 1, np.int64)
        ci = np.full(cap, c - 1, np.int64)
        vi = np.zeros(cap, np.float32)
        ri[:n], ci[:n] = _coo.split_linear(uniq, c)
        vi[:n] = summed
        if cap > n:  # padding sits at the end of the last row, after its real entries
            ci[n:] = np.maximum(ci[n - 1], c - 1) if n and ri[n - 1] == r - 1 else c - 1
        indptr, ci, vi = _coo.to_csr(ri, ci, vi, r, presorted=True)
        ri = ri.astype(np.int32)
        return cls._trusted(jnp.asarray(indptr), jnp.asarray(ci), jnp.asarray(ri),
                            jnp.asarray(vi), (r, c), step, n)

    @classmethod
    def from_adapter(cls, adapter: Any, **kwargs: Any) -> SparseDelta:
        """From anything with ``shape`` and ``active_weights()`` (SparseAdapter, Snapshot)."""
        r, c, v = adapter.active_weights()
        kwargs.setdefault("step", getattr(adapter, "step", None))
        return cls.from_coo(r, c, v, adapter.shape, **kwargs)


@functools.cache
def _ffi_registered() -> bool:
    try:
        targets = _native.cpu().ffi_targets()
    except AttributeError:  # not built (None), or built without jaxlib's FFI headers
        return False
    for name, capsule in targets.items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return True


@functools.cache
def _cuda_ffi_registered() -> bool:
    mod = _native.cuda_ffi()
    if mod is None:
        return False
    for name in ("hyprvdb_delta_accumulate", "hyprvdb_delta_accumulate_segments"):
        jax.ffi.register_ffi_target(name, getattr(mod, name), platform="CUDA")
    return True


def ffi_available() -> bool:
    """Whether FFI targets run JAX's backend here: the C++ targets with JAX on the CPU, the
    CUDA targets (``hyprvdb._cuda_ffi``, nvcc) with JAX on a GPU.

    Examples
    --------
    >>> import hyprvdb.jax as hj
    >>> hj.ffi_available() in (True, False)
    True
    """
    if _on_gpu():
        return _cuda_ffi_registered()
    return jax.default_backend() == "cpu" and _ffi_registered()


def _on_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda")


def implementation(impl: str = "auto") -> str:
    """The implementation ``impl`` stands for on this machine (``"auto"`` resolved): ``"ffi"``,
    ``"callback"`` or ``"jax"``; raises for a name that is not one, or one that cannot run here.

    Examples
    --------
    >>> import hyprvdb.jax as hj
    >>> hj.implementation("jax")
    'jax'
    >>> hj.implementation("auto") in ("ffi", "callback", "jax")
    True
    """
    if impl not in ("auto", "ffi", "callback", "jax"):
        raise ValueError(f"impl must be 'auto', 'ffi', 'callback' or 'jax', got {impl!r}")
    if impl == "auto":
        if ffi_available():
            return "ffi"
        if _on_gpu():
            return "callback" if _native.cuda_available() else "jax"
        return "jax"
    if impl == "ffi" and not ffi_available():
        raise RuntimeError("impl='ffi' needs hyprvdb's FFI targets for JAX's backend: on the "
                           "CPU hyprvdb._cpu's (built when jaxlib is installed before hyprvdb), "
                           "on a GPU hyprvdb._cuda_ffi (built where nvcc is found)")
    if impl == "callback" and _on_gpu():
        if not _native.cuda_available():
            raise RuntimeError("impl='callback' on a GPU needs CuPy and a CUDA device")
    return impl


def kernel_path(impl: str = "auto") -> str:
    """Which code computes the delta product for ``impl`` on this machine, in words.

    Examples
    --------
    >>> import hyprvdb.jax as hj
    >>> hj.kernel_path("jax")
    '... (pure JAX)'
    """
    impl = implementation(impl)
    if impl == "ffi":
        return "cuda (XLA FFI target, nvcc)" if _on_gpu() else "cpu (C++ XLA FFI target)"
    if impl == "callback":
        return ("cuda (CuPy kernel on JAX's stream)" if _on_gpu()
                else "cpu (hyprvdb.ops kernels through buffer_callback)")
    return f"{jax.default_backend()} (pure JAX)"


# ------------------------------------------------------------- the buffer_callback path
def _device_array(xp: Any, buf: Any) -> Any:
    """A no-copy numpy / CuPy view of a buffer_callback Buffer (CuPy from the raw pointer,
    so that CuPy does not synchronize JAX's stream)."""
    if xp is np:
        return np.asarray(buf)
    import cupy
    cai = buf.__cuda_array_interface__
    shape, dt = tuple(cai["shape"]), np.dtype(cai["typestr"])
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:  # XLA may hand an empty buffer a null pointer, which CuPy cannot wrap
        return cupy.ndarray(shape, dt)
    mem = cupy.cuda.UnownedMemory(int(cai["data"][0]), n * dt.itemsize, buf)
    return cupy.ndarray(shape, dt, cupy.cuda.MemoryPointer(mem, 0))


def _accumulate_into(xp: Any, device: str, out: Any, indptr: Any, indices: Any, row_ids: Any,
                     values: Any, x: Any, y_in: Any, scale: float,
                     shape: tuple[int, int]) -> None:
    from . import ops
    o, yi = _device_array(xp, out), _device_array(xp, y_in)
    ptr = (lambda a: a.ctypes.data) if xp is np else (lambda a: a.data.ptr)
    if o.size and ptr(o) != ptr(yi):  # XLA could not alias: start from y
        o[...] = yi
    # check=False: the arrays are a SparseDelta's, checked when it was made (see SparseDelta)
    d = ops.DeviceDelta.from_csr(_device_array(xp, indptr), _device_array(xp, indices),
                                 _device_array(xp, values), _device_array(xp, row_ids), shape,
                                 device, check=False)
    ops.delta_matmul(_device_array(xp, x).reshape(-1, shape[1]), d, scale,
                     out=o.reshape(-1, shape[0]))


def _callback_body(ctx: Any, out: Any, indptr: Any, indices: Any, row_ids: Any, values: Any,
                   x: Any, y_in: Any, *, scale: float, shape: tuple[int, int],
                   gpu: bool) -> None:
    if not gpu:
        _accumulate_into(np, "cpu", out, indptr, indices, row_ids, values, x, y_in, scale, shape)
        return
    import cupy
    with cupy.cuda.ExternalStream(int(ctx.stream)):  # JAX's stream: no host sync
        _accumulate_into(cupy, "cuda", out, indptr, indices, row_ids, values, x, y_in, scale,
                         shape)


def _callback_acc(y, indptr, indices, row_ids, values, x, scale, rows):  # noqa: ANN001, ANN202
    from jax.experimental.buffer_callback import buffer_callback
    body = functools.partial(_callback_body, scale=float(scale), shape=(rows, x.shape[-1]),
                             gpu=_on_gpu())
    call = buffer_callback(body, jax.ShapeDtypeStruct(y.shape, jnp.float32),
                           input_output_aliases={5: 0}, vmap_method="sequential")
    return call(indptr, indices, row_ids, values, x, y)


# -------------------------------------------------------------------- the product and its VJP
def _fwd_jax(indptr, indices, row_ids, values, x, scale, rows):  # noqa: ANN001, ANN202
    g = x[..., indices] * values  # (..., nnz)
    y = jax.ops.segment_sum(jnp.moveaxis(g, -1, 0), row_ids, num_segments=rows,
                            indices_are_sorted=True)
    return jnp.moveaxis(y, 0, -1) * scale


def _ffi(name: str, out_shape: tuple[int, ...], *args: Any, scale: float,
         aliases: dict[int, int] | None = None) -> Any:
    call = jax.ffi.ffi_call(name, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                            vmap_method="sequential", input_output_aliases=aliases)
    return call(*args, scale=np.float32(scale))


def _add_delta(y, indptr, indices, row_ids, values, x, scale, rows, impl):  # noqa: ANN001, ANN202
    """y + scale * x @ dW.T; the FFI and callback kernels add into y's buffer in place."""
    if impl == "ffi":
        return _ffi("hyprvdb_delta_accumulate", y.shape, indptr, indices, values, x, y,
                    scale=scale, aliases={4: 0})
    if impl == "callback":
        return _callback_acc(y, indptr, indices, row_ids, values, x, scale, rows)
    return y + _fwd_jax(indptr, indices, row_ids, values, x, scale, rows)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _delta_mm(indptr, indices, row_ids, values, x, scale, rows, impl):  # noqa: ANN001, ANN202
    if impl == "jax":
        return _fwd_jax(indptr, indices, row_ids, values, x, scale, rows)
    return _add_delta(jnp.zeros(x.shape[:-1] + (rows,), jnp.float32), indptr, indices, row_ids,
                      values, x, scale, rows, impl)


def _delta_mm_fwd(indptr, indices, row_ids, values, x, scale, rows, impl):  # noqa: ANN001, ANN202
    y = _delta_mm(indptr, indices, row_ids, values, x, scale, rows, impl)
    return y, (indptr, indices, row_ids, values, x)


def _delta_mm_bwd(scale, rows, impl, res, g):  # noqa: ANN001, ANN202
    indptr, indices, row_ids, values, x = res
    if impl == "ffi" and not _on_gpu():  # the backward targets are the CPU's
        dx = _ffi("hyprvdb_delta_matmul_t", x.shape, indptr, indices, values, g, scale=scale)
        dv = _ffi("hyprvdb_delta_values_grad", values.shape, indptr, indices, x, g, scale=scale)
    else:
        gr = g[..., row_ids] * values * scale  # (..., nnz)
        dx = jnp.moveaxis(jax.ops.segment_sum(jnp.moveaxis(gr, -1, 0), indices,
                                              num_segments=x.shape[-1]), 0, -1)
        prod = x[..., indices] * g[..., row_ids]
        dv = prod.reshape(-1, prod.shape[-1]).sum(0) * scale
    return (None, None, None, dv, dx)


_delta_mm.defvjp(_delta_mm_fwd, _delta_mm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _delta_acc(y, indptr, indices, row_ids, values, x, scale, rows, impl):  # noqa: ANN001, ANN202
    return _add_delta(y, indptr, indices, row_ids, values, x, scale, rows, impl)


def _delta_acc_fwd(y, indptr, indices, row_ids, values, x, scale, rows, impl):  # noqa: ANN001, ANN202
    out = _delta_acc(y, indptr, indices, row_ids, values, x, scale, rows, impl)
    return out, (indptr, indices, row_ids, values, x)


def _delta_acc_bwd(scale, rows, impl, res, g):  # noqa: ANN001, ANN202
    return (g, *_delta_mm_bwd(scale, rows, impl, res, g))


_delta_acc.defvjp(_delta_acc_fwd, _delta_acc_bwd)


def _check(x: Any, delta: Any) -> None:
    if not isinstance(delta, SparseDelta):
        raise TypeError(f"delta must be a hyprvdb.jax.SparseDelta, got {type(delta).__name__}")
    if x.shape[-1] != delta.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features, the delta expects {delta.shape[1]}")


def delta_matmul(x: Any, delta: SparseDelta, scale: float = 1.0, *, impl: str = "auto") -> Any:
    """``scale * x @ dW.T`` for x of shape (..., cols), float32; result (..., rows).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> hj.delta_matmul(jnp.ones((1, 3)), d).tolist()
    [[0.5, -1.0]]
    """
    _check(x, delta)
    x = jnp.asarray(x, jnp.float32)
    return _delta_mm(delta.indptr, delta.indices, delta.row_ids, delta.values, x, float(scale),
                     delta.shape[0], implementation(impl))


def delta_add(y: Any, x: Any, delta: SparseDelta, scale: Any = 1.0, *,
              impl: str = "auto") -> Any:
    """``y + scale * x @ dW.T`` (y: (..., rows) float32, x: (..., cols)). With the FFI
    targets the delta is accumulated into y's buffer in place. ``scale`` may be a traced
    scalar (it multiplies the values, not the output).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> hj.delta_add(jnp.ones((1, 2)), jnp.ones((1, 3)), d, 2.0).tolist()
    [[2.0, -1.0]]
    """
    _check(x, delta)
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if y.shape != x.shape[:-1] + (delta.shape[0],):
        raise ValueError(f"y has shape {y.shape}, expected {x.shape[:-1] + (delta.shape[0],)}")
    values = delta.values
    if isinstance(scale, (int, float)):
        static = float(scale)
    else:
        values, static = values * jnp.asarray(scale, jnp.float32), 1.0
    return _delta_acc(y, delta.indptr, delta.indices, delta.row_ids, values, x, static,
                      delta.shape[0], implementation(impl))


# -------------------------------------------------------------------- mixed batches
def _seg_mask(x, seg, counts):  # noqa: ANN001, ANN202
    """(..., nnz): whether each stacked entry belongs to the row's segment."""
    eseg = jnp.repeat(jnp.arange(len(counts), dtype=jnp.int32), np.asarray(counts),
                      total_repeat_length=int(sum(counts)))
    return eseg == seg[..., None]


def _seg_fwd_jax(indptr, indices, row_ids, values, x, seg, scale, rows, counts):  # noqa: ANN001, ANN202
    g = x[..., indices] * values * _seg_mask(x, seg, counts)
    y = jax.ops.segment_sum(jnp.moveaxis(g, -1, 0), row_ids, num_segments=rows)
    return jnp.moveaxis(y, 0, -1) * scale


def _seg_callback_body(ctx: Any, out: Any, indptr: Any, indices: Any, values: Any, x: Any,
                       seg: Any, y_in: Any, *, scale: float, rows: int, gpu: bool) -> None:
    from . import ops

    def run(xp: Any, device: str) -> None:
        o, yi = _device_array(xp, out), _device_array(xp, y_in)
        ptr = (lambda a: a.ctypes.data) if xp is np else (lambda a: a.data.ptr)
        if o.size and ptr(o) != ptr(yi):
            o[...] = yi
        s = _device_array(xp, seg).reshape(-1)
        ops.delta_matmul_segments_csr(
            device, _device_array(xp, x).reshape(-1, _device_array(xp, x).shape[-1]),
            _device_array(xp, indptr), _device_array(xp, indices), _device_array(xp, values),
            rows, np.asarray(s if xp is np else s.get(), np.int32), o.reshape(-1, rows), scale)

    if not gpu:
        run(np, "cpu")
        return
    import cupy
    with cupy.cuda.ExternalStream(int(ctx.stream)):
        run(cupy, "cuda")


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def _seg_acc(y, indptr, indices, row_ids, values, x, seg, scale, rows, counts, impl):  # noqa: ANN001, ANN202
    if impl == "ffi":
        return _ffi("hyprvdb_delta_accumulate_segments", y.shape, indptr, indices, values, x,
                    seg, y, scale=scale, aliases={5: 0})
    if impl == "callback":
        from jax.experimental.buffer_callback import buffer_callback
        body = functools.partial(_seg_callback_body, scale=float(scale), rows=rows,
                                 gpu=_on_gpu())
        call = buffer_callback(body, jax.ShapeDtypeStruct(y.shape, jnp.float32),
                               input_output_aliases={5: 0}, vmap_method="sequential")
        return call(indptr, indices, values, x, seg, y)
    return y + _seg_fwd_jax(indptr, indices, row_ids, values, x, seg, scale, rows, counts)


def _seg_acc_fwd(y, indptr, indices, row_ids, values, x, seg, scale, rows, counts, impl):  # noqa: ANN001, ANN202
    out = _seg_acc(y, indptr, indices, row_ids, values, x, seg, scale, rows, counts, impl)
    return out, (indptr, indices, row_ids, values, x, seg)


def _seg_acc_bwd(scale, rows, counts, impl, res, g):  # noqa: ANN001, ANN202
    indptr, indices, row_ids, values, x, seg = res
    mask = _seg_mask(x, seg, counts)
    gr = g[..., row_ids] * mask  # (..., nnz): the output gradient each entry sees
    dx = jnp.moveaxis(jax.ops.segment_sum(jnp.moveaxis(gr * values * scale, -1, 0), indices,
                                          num_segments=x.shape[-1]), 0, -1)
    prod = x[..., indices] * gr
    dv = prod.reshape(-1, prod.shape[-1]).sum(0) * scale
    return (g, None, None, None, dv, dx, None)


_seg_acc.defvjp(_seg_acc_fwd, _seg_acc_bwd)


def delta_add_segments(y: Any, x: Any, deltas: list[SparseDelta], segment_ids: Any,
                       scale: Any = 1.0, *, impl: str = "auto") -> Any:
    """A batch that mixes deltas: ``y[i] + scale * x[i] @ dW_s.T`` with ``s =
    segment_ids[i]`` for every leading index i (-1: no delta), in one call — many adapters,
    or many past steps of one adapter, in one batch.

    ``deltas``: SparseDeltas of one shape; ``segment_ids``: int32 of shape ``x.shape[:-1]``
    (a batch of sequences broadcasts one id per sequence to its tokens). With the FFI targets
    the deltas are accumulated into y's buffer in place, each row through its own delta only;
    the pure-JAX path masks every delta's entries per row. Gradients (with respect to y, x and
    every delta's values) use the pure-JAX formulas.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> other = hj.SparseDelta.from_coo([1], [1], [3.0], (2, 3))
    >>> hj.delta_add_segments(jnp.zeros((2, 2)), jnp.ones((2, 3)), [d, other],
    ...                       jnp.array([0, -1])).tolist()
    [[0.5, -1.0], [0.0, 0.0]]
    """
    if not isinstance(deltas, (list, tuple)) or not deltas:
        raise ValueError(f"deltas must be a non-empty list of SparseDeltas, got "
                         f"{type(deltas).__name__}")
    for i, d in enumerate(deltas):
        _check(x, d)
        if d.shape != deltas[0].shape:
            raise ValueError(f"deltas[{i}] is {d.shape}, deltas[0] is {deltas[0].shape}: a "
                             f"mixed batch needs one shape")
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    rows = deltas[0].shape[0]
    if y.shape != x.shape[:-1] + (rows,):
        raise ValueError(f"y has shape {y.shape}, expected {x.shape[:-1] + (rows,)}")
    seg = jnp.asarray(segment_ids)
    if seg.shape != x.shape[:-1] or not jnp.issubdtype(seg.dtype, jnp.integer):
        raise ValueError(f"segment_ids must be integers of shape {x.shape[:-1]} (x's leading "
                         f"dimensions), got {seg.dtype} {seg.shape}")
    if not isinstance(seg, jax.core.Tracer):
        s = np.asarray(seg)
        bad = (s < -1) | (s >= len(deltas))
        if bad.any():
            i = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"segment_ids[{', '.join(map(str, i))}] = {int(s[i])} is not a "
                             f"delta's number (-1 .. {len(deltas) - 1})")
    counts = tuple(d.nnz for d in deltas)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    indptr = jnp.concatenate([d.indptr + o for d, o in zip(deltas, starts)])
    values = jnp.concatenate([d.values for d in deltas])
    if isinstance(scale, (int, float)):
        static = float(scale)
    else:  # a traced scale multiplies the values, as in delta_add
        values, static = values * jnp.asarray(scale, jnp.float32), 1.0
    return _seg_acc(y, indptr, jnp.concatenate([d.indices for d in deltas]),
                    jnp.concatenate([d.row_ids for d in deltas]), values, x,
                    seg.astype(jnp.int32), static, rows, counts, implementation(impl))


@jax.tree_util.register_pytree_node_class
class MixedDeltas:
    """Deltas of one shape for a batch that mixes them: sequence ``i`` of the batch (the first
    axis of x) takes ``deltas[segment_ids[i]]`` (-1: none) on every one of its tokens. Pass it
    to :func:`linear` where a SparseDelta goes (a mixed batch of adapters, or of past steps).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> other = hj.SparseDelta.from_coo([1], [1], [3.0], (2, 3))
    >>> x = jnp.ones((2, 4, 3))  # two sequences of four tokens
    >>> y = hj.linear(x, jnp.zeros((2, 3)), hj.MixedDeltas([d, other], jnp.array([1, 0])))
    >>> y[:, 0].tolist()
    [[0.0, 3.0], [0.5, -1.0]]
    """

    def __init__(self, deltas: list[SparseDelta], segment_ids: Any) -> None:
        if not isinstance(deltas, (list, tuple)) or not deltas or \
                not all(isinstance(d, SparseDelta) for d in deltas):
            raise TypeError("deltas must be a non-empty list of SparseDeltas")
        self.deltas, self.segment_ids = list(deltas), segment_ids

    @property
    def shape(self) -> tuple[int, int]:
        return self.deltas[0].shape

    def tree_flatten(self):  # noqa: ANN201
        return (self.deltas, self.segment_ids), None

    @classmethod
    def tree_unflatten(cls, aux, children):  # noqa: ANN001, ANN206
        self = cls.__new__(cls)
        self.deltas, self.segment_ids = list(children[0]), children[1]
        return self


def linear(x: Any, W: Any, delta: SparseDelta | MixedDeltas | None, scale: Any = 1.0,
           bias: Any = None,
           *, impl: str = "auto", precision: Any = None) -> Any:
    """``x @ W.T + bias + scale * x @ dW.T`` (W: (rows, cols), as torch.nn.Linear stores it).
    The delta is added in place into the dense product (see :func:`delta_add`); a
    :class:`MixedDeltas` adds each sequence's own delta (:func:`delta_add_segments`).

    ``precision`` is the dense product's (``jax.lax.Precision`` or ``"highest"``); JAX's
    default on a GPU is TF32-class (relative error ~3e-4 against float64), ``"highest"`` is
    full float32. The delta is always summed in float32.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> hj.linear(jnp.ones((1, 3)), jnp.ones((2, 3)), d).tolist()
    [[3.5, 2.0]]
    """
    y = jnp.matmul(x, W.T, precision=precision)
    if bias is not None:
        y = y + bias
    if isinstance(delta, MixedDeltas):
        seg = jnp.asarray(delta.segment_ids)
        seg = jnp.broadcast_to(seg.reshape(seg.shape + (1,) * (x.ndim - 1 - seg.ndim)),
                               x.shape[:-1])
        y = delta_add_segments(y, x, delta.deltas, seg, scale, impl=impl)
    elif delta is not None:
        y = delta_add(y, x, delta, scale, impl=impl)
    return y


def to_dense(delta: SparseDelta) -> Any:
    """The dense ``rows x cols`` delta.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> hj.to_dense(d).tolist()
    [[0.0, 0.0, 0.5], [-1.0, 0.0, 0.0]]
    """
    return jnp.zeros(delta.shape, jnp.float32).at[delta.row_ids, delta.indices].add(delta.values)


def to_update(delta: SparseDelta, grad_values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, grads)`` numpy arrays from a gradient with respect to ``delta.values``,
    for :meth:`hyprvdb.TemporalAdapter.accumulate` (padding entries and zeros dropped; the
    delta must be the one from_coo built, which knows where its padding starts).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import hyprvdb.jax as hj
    >>> d = hj.SparseDelta.from_coo([0, 1], [2, 0], [0.5, -1.0], (2, 3))
    >>> import jax
    >>> grads = jax.grad(lambda v: hj.delta_matmul(jnp.ones((1, 3)), d.with_values(v)).sum())(
    ...     d.values)
    >>> [a.tolist() for a in hj.to_update(d, grads)]
    [[0, 1], [2, 0], [1.0, 1.0]]
    """
    n = delta.nnz if delta.n_real is None else delta.n_real
    g = np.asarray(grad_values, np.float32)[:n]
    r = np.asarray(delta.row_ids, np.int64)[:n]
    c = np.asarray(delta.indices, np.int64)[:n]
    nz = g != 0
    return r[nz], c[nz], g[nz]
