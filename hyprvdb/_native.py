"""The one loader of each compiled extension, so that ``import hyprvdb`` needs neither.

- ``hyprvdb._core``: the OpenVDB write path (:class:`hyprvdb.SparseAdapter`, the open step of
  :meth:`hyprvdb.TemporalAdapter.accumulate`). Built only where OpenVDB is found.
- ``hyprvdb._cpu``: the read path on the CPU (the kernels' logic, the history's value rule,
  the XLA FFI targets). No OpenVDB; where it is not built, numpy computes the same results.
- ``hyprvdb._cuda_ffi``: hyprvdb.jax's XLA FFI targets for CUDA (nvcc). Built where nvcc and
  jaxlib are found; JAX on a GPU uses the buffer_callback path without it.

and whether a GPU is usable through CuPy (:func:`cuda_available`).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

from ._errors import MissingExtensionError


@functools.cache
def core() -> ModuleType:
    """Import and return ``hyprvdb._core``; raise a clear error when it was not built."""
    try:
        from . import _core
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MissingExtensionError(
            "hyprvdb's OpenVDB core (hyprvdb._core) is not available: the write path "
            "(SparseAdapter, and the open step of TemporalAdapter.accumulate) needs it; history "
            "reads, snapshots, hyprvdb.ops, hyprvdb.jax and serving do not. Build it with "
            "`bash scripts/setup.sh` or `pip install .` on a machine with OpenVDB (Debian: "
            f"libopenvdb-dev). Import error: {exc}"
        ) from exc
    return _core


@functools.cache
def cpu() -> ModuleType | None:
    """``hyprvdb._cpu``, or None where it is not built (numpy then computes the same)."""
    # Idle OpenMP threads sleep instead of spinning: serving shares its cores with other work.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from . import _cpu
    except ImportError:
        return None
    return _cpu


@functools.cache
def cuda_ffi() -> ModuleType | None:
    """``hyprvdb._cuda_ffi`` (hyprvdb.jax's XLA FFI targets for CUDA, built where nvcc was
    found), or None."""
    try:
        from . import _cuda_ffi
    except ImportError:
        return None
    return _cuda_ffi


@functools.cache
def cuda_available() -> bool:
    """Whether CuPy imports and sees at least one CUDA device (asked once, lazily).

    Examples
    --------
    >>> from hyprvdb import ops
    >>> ops.cuda_available() in (True, False)  # no GPU library is imported before this call
    True
    """
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, or no device all mean "no"
        return False
