"""Change runs: the history's changes as sorted COO, ordered by (weight, step).

Time is the Z axis. Ordering the changes by linear index (row * cols + col) first and step
second puts every weight's changes in one contiguous run along Z. The weights at step t are
then one pass over the runs (each run's changes up to t, by the rule of
``kernels/history.cuh``), whatever t is: no slice-by-slice replay.

Every change is either an increment (the value grows by ``d``) or a reset (the value becomes
``d``; a reset to 0 switches the weight off). A weight is active at t when its value is
nonzero.

In memory (``Runs``): one gap per distinct weight (linear index ``row * cols + col`` as the
difference from the previous weight), one change count per weight, and per change its step
(``t``) and float32 value; resets are listed by change position. Integer arrays use the
narrowest unsigned dtype that holds them. Values are summed in float64 and rounded to float32
once, so a state equals a float64 replay of the stored deltas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import _native
from .._zaxis import values_at


def narrow(a: np.ndarray) -> np.ndarray:
    """``a`` (non-negative ints) in the narrowest unsigned dtype that holds it."""
    top = int(a.max()) if a.size else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return a.astype(dt)
    return a.astype(np.uint64)


@dataclass
class Changes:
    """Decoded changes sorted by (idx, t): parallel arrays, one entry per change."""

    idx: np.ndarray    # int64 linear index
    t: np.ndarray      # int64 step
    d: np.ndarray      # float64 value (increment or reset value)
    reset: np.ndarray  # bool

    @staticmethod
    def empty() -> Changes:
        return Changes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64),
                       np.zeros(0, bool))

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, sel: np.ndarray) -> Changes:
        return Changes(self.idx[sel], self.t[sel], self.d[sel], self.reset[sel])

    @staticmethod
    def concat(parts: list[Changes]) -> Changes:
        """Concatenate and restore (idx, t) order; parts must be given oldest first."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Changes.empty()
        if len(parts) == 1:
            p = parts[0]
            return Changes(p.idx, p.t.astype(np.int64), p.d.astype(np.float64), p.reset)
        c = Changes(np.concatenate([p.idx for p in parts]),
                    np.concatenate([p.t for p in parts]).astype(np.int64),
                    np.concatenate([p.d for p in parts]).astype(np.float64),
                    np.concatenate([p.reset for p in parts]))
        order = np.argsort(c.idx, kind="stable")  # stable: equal idx keep time order
        return c.take(order)

    def run_starts(self) -> np.ndarray:
        """Start offset of every run (distinct idx), plus len at the end."""
        if not len(self.idx):
            return np.zeros(1, np.int64)
        brk = np.flatnonzero(np.diff(self.idx)) + 1
        return np.concatenate([[0], brk, [len(self.idx)]]).astype(np.int64)


