"""DeltaDetector: successive weight states turned into the sparse deltas worth storing."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validate as V
from ..adapter import SparseAdapter

__all__ = ["DeltaDetector"]


class DeltaDetector:
    """Turns successive weight states into the sparse deltas worth storing.

    Given each new true state, emits the changes of magnitude above ``threshold`` against
    what the history already holds, plus every activation and deactivation. Because the
    comparison is against the stored reconstruction, sub-threshold remainders carry forward:
    after any number of steps the stored history reproduces the true weights within the
    threshold.

    Parameters
    ----------
    rows, cols : int
        Shape of the matrix.
    threshold : float
        Changes with ``|true - stored| <= threshold`` are held back (and carried forward).

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> det = hyprvdb.DeltaDetector(2, 2, threshold=0.1)
    >>> h = hyprvdb.TemporalAdapter(2, 2)
    >>> r, c, d, reset = det.update(np.array([[1.0, 0.0], [0.05, 0.0]]))
    >>> h.store_delta(1, r, c, d, reset=reset)
    1
    >>> r.tolist(), c.tolist()
    ([0, 1], [0, 0])
    """

    def __init__(self, rows: int, cols: int, threshold: float) -> None:
        self._rows, self._cols = V.matrix_dims(rows, cols)
        self.threshold = V.real_scalar("threshold", threshold)
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        self._stored = np.zeros(self._rows * self._cols, np.float64)

    @property
    def stored(self) -> np.ndarray:
        """The reconstruction the emitted deltas produce, as a float32 matrix."""
        return self._stored.astype(np.float32).reshape(self._rows, self._cols)

    def update(self, state: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Compare a new true state (dense matrix or SparseAdapter) with the stored one.

        Returns ``(rows, cols, deltas, reset)`` for :meth:`TemporalAdapter.store_delta`:
        increments above the threshold, and resets for weights switched on from 0 (to their
        value) or off (to 0).
        """
        if isinstance(state, SparseAdapter):
            if state.shape != (self._rows, self._cols):
                raise ValueError(f"state has shape {state.shape}, expected "
                                 f"{(self._rows, self._cols)}")
            true = state.to_dense().ravel()
        else:
            a = V.as_matrix("state", state)
            if a.shape != (self._rows, self._cols):
                raise ValueError(f"state has shape {a.shape}, expected "
                                 f"{(self._rows, self._cols)}")
            true = np.ascontiguousarray(a, dtype=np.float32).ravel()
            V.check_finite("state", true)
        stored32 = self._stored.astype(np.float32)
        on, was_on = true != 0, stored32 != 0
        switch = on != was_on
        diff = true.astype(np.float64) - stored32.astype(np.float64)
        emit = switch | (np.abs(diff) > self.threshold)
        idx = np.flatnonzero(emit)
        reset = switch[idx]
        d = np.where(reset, true[idx], diff[idx]).astype(np.float32)
        # Mirror exactly what the history will hold: float64 sums of the float32 deltas.
        self._stored[idx] = np.where(reset, d.astype(np.float64),
                                     self._stored[idx] + d.astype(np.float64))
        return idx // self._cols, idx % self._cols, d, reset

