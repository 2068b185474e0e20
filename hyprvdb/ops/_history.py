"""DeviceHistory: a matrix's stored history on a device, for rebuilding weights over time
windows (``kernels/window.cu`` on a GPU; the same rule compiled into ``hyprvdb._cpu``, or its
numpy twin, on the CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _native
from .._zaxis import values_at
from . import _kernels
from ._delta import resolve_device

__all__ = ["DeviceHistory", "window_weights"]


class DeviceHistory:
    """A :class:`hyprvdb.TemporalAdapter`'s change runs on a device (from its
    :meth:`~hyprvdb.TemporalAdapter.change_log`), for rebuilding weights over time windows.

    Examples
    --------
    >>> import hyprvdb
    >>> from hyprvdb import ops
    >>> h = hyprvdb.TemporalAdapter(2, 3)
    >>> _ = h.store_delta(1, [0], [1], [0.5])
    >>> _ = h.store_delta(2, [0, 1], [1, 2], [0.25, 1.0])
    >>> dh = ops.DeviceHistory(h, "cpu")
    >>> dh.window(1, 2).tolist()  # the changes in (1, 2]
    [[0.0, 0.25, 0.0], [0.0, 0.0, 1.0]]
    >>> dh.window(0, 2, mode="state").tolist()
    [[0.0, 0.75, 0.0], [0.0, 0.0, 1.0]]
    """

    def __init__(self, history: Any, device: str = "auto") -> None:
        if not hasattr(history, "change_log"):
            raise TypeError(f"history must be a hyprvdb.TemporalAdapter, got "
                            f"{type(history).__name__}")
        self.device = resolve_device(device)
        self.shape = history.shape
        self.base_step, self.latest = history.base_step, history.latest
        log = history.change_log()
        starts = np.flatnonzero(np.diff(log.idx, prepend=-1)) if len(log.idx) \
            else np.zeros(0, np.int64)
        starts = np.append(starts, len(log.idx)).astype(np.int64)
        run_idx = log.idx[starts[:-1]]
        base_of_run = np.zeros(len(run_idx), np.float64)
        if len(log.base_idx) and len(run_idx):
            pos = np.minimum(np.searchsorted(log.base_idx, run_idx), len(log.base_idx) - 1)
            hit = log.base_idx[pos] == run_idx
            base_of_run[hit] = log.base_val[pos[hit]]
        xp = np if self.device == "cpu" else __import__("cupy")
        self._arrays = {
            "run_start": xp.asarray(starts),
            "run_idx": xp.asarray(run_idx.astype(np.int64)),
            "t": xp.asarray(log.t.astype(np.int32)),
            "d": xp.asarray(log.d.astype(np.float32)),
            "reset": xp.asarray(log.reset.astype(np.uint8)),
            "base_of_run": xp.asarray(base_of_run),
        }
        self._base_idx = xp.asarray(log.base_idx)
        self._base_val = xp.asarray(log.base_val.astype(np.float32))

    @property
    def nbytes(self) -> int:
        """Bytes the history holds on its device (what a window reads)."""
        return sum(int(a.nbytes) for a in self._arrays.values()) + \
            int(self._base_idx.nbytes) + int(self._base_val.nbytes)

    def window(self, t0: int, t1: int, *, mode: str = "delta") -> Any:
        """Dense float32 matrix: the sum of the slices in (t0, t1] (``mode="delta"``) or the
        weights at t1 (``mode="state"``). Steps are used as stored (no tier resolution)."""
        if mode not in ("delta", "state"):
            raise ValueError(f"mode must be 'delta' or 'state', got {mode!r}")
        for name, t in (("t0", t0), ("t1", t1)):
            if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(t).__name__} {t!r}")
            if not self.base_step <= t <= self.latest:
                raise ValueError(f"{name} = {t} is outside the stored steps "
                                 f"{self.base_step}..{self.latest}")
        if t0 > t1:
            raise ValueError(f"t0 = {t0} must not be after t1 = {t1}")
        xp = np if self.device == "cpu" else __import__("cupy")
        out = xp.zeros(self.shape[0] * self.shape[1], xp.float32)
        if mode == "state":
            out[self._base_idx] = self._base_val
        a = self._arrays
        n_runs = int(a["run_idx"].shape[0])
        cpu = _native.cpu()
        if n_runs:
            if self.device == "cuda":
                fn = _kernels.function("window.cu", "window_rebuild")
                threads = 256
                fn(((n_runs + threads - 1) // threads,), (threads,),
                   (a["run_start"], a["run_idx"], a["t"], a["d"], a["reset"],
                    a["base_of_run"], np.int32(n_runs), np.int32(t0), np.int32(t1),
                    np.int32(0 if mode == "delta" else 1), out))
            elif cpu is not None:
                cpu.window_rebuild(a["run_start"], a["run_idx"], a["t"], a["d"], a["reset"],
                                   a["base_of_run"], int(t0), int(t1), 0 if mode == "delta" else 1,
                                   out)
            else:
                v1, _ = values_at(a["run_start"], a["t"], a["d"], a["reset"], a["base_of_run"], t1)
                if mode == "delta":
                    v0, _ = values_at(a["run_start"], a["t"], a["d"], a["reset"],
                                      a["base_of_run"], t0)
                    v1 = v1 - v0
                out[a["run_idx"]] = v1.astype(np.float32)
        return out.reshape(self.shape)


def window_weights(history: Any, t0: int, t1: int, *, mode: str = "delta",
                   device: str = "auto") -> Any:
    """One-shot :meth:`DeviceHistory.window`.

    Examples
    --------
    >>> import hyprvdb
    >>> from hyprvdb import ops
    >>> h = hyprvdb.TemporalAdapter(2, 3)
    >>> _ = h.store_delta(1, [0], [1], [0.5])
    >>> _ = h.store_delta(2, [0, 1], [1, 2], [0.25, 1.0])
    >>> ops.window_weights(h, 0, 1, mode="state", device="cpu").tolist()
    [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """
    return DeviceHistory(history, device).window(t0, t1, mode=mode)
