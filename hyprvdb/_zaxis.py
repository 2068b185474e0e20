"""The rule for a weight's value at step t, in numpy: the twin of ``kernels/history.cuh``
(which the GPU's window kernel and the CPU extension compile), used where ``hyprvdb._cpu`` is
not built and by the tests that hold the two equal.

A weight's changes are kept in step order; a reset sets the value, an increment adds to it;
sums are float64, added in the same order as the C++ loop (so the results are bit for bit the
same), and rounded once by the caller.
"""

from __future__ import annotations

import numpy as np


def values_at(starts: np.ndarray, t: np.ndarray, d: np.ndarray, reset: np.ndarray,
              base: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run (the changes ``starts[r] .. starts[r+1]`` of one weight, in step order, from
    ``base[r]``): ``(value at step, whether any change is at a step <= step)``."""
    n = len(starts) - 1
    if n <= 0:
        return np.zeros(0, np.float64), np.zeros(0, bool)
    run_of = np.repeat(np.arange(n), np.diff(starts))
    upto = t <= step
    resets = upto & (reset != 0)
    csum = np.cumsum(resets, dtype=np.int64)
    last = csum[starts[1:] - 1] if len(t) else np.zeros(n, np.int64)
    # What counts: changes at steps <= step from the run's last such reset on (csum is global,
    # so it equals the run's final count only after the run's last reset).
    use = np.flatnonzero(upto & ((last[run_of] - csum) == 0))
    had_reset = (last - np.concatenate([[0], last[:-1]])) > 0
    from_base = np.flatnonzero(~had_reset)
    # bincount adds each bin's weights in array order: the base first, then the changes in
    # step order, as the C++ loop does.
    vals = np.bincount(np.concatenate([from_base, run_of[use]]),
                       weights=np.concatenate([base[from_base].astype(np.float64),
                                               d[use].astype(np.float64)]), minlength=n)
    touched = np.zeros(n, bool)
    touched[run_of[upto]] = True
    return vals, touched
