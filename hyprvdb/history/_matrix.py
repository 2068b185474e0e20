"""One matrix's stored history: the base (Z[0]), the change runs and the write tail, and the
open step that ``accumulate`` adds into. It owns no steps and no file: its group does."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .. import _coo
from ..snapshot import Snapshot
from ._changes import Changes, Runs, Tail, merge_groups, state, values

_EMPTY_IDX = np.zeros(0, np.int64)


class CorrelatedPair(NamedTuple):
    """Two weights that changed together: ``score`` is the number of steps at which both
    changed over the number at which either did, within the window; ``together`` the number
    of shared steps.

    Examples
    --------
    >>> import hyprvdb
    >>> h = hyprvdb.TemporalAdapter(8, 8)
    >>> for t in (1, 2, 3):
    ...     _ = h.store_delta(t, [0, 1], [0, 1], [0.1, 0.2])
    >>> h.correlated_changes(window=3)[0]
    CorrelatedPair(a=(0, 0), b=(1, 1), score=1.0, together=3)
    """

    a: tuple[int, int]
    b: tuple[int, int]
    score: float
    together: int


class ChangeLog(NamedTuple):
    """A matrix's whole stored history as sorted COO: the base (linear indices ``row * cols +
    col``, float64 values) and every stored change in (index, step) order, each an increment
    or, where ``reset``, the value the weight becomes."""

    base_idx: np.ndarray  # int64, sorted
    base_val: np.ndarray  # float64
    idx: np.ndarray       # int64, sorted (a weight's changes contiguous)
    t: np.ndarray         # int64 step, ascending within a weight
    d: np.ndarray         # float64 (float32 values as stored)
    reset: np.ndarray     # bool


class Matrix:
    """Storage of one matrix's history (see the module docstring)."""

    def __init__(self, rows: int, cols: int, name: str, *, snapshots: bool = False) -> None:
        self.rows, self.cols, self.name = rows, cols, name
        self.base_idx = _EMPTY_IDX
        self.base_val = np.zeros(0, np.float64)
        self.runs = Runs()
        self._tail: list[Changes] = []
        self._tail_view: Tail | None = None  # the tail merged for queries, built on demand
        self.open: Any = None       # the open step (an AdapterSet member, OpenVDB), or None
        self.phase = 0              # compaction phase: members compact on different commits
        self.bound = 0.0            # an upper bound on |value| of every weight, at any step
        self.snapshots = snapshots  # keep a snapshot of the newest step
        self.snap: Snapshot | None = None
        self.snap_idx: np.ndarray | None = None
        self.snap_val: np.ndarray | None = None

    @property
    def tail(self) -> list[Changes]:
        """The committed slices not yet compacted into runs, oldest first (do not mutate)."""
        return self._tail

    def _set_tail(self, slices: list[Changes]) -> None:
        self._tail = slices
        self._tail_view = None

    def tail_view(self) -> Tail:
        if self._tail_view is None:
            self._tail_view = Tail.of(self._tail)
        return self._tail_view

    # ---------------------------------------------------------------- sizes
    def change_count(self) -> int:
        return len(self.runs) + sum(len(s) for s in self.tail)

    def history_bytes(self) -> int:
        view = self._tail_view
        cached = sum(a.nbytes for a in (view.idx, view.t, view.d, view.reset)) if view else 0
        return self.runs.nbytes + cached + sum(a.nbytes for s in self.tail
                                               for a in (s.idx, s.t, s.d, s.reset))

    def memory_usage(self) -> int:
        open_ = self.open.memory_usage() if self.open is not None else 0
        return self.base_idx.nbytes + self.base_val.nbytes + self.history_bytes() + open_

    def drop_open(self) -> None:
        """Forget the open step (its member of the group's set is emptied, not removed)."""
        if self.open is not None:
            self.open.clear()
            self.open = None

    def has_open_changes(self) -> bool:
        return self.open is not None and self.open.active_count() > 0

    # ---------------------------------------------------------------- reads
    def changes(self) -> Changes:
        return Changes.concat([self.runs.decode(), *self.tail])

    def change_log(self) -> ChangeLog:
        c = self.changes()
        return ChangeLog(self.base_idx, self.base_val, c.idx, c.t, c.d, c.reset)

    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted linear index, float64 value) of every weight in the base or changed by
        ``step`` (values may be 0)."""
        return state(self.base_idx, self.base_val, self.runs, self.tail_view(), step)

    def values(self, idx: np.ndarray, step: int) -> np.ndarray:
        """float64 values at ``step`` of the weights ``idx`` (sorted, distinct)."""
        return values(self.base_idx, self.base_val, self.runs, self.tail_view(), step, idx)

    def active(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted linear index, float32 value) of the weights active at ``step``."""
        idx, val = self.state(step)
        with np.errstate(over="ignore"):
            v32 = val.astype(np.float32)
        nz = v32 != 0
        return idx[nz], v32[nz]

    def snapshot(self, step: int) -> Snapshot:
        idx, v32 = self.active(step)
        rows, cols = _coo.split_linear(idx, self.cols)
        return Snapshot.from_coo(rows, cols, v32, (self.rows, self.cols), step=step,
                                 name=self.name)

    def changed(self, t0: int, t1: int) -> np.ndarray:
        """Sorted distinct linear indices of the weights with a stored change at a step in
        (t0, t1]: one vectorized pass over the runs' steps, plus the tail's slices."""
        parts = []
        runs = self.runs
        if len(runs):
            at = np.flatnonzero((runs.t > t0) & (runs.t <= t1))
            if len(at):
                ends = np.cumsum(runs.counts, dtype=np.int64)
                run = np.unique(np.searchsorted(ends, at, side="right"))
                parts.append(np.cumsum(runs.gaps, dtype=np.int64)[run])
        parts += [s.idx for s in self.tail if len(s) and t0 < int(s.t[0]) <= t1]
        if not parts:
            return _EMPTY_IDX
        return np.unique(np.concatenate(parts))

    def runs_of(self, key: int) -> tuple[list[int], list[float], list[bool]]:
        """Steps, values and reset flags of the stored changes of weight ``key``, in order."""
        ts: list[int] = []
        ds: list[float] = []
        rs: list[bool] = []
        if len(self.runs):
            ridx = self.runs.distinct()
            j = int(np.searchsorted(ridx, key))
            if j < len(ridx) and ridx[j] == key:
                counts = self.runs.counts
                start = int(np.sum(counts[:j], dtype=np.int64))
                stop = start + int(counts[j])
                resets = set(self.runs.resets[(self.runs.resets >= start)
                                              & (self.runs.resets < stop)].tolist())
                ts = self.runs.t[start:stop].astype(np.int64).tolist()
                ds = self.runs.d[start:stop].astype(np.float64).tolist()
                rs = [p in resets for p in range(start, stop)]
        for s in self.tail:
            j = np.searchsorted(s.idx, key)
            if j < len(s.idx) and s.idx[j] == key:
                ts.append(int(s.t[j]))
                ds.append(float(s.d[j]))
                rs.append(bool(s.reset[j]))
        return ts, ds, rs

    def base_value(self, key: int) -> float | None:
        b = np.searchsorted(self.base_idx, key)
        if b < len(self.base_idx) and self.base_idx[b] == key:
            return float(self.base_val[b])
        return None

    def slices(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every stored change grouped by step: ``{t: (idx, float32 d, reset)}``."""
        c = self.changes()
        order = np.lexsort((c.idx, c.t))
        c = c.take(order)
        steps, starts = np.unique(c.t, return_index=True)
        bounds = np.append(starts, len(c))
        return {int(t): (c.idx[bounds[k]:bounds[k + 1]],
                         c.d[bounds[k]:bounds[k + 1]].astype(np.float32),
                         c.reset[bounds[k]:bounds[k + 1]]) for k, t in enumerate(steps)}

    def correlated(self, steps: list[int], min_together: int, min_score: float,
                   max_pairs: int | None) -> list[CorrelatedPair]:
        """Pairs of weights that changed together at ``steps`` (see
        :meth:`hyprvdb.TemporalAdapter.correlated_changes`)."""
        c = self.changes()
        sel = (c.t >= steps[0]) & (c.t <= steps[-1])
        idx, ts = c.idx[sel], c.t[sel]
        # One entry per (weight, step) even if a step stored the weight twice.
        pairs = np.unique(np.stack([idx, ts]), axis=1) if len(idx) else np.zeros((2, 0), np.int64)
        idx, ts = pairs[0], pairs[1]
        uniq, inv, counts = np.unique(idx, return_inverse=True, return_counts=True)
        often = counts[inv] >= min_together
        idx, ts, wid = idx[often], ts[often], inv[often]
        order = np.lexsort((wid, ts))
        ts, wid = ts[order], wid[order]
        keys = []
        for s in np.unique(ts):
            w = wid[ts == s]
            if len(w) < 2:
                continue
            a, b = np.triu_indices(len(w), 1)
            keys.append(w[a].astype(np.int64) * len(uniq) + w[b])
        if not keys:
            return []
        pk, together = np.unique(np.concatenate(keys), return_counts=True)
        a, b = pk // len(uniq), pk % len(uniq)
        score = together / (counts[a] + counts[b] - together)
        ok = (together >= min_together) & (score >= min_score)
        a, b, score, together = a[ok], b[ok], score[ok], together[ok]
        order = np.lexsort((-together, -score))
        if max_pairs is not None:
            order = order[:max_pairs]
        cols = self.cols
        return [CorrelatedPair((int(uniq[a[i]] // cols), int(uniq[a[i]] % cols)),
                               (int(uniq[b[i]] // cols), int(uniq[b[i]] % cols)),
                               float(score[i]), int(together[i])) for i in order]

    # ---------------------------------------------------------------- writes
    def open_changes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The open step's changes (sorted linear indices, float64 values, no resets)."""
        if self.open is None:
            return _EMPTY_IDX, np.zeros(0, np.float64), np.zeros(0, bool)
        r, c, v = self.open.active_weights()
        idx = r * self.cols + c
        return idx, v.astype(np.float64), np.zeros(len(idx), bool)

    def append(self, t: int, idx: np.ndarray, d: np.ndarray, reset: np.ndarray) -> None:
        """Add the slice of step ``t`` to the write tail (stored float32, compact dtypes)."""
        s = Changes(idx, np.full(len(idx), t, np.int32), d.astype(np.float32), reset)
        view = self._tail_view
        self._set_tail(self._tail + [s])
        if view is not None:  # keep the merged view current in O(tail), without a sort
            self._tail_view = view.extended(s)

    def compact(self, stamp: Any = None) -> None:
        """Merge the tail into the runs; ``stamp`` (tiers) restamps the changes first."""
        c = self.changes()
        if stamp is not None:
            c = merge_groups(c, stamp(c.t), split=True)
        self.runs = Runs.encode(c)
        self._set_tail([])

    def fold(self, cut: int) -> None:
        """Fold every change up to ``cut`` into the base, exactly (float64)."""
        c = self.changes()
        bi, bv = self.state(cut)
        keep = bv != 0
        self.base_idx, self.base_val = bi[keep], bv[keep]
        self.runs = Runs.encode(c.take(c.t > cut))
        self._set_tail([])
        if self.snap is not None and self.snap.step is not None and self.snap.step <= cut:
            self.snap = None

    def rollback(self, step: int) -> None:
        c = self.changes()
        self.runs = Runs.encode(c.take(c.t <= step))
        self._set_tail([])
        self.drop_open()
        self.snap = self.snap_idx = self.snap_val = None

    def refresh_snapshot(self, t: int, prev_step: int, changed: np.ndarray | None) -> None:
        """Bring the snapshot to step ``t``; ``changed`` (sorted linear indices of the step
        just committed, or None after surgery) lets a values-only step skip the tree."""
        prev = self.snap
        if changed is not None and prev is not None and prev.step == prev_step:
            if not len(changed):
                self.snap = prev.with_values([], [], [], step=t)
                return
            si = self.snap_idx
            if si is not None and len(si):
                pos = np.minimum(np.searchsorted(si, changed), len(si) - 1)
                if bool(np.all(si[pos] == changed)):
                    # Values only: the new value of each changed weight, in float64 as stored.
                    new = self.values(changed, t)
                    if bool(np.all(new.astype(np.float32) != 0)):
                        self.snap_val = self.snap_val.copy()
                        self.snap_val[pos] = new
                        rows, cols = _coo.split_linear(changed, self.cols)
                        self.snap = prev.with_values(rows, cols, new.astype(np.float32), step=t)
                        return
        idx, val = self.state(t)
        nz = val.astype(np.float32) != 0
        self.snap_idx, self.snap_val = idx[nz], val[nz]
        rows, cols = _coo.split_linear(self.snap_idx, self.cols)
        self.snap = Snapshot.from_coo(rows, cols, self.snap_val.astype(np.float32),
                                      (self.rows, self.cols), step=t, name=self.name)
