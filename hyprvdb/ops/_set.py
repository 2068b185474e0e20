"""A set snapshot on a device, and gathers from it through NanoVDB's tree walk."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _native

from . import _kernels
from ._delta import _coords, resolve_device

__all__ = ["DeviceSetSnapshot", "gather_set"]


class DeviceSetSnapshot:
    """A :class:`hyprvdb.SetSnapshot`'s grid on ``device`` ("cpu": numpy, "cuda": CuPy): one
    buffer, the NanoVDB grid as is, so its device memory is :attr:`nbytes`, the snapshot's size.
    The matrix table stays on the host as well, for the argument checks.

    Examples
    --------
    >>> import hyprvdb
    >>> from hyprvdb import ops
    >>> s = hyprvdb.AdapterSet({"q": (8, 8), "up": (16, 8)})
    >>> s["q"].batch_update([1], [2], [0.5])
    >>> snap = hyprvdb.SetSnapshot.from_matrices(s)
    >>> ds = ops.DeviceSetSnapshot(snap, "cpu")
    >>> ds.nbytes == snap.nbytes
    True
    """

    def __init__(self, snapshot: Any, device: str = "auto") -> None:
        if not hasattr(snapshot, "cell_base") or not hasattr(snapshot, "buffer"):
            raise TypeError(f"snapshot must be a hyprvdb.SetSnapshot, got "
                            f"{type(snapshot).__name__}")
        self.device = resolve_device(device)
        self.snapshot = snapshot
        self._ids = {name: i for i, name in enumerate(snapshot)}
        xp = np if self.device == "cpu" else __import__("cupy")
        self.grid = xp.asarray(snapshot.buffer)

    @property
    def nbytes(self) -> int:
        return int(self.grid.nbytes)


def gather_set(snapshot: Any, name: str, rows: Any, cols: Any) -> Any:
    """float32 values of matrix ``name`` of a set snapshot at ``(rows, cols)`` (0 where
    inactive), by ``kernels/nanovdb_index.cuh``'s ``nvdb_set_gather``: on the GPU for a
    ``"cuda"`` :class:`DeviceSetSnapshot`, by the same code compiled into ``hyprvdb._cpu`` on
    the CPU, or by :meth:`hyprvdb.SetSnapshot.lookup` (numpy) where that is not built.

    Examples
    --------
    >>> import hyprvdb
    >>> from hyprvdb import ops
    >>> s = hyprvdb.AdapterSet({"q": (8, 8), "up": (16, 8)})
    >>> s["q"].batch_update([1], [2], [0.5])
    >>> snap = hyprvdb.SetSnapshot.from_matrices(s)
    >>> ops.gather_set(ops.DeviceSetSnapshot(snap, "cpu"), "q", [1, 1], [2, 3]).tolist()
    [0.5, 0.0]
    """
    d = snapshot if isinstance(snapshot, DeviceSetSnapshot) else DeviceSetSnapshot(snapshot, "cpu")
    s = d.snapshot
    m = d._ids.get(name) if isinstance(name, str) else None
    if m is None:
        raise KeyError(f"no matrix named {name!r} in this set snapshot")
    xp = np if d.device == "cpu" else __import__("cupy")
    r = _coords("rows", rows, xp)
    c = _coords("cols", cols, xp)
    if r.shape != c.shape:
        raise ValueError(f"rows and cols must have the same length, got {r.size} and {c.size}")
    for arg, a, hi in (("rows", r, s.shape(name)[0]), ("cols", c, s.shape(name)[1])):
        bad = (a < 0) | (a >= hi)
        if bool(bad.any()):
            i = int(xp.flatnonzero(bad)[0])
            raise IndexError(f"{arg}[{i}] = {int(a[i])} is out of range (valid: 0..{hi - 1})")
    out = xp.zeros(r.shape, xp.float32)
    if r.size == 0:
        return out
    mats = xp.full(r.shape, m, dtype=xp.int64)
    cpu = _native.cpu()
    if d.device == "cuda":
        fn = _kernels.function("gather.cu", "gather_set")
        threads = 256
        fn(((r.size + threads - 1) // threads,), (threads,),
           (d.grid, mats, r, c, np.int64(r.size), out))
    elif hasattr(cpu, "gather_nanovdb_set"):
        cpu.gather_nanovdb_set(d.grid, mats, r, c, out)
    else:
        out[...] = s.lookup(name, r, c)
    return out