@dataclass
class Runs:
    """Compact storage of :class:`Changes` (see the module docstring)."""

    gaps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    t: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    d: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    resets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted
    # Built on the first lookup of chosen weights (see checkpoints), then kept: runs never change.
    _checkpoints: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        ck = sum(a.nbytes for a in self._checkpoints) if self._checkpoints else 0
        return ck + sum(a.nbytes for a in (self.gaps, self.counts, self.t, self.d, self.resets))

    def checkpoints(self, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every ``stride``-th run's linear index, number and first change: what a lookup of
        one weight searches before walking at most ``stride`` runs."""
        if self._checkpoints is None:
            run = np.arange(0, len(self.gaps), stride, dtype=np.int64)
            idx = np.cumsum(self.gaps, dtype=np.int64)[run]
            first = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])[run]
            self._checkpoints = (idx, run, first)
        return self._checkpoints

    def __len__(self) -> int:
        return len(self.d)

    @staticmethod
    def encode(c: Changes) -> Runs:
        starts = c.run_starts()
        ridx = c.idx[starts[:-1]]
        gaps = np.diff(ridx, prepend=0) if len(ridx) else ridx
        return Runs(narrow(gaps), narrow(np.diff(starts)), narrow(c.t),
                    c.d.astype(np.float32), np.flatnonzero(c.reset).astype(np.int64))

    def decode(self) -> Changes:
        ridx = np.cumsum(self.gaps, dtype=np.int64)
        idx = np.repeat(ridx, self.counts.astype(np.int64))
        reset = np.zeros(len(self.d), bool)
        reset[self.resets] = True
        return Changes(idx, self.t.astype(np.int64), self.d.astype(np.float64), reset)

    def distinct(self) -> np.ndarray:
        return np.cumsum(self.gaps, dtype=np.int64)


def merge_groups(c: Changes, new_t: np.ndarray, *, split: bool = False) -> Changes:
    """Restamp changes to ``new_t`` (non-decreasing within each run) and merge the changes of
    one weight that now share a step: a group with a reset becomes one reset (its last reset's
    value plus the increments after it), otherwise one increment (the sum).

    Values are stored as float32. With ``split`` a merged value keeps float64 accuracy as two
    float32 changes at the same step, ``hi = f32(v)`` then the increment ``lo = f32(v - hi)``
    (dropped when 0), so merging never moves a state by more than float64 rounding.
    """
    if not len(c):
        return c
    brk = np.ones(len(c), bool)
    brk[1:] = (np.diff(c.idx) != 0) | (np.diff(new_t) != 0)
    starts = np.flatnonzero(brk)
    if len(starts) == len(c):
        return Changes(c.idx, new_t.astype(np.int64), c.d, c.reset)
    bounds = np.append(starts, len(c))
    group_of = np.repeat(np.arange(len(starts)), np.diff(bounds))
    csum = np.cumsum(c.reset, dtype=np.int64)
    group_last = csum[bounds[1:] - 1]
    after = group_last[group_of] - csum
    value = np.add.reduceat(np.where(after == 0, c.d, 0.0), starts)
    any_reset = np.add.reduceat(c.reset.astype(np.int64), starts) > 0
    merged = Changes(c.idx[starts], new_t[starts].astype(np.int64), value, any_reset)
    if not split:
        return merged
    hi = value.astype(np.float32).astype(np.float64)
    lo = (value - hi).astype(np.float32).astype(np.float64)
    extra = np.flatnonzero(lo != 0)
    if not len(extra):
        return Changes(merged.idx, merged.t, hi, merged.reset)
    # Interleave: each hi is followed by its lo (an increment at the same step).
    n = len(starts)
    pos = np.arange(n) + np.searchsorted(extra, np.arange(n), side="left")
    out_n = n + len(extra)
    idx = np.empty(out_n, np.int64)
    t = np.empty(out_n, np.int64)
    d = np.empty(out_n, np.float64)
    reset = np.zeros(out_n, bool)
    idx[pos], t[pos], d[pos], reset[pos] = merged.idx, merged.t, hi, merged.reset
    lo_pos = pos[extra] + 1
    idx[lo_pos], t[lo_pos], d[lo_pos] = merged.idx[extra], merged.t[extra], lo[extra]
    return Changes(idx, t, d, reset)


@dataclass(frozen=True)
class Tail:
    """The write tail's changes merged and sorted by (index, step), in the dtypes the CPU
    extension reads (built once per change of the tail, then shared by every query)."""

    idx: np.ndarray    # int64
    t: np.ndarray      # int32
    d: np.ndarray      # float64
    reset: np.ndarray  # uint8

    @staticmethod
    def of(slices: list[Changes]) -> Tail:
        c = Changes.concat(slices) if slices else Changes.empty()
        return Tail(c.idx, c.t.astype(np.int32), c.d.astype(np.float64),
                    c.reset.astype(np.uint8))

    def changes(self) -> Changes:
        return Changes(self.idx, self.t.astype(np.int64), self.d, self.reset.astype(bool))

    def extended(self, s: Changes) -> Tail:
        """This tail with the slice ``s`` (sorted indices, a step after every change here)
        merged in: each of its changes goes after this tail's changes of the same weight."""
        at = np.searchsorted(self.idx, s.idx, side="right")
        return Tail(np.insert(self.idx, at, s.idx), np.insert(self.t, at, s.t.astype(np.int32)),
                    np.insert(self.d, at, s.d.astype(np.float64)),
                    np.insert(self.reset, at, s.reset.astype(np.uint8)))


def _history_args(base_idx: np.ndarray, base_val: np.ndarray, runs: Runs, tail: Tail) -> tuple:
    """The arguments the CPU extension reads a history from: the runs' arrays as they are kept
    (narrow unsigned widths, resets as positions), no copies."""
    return (base_idx, base_val, runs.gaps, runs.counts, runs.t, runs.d, runs.resets, tail.idx,
            tail.t, tail.d, tail.reset)


def state(base_idx: np.ndarray, base_val: np.ndarray, runs: Runs, tail: Tail,
          step: int) -> tuple[np.ndarray, np.ndarray]:
    """The weights at ``step``: ``(sorted linear index, float64 value)`` of every weight in
    the base or changed by then (values may be 0), in one merge of the base, the runs and the
    tail."""
    cpu = _native.cpu()
    if cpu is not None:
        return cpu.history_state(*_history_args(base_idx, base_val, runs, tail), step)
    return _state_np(base_idx, base_val, Changes.concat([runs.decode(), tail.changes()]), step)


def values(base_idx: np.ndarray, base_val: np.ndarray, runs: Runs, tail: Tail,
           step: int, query: np.ndarray) -> np.ndarray:
    """The float64 values at ``step`` of the weights ``query`` (sorted, distinct linear
    indices), 0 where neither in the base nor changed by then: a binary search per weight
    (``hyprvdb._cpu``), or the whole state picked from (numpy)."""
    cpu = _native.cpu()
    if cpu is not None:
        ck = runs.checkpoints(int(cpu.RUN_STRIDE))
        return cpu.history_values(*_history_args(base_idx, base_val, runs, tail), *ck, step,
                                  np.ascontiguousarray(query, np.int64))
    idx, val = state(base_idx, base_val, runs, tail, step)
    out = np.zeros(len(query), np.float64)
    if len(idx):
        pos = np.minimum(np.searchsorted(idx, query), len(idx) - 1)
        hit = idx[pos] == query
        out[hit] = val[pos[hit]]
    return out


def _state_np(base_idx: np.ndarray, base_val: np.ndarray, c: Changes, step: int
              ) -> tuple[np.ndarray, np.ndarray]:
    starts = c.run_starts()
    run_idx = c.idx[starts[:-1]]
    base_of_run = np.zeros(len(run_idx), np.float64)
    in_base = np.zeros(len(base_idx), bool)
    if len(base_idx) and len(run_idx):
        pos = np.minimum(np.searchsorted(base_idx, run_idx), len(base_idx) - 1)
        hit = base_idx[pos] == run_idx
        base_of_run[hit] = base_val[pos[hit]]
        in_base[pos[hit]] = True
    vals, touched = values_at(starts, c.t, c.d, c.reset, base_of_run, step)
    touched |= np.isin(run_idx, base_idx, assume_unique=True) if len(base_idx) else False
    idx = np.concatenate([run_idx[touched], base_idx[~in_base]])
    val = np.concatenate([vals[touched], base_val[~in_base]])
    order = np.argsort(idx, kind="stable")
    idx, val = idx[order], val[order]
    return idx, val
