"""TemporalAdapter: the full history of a sparse adapter, with time as the Z axis.

Z[0] holds the base weights; every later Z slice holds only the weights that changed at that
step; the weights at step t are the sum of the slices up to t.

Layout (see ``_zruns``): the open step is an OpenVDB tree (a :class:`SparseAdapter` that
``accumulate`` adds into); committed slices join a short time-major tail, which is compacted
every ``compact_every`` commits into Z-runs, where each weight's changes lie contiguous along
Z. A query sums each run up to t in one vectorized pass and replays at most the tail's few
slices, so its cost does not grow with t.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import _validate as V
from ._history_file import HistoryFile
from ._native import core as _core_module
from ._zruns import Changes, Runs, merge_groups
from .adapter import SparseAdapter

__all__ = ["TemporalAdapter", "TemporalGroup", "DeltaDetector", "CorrelatedPair"]

_MAX_STEP = 2**31 - 1  # steps travel as int32 to the kernels


class CorrelatedPair(NamedTuple):
    """Two weights that changed together: ``score`` is |steps both changed| / |steps either
    changed| within the window, ``together`` the number of shared steps."""

    a: tuple[int, int]
    b: tuple[int, int]
    score: float
    together: int


class TemporalAdapter:
    """The history of a ``rows x cols`` sparse adapter, one Z slice per step.

    Parameters
    ----------
    rows, cols : int
        Shape of the matrix.
    max_history : int, optional
        Circular buffer in Z: keep at most this many slices; when a commit would exceed it,
        the oldest slices fold into the base (exactly, in float64).
    tiers : sequence of (age, resolution), optional
        Hierarchical temporal resolution, finest first, e.g.
        ``[(10, 1), (100, 10), (None, 100)]``: every step for the last 10, one slice per 10
        steps up to an age of 100, one per 100 beyond. A span of ``r`` steps (steps
        ``k*r - r + 1 .. k*r``) joins a tier once its last step is at least the previous
        tier's age old; each resolution must be a multiple of the previous one. Merged slices
        are stamped with the last step of their span; a query inside a span answers for the
        step before it and says so. Merged values keep float64 accuracy.
    compact_every : int, default 16
        Commits kept time-major before they are compacted into Z-runs; a query replays at
        most this many slices.
    snapshots : bool, default False
        Keep a NanoVDB :class:`Snapshot` of the newest step (``last_snapshot``), refreshed at
        every commit: a step that only changes values of active weights refreshes the value
        array of the previous snapshot; one that changes the topology rebuilds it. Costs a
        float64 copy of the current weights.
    name : str
        Name carried into files and snapshots.

    Notes
    -----
    A weight is active at a step when its value there is nonzero. Steps are integers that
    increase with every commit (gaps allowed); the base is step 0 until history is folded
    into it. Deltas are float32; sums are computed in float64 and rounded once, so every
    state equals a float64 replay of the stored deltas rounded to float32.

    Examples
    --------
    >>> import hyprvdb
    >>> h = hyprvdb.TemporalAdapter(4, 4)
    >>> h.store_base(rows=[0, 1], cols=[0, 1], values=[1.0, 2.0])
    >>> h.store_delta(1, [0, 2], [0, 2], [0.5, 3.0])
    1
    >>> h.accumulate([2], [2], [1.0]); h.accumulate([2], [2], [1.0])
    >>> h.commit()
    2
    >>> h.weights_at_time(1).get_weights([0, 1, 2], [0, 1, 2])
    array([1.5, 2. , 3. ], dtype=float32)
    >>> h.weight_history(2, 2)
    [(1, 3.0), (2, 5.0)]
    """

    def __init__(self, rows: int, cols: int, *, max_history: int | None = None,
                 tiers: Sequence[tuple[int | None, int]] | None = None,
                 compact_every: int = 16, snapshots: bool = False,
                 name: str = "lora_delta") -> None:
        self._rows = V.positive_int("rows", rows)
        self._cols = V.positive_int("cols", cols)
        if max_history is not None:
            max_history = V.positive_int("max_history", max_history)
        self._max_history = max_history
        self._tiers = _check_tiers(tiers)
        self._compact_every = V.positive_int("compact_every", compact_every)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self._base_idx = np.zeros(0, np.int64)
        self._base_val = np.zeros(0, np.float64)
        self._runs = Runs()
        self._tail: list[Changes] = []
        self._steps: list[int] = [0]
        self._open: SparseAdapter | None = None
        self._file: HistoryFile | None = None
        self._group: TemporalGroup | None = None
        self._member = 0
        self._phase = 0  # compaction phase: members of a group compact on different commits
        self._commits = 0
        self._snapshots = bool(snapshots)
        self._snap: Any = None      # last_snapshot, and the float64 weights it was built from
        self._snap_idx: np.ndarray | None = None
        self._snap_val: np.ndarray | None = None

    # ---------------------------------------------------------------- description
    @property
    def shape(self) -> tuple[int, int]:
        return (self._rows, self._cols)

    @property
    def steps(self) -> list[int]:
        """Steps that can be queried exactly, oldest (the base's step) first."""
        return list(self._steps)

    @property
    def latest(self) -> int:
        """The newest committed step."""
        return self._steps[-1]

    @property
    def base_step(self) -> int:
        """The step the base holds (0 until older history is folded into it)."""
        return self._steps[0]

    @property
    def path(self) -> str | None:
        """The history file commits are appended to, if any."""
        f = self._group._file if self._group else self._file
        return f.path if f else None

    def change_count(self) -> int:
        """Number of stored changes (entries of all slices after the base)."""
        return len(self._runs) + sum(len(s) for s in self._tail)

    def memory_usage(self) -> int:
        """Bytes held by the base, the Z-runs, the tail slices, the open step and the step list."""
        tail = sum(a.nbytes for s in self._tail for a in (s.idx, s.t, s.d, s.reset))
        open_ = self._open.memory_usage() if self._open is not None else 0
        return (self._base_idx.nbytes + self._base_val.nbytes + self._runs.nbytes + tail
                + open_ + 8 * len(self._steps))

    def history_bytes(self) -> int:
        """Bytes held by the history alone (Z-runs and tail slices, not the base)."""
        return self._runs.nbytes + sum(a.nbytes for s in self._tail
                                       for a in (s.idx, s.t, s.d, s.reset))

    def __repr__(self) -> str:
        return (f"TemporalAdapter({self._rows}, {self._cols}, steps={self.base_step}.."
                f"{self.latest} ({len(self._steps) - 1} slices), changes={self.change_count()})")

    # ---------------------------------------------------------------- writes
    def store_base(self, adapter: SparseAdapter | None = None, *, rows: Any = None,
                   cols: Any = None, values: Any = None) -> None:
        """Set Z[0], from a SparseAdapter or from ``rows, cols, values`` arrays.

        Only before the first delta; duplicated coordinates are summed.
        """
        if len(self._steps) > 1 or self.base_step != 0 or self._open is not None:
            raise ValueError("store_base must come before the first delta "
                             f"(history already holds steps up to {self.latest})")
        if adapter is not None:
            if rows is not None or cols is not None or values is not None:
                raise TypeError("pass either an adapter or rows, cols and values, not both")
            if not isinstance(adapter, SparseAdapter):
                raise TypeError(f"adapter must be a SparseAdapter, got {type(adapter).__name__}")
            if adapter.shape != self.shape:
                raise ValueError(f"adapter has shape {adapter.shape}, expected {self.shape}")
            rows, cols, values = adapter.active_weights()
        elif rows is None or cols is None or values is None:
            raise TypeError("store_base needs an adapter, or rows, cols and values")
        idx, val, _ = self._slice_arrays(rows, cols, values, "values")
        keep = val != 0
        self._base_idx, self._base_val = idx[keep], val[keep]
        f = self._group._file if self._group else self._file
        if f:
            f.append_base(self._member, self.base_step, self._base_idx, self._base_val)

    def store_delta(self, t: int, rows: Any, cols: Any = None, deltas: Any = None, *,
                    reset: Any = None) -> int:
        """Commit step ``t`` holding ``deltas`` at ``(rows, cols)``; returns ``t``.

        ``rows`` may instead be a mapping ``{(row, col): delta}``. Repeated coordinates sum.
        ``reset`` (bool array) marks entries whose value *becomes* the given one instead of
        growing by it; resetting to 0 switches a weight off. ``t`` must exceed every
        committed step.
        """
        if isinstance(rows, Mapping):
            if cols is not None or deltas is not None:
                raise TypeError("pass either a mapping {(row, col): delta} or rows, cols, deltas")
            rows, cols, deltas = _unzip_mapping(rows)
        elif cols is None or deltas is None:
            raise TypeError("store_delta needs rows, cols and deltas, or a mapping")
        self._standalone("store_delta")
        t = self._check_new_step(t)
        if self._open is not None and self._open.active_count():
            raise ValueError("the open step holds accumulated changes: commit() them first")
        idx, d, rs = self._slice_arrays(rows, cols, deltas, "deltas", reset=reset)
        self._log_and_append(t, idx, d, rs)
        return t

    def accumulate(self, rows: Any, cols: Any, grads: Any) -> None:
        """Add contributions into the open step (an OpenVDB tree); repeated coordinates sum."""
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        g = V.as_value_array("grads", grads)
        V.same_length(rows=r, cols=c, grads=g)
        if self._open is None:
            self._open = SparseAdapter(self._rows, self._cols, name=self.name)
        self._open.add_weights(r, c, g)

    def commit(self, t: int | None = None) -> int:
        """Close the open step as slice ``t`` (default: latest + 1) and return ``t``."""
        self._standalone("commit")
        t = self.latest + 1 if t is None else self._check_new_step(t)
        self._log_and_append(t, *self._take_open())
        return t

    def discard_open(self) -> None:
        """Drop what was accumulated since the last commit."""
        self._open = None

    # ---------------------------------------------------------------- queries
    def resolve(self, t: int) -> int:
        """The step a query for ``t`` answers for: the newest stored step <= t."""
        t = _int("t", t)
        if t > self.latest:
            raise ValueError(f"t = {t} is unknown: the newest committed step is {self.latest}")
        if t < self.base_step:
            if self.base_step == 0:
                raise ValueError(f"t = {t} is unknown: steps start at 0 (the base)")
            raise ValueError(f"t = {t} is no longer stored: history up to step "
                             f"{self.base_step} was folded into the base")
        i = np.searchsorted(np.asarray(self._steps), t, side="right") - 1
        return self._steps[i]

    def weights_at_time(self, t: int, *, return_step: bool = False
                        ) -> SparseAdapter | tuple[SparseAdapter, int]:
        """The weights at step ``t`` (the sum of Z[0..t]) as a new SparseAdapter.

        With tiers, ``t`` may fall inside a merged span; the answer is then for
        ``resolve(t)``, returned beside the adapter when ``return_step`` is true.
        """
        step = self.resolve(t)
        idx, val = self._values_at(step)
        out = self._adapter(idx, val)
        return (out, step) if return_step else out

    def current(self) -> SparseAdapter:
        """The weights at the newest committed step."""
        return self.weights_at_time(self.latest)

    def snapshot(self, t: int | None = None) -> Any:
        """The weights at step ``t`` (default: the newest) as a NanoVDB
        :class:`hyprvdb.Snapshot` for the read path."""
        from .snapshot import Snapshot
        step = self.latest if t is None else self.resolve(t)
        idx, val = self._values_at(step)
        v32 = val.astype(np.float32)
        nz = v32 != 0
        return Snapshot.from_coo(idx[nz] // self._cols, idx[nz] % self._cols, v32[nz],
                                 self.shape, step=step, name=self.name)

    @property
    def last_snapshot(self) -> Any:
        """The snapshot of the newest step when built with ``snapshots=True`` (else None)."""
        if self._snapshots and (self._snap is None or self._snap.step != self.latest):
            self._refresh_snapshot(None)
        return self._snap if self._snapshots else None

    def _refresh_snapshot(self, changed: np.ndarray | None) -> None:
        """Bring last_snapshot to the newest step; ``changed`` (sorted linear indices of the
        step just committed, or None after surgery) lets a values-only step skip the tree."""
        from .snapshot import Snapshot
        prev, t = self._snap, self.latest
        if changed is not None and prev is not None and self._snap_idx is not None \
                and prev.step == self._steps[-2] and len(changed):
            pos = np.searchsorted(self._snap_idx, changed)
            pos_c = np.minimum(pos, len(self._snap_idx) - 1) if len(self._snap_idx) else pos
            if len(self._snap_idx) and bool(np.all(self._snap_idx[pos_c] == changed)):
                # Values only: the new value of each changed weight, in float64 as stored.
                new = self._values_for(changed, t)
                if bool(np.all(new.astype(np.float32) != 0)):
                    self._snap_val = self._snap_val.copy()
                    self._snap_val[pos_c] = new
                    self._snap = prev.with_values(changed // self._cols, changed % self._cols,
                                                  new.astype(np.float32), step=t)
                    return
        if changed is not None and prev is not None and prev.step == self._steps[-2] \
                and not len(changed):
            self._snap = prev.with_values([], [], [], step=t)
            return
        idx, val = self._values_at(t)
        nz = val.astype(np.float32) != 0
        self._snap_idx, self._snap_val = idx[nz], val[nz]
        self._snap = Snapshot.from_coo(self._snap_idx // self._cols, self._snap_idx % self._cols,
                                       self._snap_val.astype(np.float32), self.shape, step=t,
                                       name=self.name)

    def _values_for(self, idx: np.ndarray, t: int) -> np.ndarray:
        """float64 values at step t of the weights ``idx`` (sorted), through the C++ merge."""
        all_idx, all_val = self._values_at(t)
        pos = np.searchsorted(all_idx, idx)
        return all_val[pos]

    def window_delta(self, t0: int, t1: int) -> SparseAdapter:
        """The sum of the slices in (t0, t1]: weights at t1 minus weights at t0."""
        s0, s1 = self.resolve(t0), self.resolve(t1)
        if s0 > s1:
            raise ValueError(f"t0 = {t0} must not be after t1 = {t1}")
        i0, v0 = self._values_at(s0)
        i1, v1 = self._values_at(s1)
        idx = np.union1d(i0, i1)
        diff = _scatter(idx, i1, v1) - _scatter(idx, i0, v0)
        return self._adapter(idx, diff)

    def delta_at(self, t: int) -> SparseAdapter:
        """The change made by step ``t`` (which must be a stored step after the base)."""
        step = self.resolve(t)
        if step != t or t == self.base_step:
            raise ValueError(f"t = {t} is not a stored slice; stored steps after the base: "
                             f"{_show_steps(self._steps[1:])}")
        prev = self._steps[self._steps.index(t) - 1]
        return self.window_delta(prev, t)

    def recent_deltas(self, k: int) -> list[tuple[int, SparseAdapter]]:
        """``[(t, delta_at(t))]`` for the last ``k`` slices, oldest first."""
        k = V.positive_int("k", k)
        return [(t, self.delta_at(t)) for t in self._steps[1:][-k:]]

    def weight_history(self, row: int, col: int) -> list[tuple[int, float]]:
        """``[(t, value)]`` at every stored step where the weight changed (the base counts as
        a change at ``base_step`` when the weight is in it); value is the weight after it."""
        row, col = _int("row", row), _int("col", col)
        if not 0 <= row < self._rows:
            raise IndexError(f"row = {row} is out of range for {self._rows} rows")
        if not 0 <= col < self._cols:
            raise IndexError(f"col = {col} is out of range for {self._cols} columns")
        key = row * self._cols + col
        out: list[tuple[int, float]] = []
        value = 0.0
        b = np.searchsorted(self._base_idx, key)
        if b < len(self._base_idx) and self._base_idx[b] == key:
            value = float(self._base_val[b])
            out.append((self.base_step, float(np.float32(value))))
        ts, ds, rs = self._runs_of(key)
        for s in self._tail:
            j = np.searchsorted(s.idx, key)
            if j < len(s.idx) and s.idx[j] == key:
                ts.append(int(s.t[j]))
                ds.append(float(s.d[j]))
                rs.append(bool(s.reset[j]))
        if self._tiers and ts:
            ts = self._stamp(np.asarray(ts, np.int64)).tolist()
        for t, d, r in zip(ts, ds, rs):
            value = d if r else value + d
            if out and out[-1][0] == t and (t != self.base_step or len(out) > 1):
                out[-1] = (t, float(np.float32(value)))  # one entry per stored step
            else:
                out.append((t, float(np.float32(value))))
        return out

    def correlated_changes(self, t: int | None = None, *, window: int = 16,
                           min_score: float = 0.5, min_together: int = 2,
                           max_pairs: int | None = 1000) -> list[CorrelatedPair]:
        """Pairs of weights that repeatedly changed together in the ``window`` slices up to t.

        Only weights that changed at least ``min_together`` times in the window are paired,
        and only pairs sharing a step are ever formed, so time and memory are bounded by
        the changes in the window, not by the square of the weight count. Sorted by score,
        then by shared steps.
        """
        t = self.latest if t is None else self.resolve(t)
        window = V.positive_int("window", window)
        min_together = V.positive_int("min_together", min_together)
        min_score = V.real_scalar("min_score", min_score)
        steps = [s for s in self._steps[1:] if s <= t][-window:]
        if not steps:
            return []
        c = self._changes()
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
        cols = self._cols
        return [CorrelatedPair((int(uniq[a[i]] // cols), int(uniq[a[i]] % cols)),
                               (int(uniq[b[i]] // cols), int(uniq[b[i]] % cols)),
                               float(score[i]), int(together[i])) for i in order]

    # ---------------------------------------------------------------- history surgery
    def rollback(self, t: int) -> int:
        """Make the weights at ``t`` current: every later slice is discarded (not kept on a
        branch; save the history first to keep it). Returns the step rolled back to."""
        self._standalone("rollback")
        if self._open is not None and self._open.active_count():
            raise ValueError("the open step holds accumulated changes: commit() or "
                             "discard_open() them before rollback")
        step = self.resolve(t)
        self._rollback(step)
        if self._file:
            self._file.append_rollback(step)
        return step

    def prune_history(self, keep_last: int) -> int:
        """Fold all but the newest ``keep_last`` slices into the base, exactly (float64).
        Returns the new base step."""
        if isinstance(keep_last, (bool, np.bool_)) or not isinstance(keep_last, (int, np.integer)):
            raise TypeError(f"keep_last must be an int, got {type(keep_last).__name__}")
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}")
        self._standalone("prune_history")
        n = len(self._steps) - 1
        if keep_last >= n:
            return self.base_step
        cut = self._steps[n - keep_last]
        self._fold(cut)
        if self._file:
            self._file.append_fold(cut)
        return cut

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, *, sync: bool = False) -> None:
        """Write the whole history to ``path`` (atomically) and append every later commit to
        it, one checksummed record per commit.

        A commit is safe against a killed process as soon as it returns (its record is
        written in one ``write``); with ``sync=True`` it is also fsynced, which makes it
        durable across power loss at the price of a disk flush per commit.
        """
        self._standalone("save")
        if self._file:
            self._file.close()
        self._file = HistoryFile.create(
            path, {"members": [self._settings()]},
            [(0, self.base_step, self._base_idx, self._base_val)],
            [(t, [(0, idx, d, r)]) for t, idx, d, r in self._slices()], sync=sync)

    @classmethod
    def load(cls, path: str | os.PathLike, *, strict: bool = False,
             sync: bool = False) -> TemporalAdapter:
        """Open a history written by :meth:`save`; later commits append to it.

        A damaged or torn tail (a crash mid-commit) is dropped with a
        :class:`HistoryRecoveryWarning`, keeping every step before it; ``strict=True`` raises
        :class:`CorruptFileError` instead. Files of a :class:`TemporalGroup` with more than one
        matrix are read with :meth:`TemporalGroup.load`.
        """
        header, records, file = HistoryFile.open(path, strict=strict, sync=sync)
        members = _members_of(header, path)
        if len(members) != 1:
            file.close()
            raise ValueError(f"{os.fspath(path)!r} holds the histories of {len(members)} "
                             "matrices: open it with TemporalGroup.load")
        h = _from_settings(members[0])
        _replay([h], records)
        h._file = file
        return h

    def close(self) -> None:
        """Stop appending commits to the file."""
        if self._file:
            self._file.close()
        self._file = None

    # ---------------------------------------------------------------- internals
    def _settings(self) -> dict[str, Any]:
        return {"rows": self._rows, "cols": self._cols, "name": self.name,
                "max_history": self._max_history, "compact_every": self._compact_every,
                "tiers": [list(t) for t in self._tiers] if self._tiers else None}

    def _standalone(self, what: str) -> None:
        if self._group is not None:
            raise ValueError(f"{self.name!r} belongs to a TemporalGroup: call {what} on the "
                             "group, which commits all its matrices together")

    def _take_open(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The open step's changes (sorted linear indices, float64 values, no resets)."""
        if self._open is not None:
            r, c, v = self._open.active_weights()
            self._open = None
        else:
            r = c = np.zeros(0, np.int64)
            v = np.zeros(0, np.float32)
        idx = r * self._cols + c
        return idx, v.astype(np.float64), np.zeros(len(idx), bool)

    def _log_and_append(self, t: int, idx: np.ndarray, d: np.ndarray,
                        reset: np.ndarray) -> None:
        if self._file:
            self._file.append_step(t, [(0, idx, d.astype(np.float32), reset)])
        self._append_slice(t, idx, d, reset)

    def _check_new_step(self, t: Any) -> int:
        t = _int("t", t)
        if t > _MAX_STEP:
            raise ValueError(f"t = {t} is too large (steps are limited to {_MAX_STEP})")
        if t <= self.latest:
            raise ValueError(f"t = {t} is out of order: steps must increase and the newest "
                             f"committed step is {self.latest}")
        return t

    def _slice_arrays(self, rows: Any, cols: Any, values: Any, name: str, *,
                      reset: Any = None) -> Any:
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        v = V.as_value_array(name, values)
        V.same_length(rows=r, cols=c, **{name: v})
        V.check_range("rows", r, self._rows)
        V.check_range("cols", c, self._cols)
        idx = r * self._cols + c
        if reset is None:
            rs = np.zeros(len(idx), bool)
        else:
            rs = np.asarray(reset)
            if rs.dtype != bool:
                raise TypeError(f"reset must be a bool array, got dtype {rs.dtype}")
            rs = np.broadcast_to(rs, idx.shape).copy() if rs.ndim == 0 else rs
            V.same_length(rows=r, reset=rs)
        if reset is None and (len(idx) < 2 or bool(np.all(idx[1:] > idx[:-1]))):
            # Already sorted without repeats (what the serving loop and detectors produce).
            return idx, v.astype(np.float64), rs
        # Sort and merge repeats (a repeat after a reset builds on the reset).
        order = np.argsort(idx, kind="stable")
        merged = merge_groups(Changes(idx[order], np.zeros(len(idx), np.int64),
                                      v[order].astype(np.float64), rs[order]),
                              np.zeros(len(idx), np.int64))
        return merged.idx, merged.d, merged.reset

    def _append_slice(self, t: int, idx: np.ndarray, d: np.ndarray, reset: np.ndarray) -> None:
        # The tail keeps what is stored (float32) in compact dtypes until compaction.
        self._tail.append(Changes(idx, np.full(len(idx), t, np.int32), d.astype(np.float32),
                                  reset))
        self._steps.append(t)
        if self._tiers:
            # The visible steps follow the tiers at every commit; merging the stored changes
            # (at compaction) only saves space and never changes an answer.
            stamps = self._stamp(np.asarray(self._steps[1:], np.int64)).tolist()
            self._steps = [self._steps[0]] + sorted(set(stamps))
        self._commits += 1
        ce = self._compact_every
        if len(self._tail) >= 2 * ce or (
                len(self._tail) >= ce and (self._commits + self._phase) % ce == 0):
            self._compact()
        if self._snapshots and self._snap is not None:
            self._refresh_snapshot(idx)
        if self._max_history is not None and len(self._steps) - 1 > self._max_history:
            self._fold(self._steps[len(self._steps) - 1 - self._max_history])

    def _changes(self) -> Changes:
        return Changes.concat([self._runs.decode(), *self._tail])

    def _compact(self) -> None:
        c = self._changes()
        if self._tiers:
            c = merge_groups(c, self._stamp(c.t), split=True)
        self._runs = Runs.encode(c)
        self._tail = []

    def _stamp(self, t: np.ndarray) -> np.ndarray:
        """Tier stamps: each step moves to the end of its span in the coarsest tier whose
        condition holds (the span's end at least the previous tier's age old). Stamps keep
        the order of steps, never pass the newest step, and stamping twice changes nothing."""
        out = t.copy()
        lower = 0
        for limit, res in self._tiers:
            end = -(-t // res) * res
            sel = (self.latest - end) >= lower
            out[sel] = end[sel]
            if limit is None:
                break
            lower = limit
        return out

    def _values_at(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted linear index, float64 value) of every weight in the base or changed up to
        ``step``: one merge pass in C++ over base, Z-runs and tail."""
        runs = self._runs
        reset = np.zeros(len(runs.d), np.uint8)
        reset[runs.resets] = 1
        if self._tail:
            tail = Changes.concat(self._tail)
        else:
            tail = Changes.empty()
        return _core_module().zruns_state(
            self._base_idx, self._base_val, runs.gaps.astype(np.int64),
            runs.counts.astype(np.int64), runs.t.astype(np.int32), runs.d, reset,
            tail.idx, tail.t.astype(np.int32), tail.d.astype(np.float64),
            tail.reset.astype(np.uint8), step)

    def _fold(self, cut: int) -> None:
        c = self._changes()
        bi, bv = self._values_at(cut)
        keep = bv != 0
        self._base_idx, self._base_val = bi[keep], bv[keep]
        self._runs = Runs.encode(c.take(c.t > cut))
        self._tail = []
        self._steps = [cut] + [s for s in self._steps if s > cut]
        if self._snap is not None and self._snap.step <= cut:
            self._snap = None

    def _rollback(self, step: int) -> None:
        c = self._changes()
        self._runs = Runs.encode(c.take(c.t <= step))
        self._tail = []
        self._steps = [s for s in self._steps if s <= step]
        self._open = None
        self._snap = self._snap_idx = self._snap_val = None

    def _runs_of(self, key: int) -> tuple[list[int], list[float], list[bool]]:
        if not len(self._runs):
            return [], [], []
        ridx = self._runs.distinct()
        j = int(np.searchsorted(ridx, key))
        if j >= len(ridx) or ridx[j] != key:
            return [], [], []
        counts = self._runs.counts
        start = int(np.sum(counts[:j], dtype=np.int64))
        stop = start + int(counts[j])
        resets = set(self._runs.resets[(self._runs.resets >= start)
                                       & (self._runs.resets < stop)].tolist())
        return (self._runs.t[start:stop].astype(np.int64).tolist(),
                self._runs.d[start:stop].astype(np.float64).tolist(),
                [p in resets for p in range(start, stop)])

    def _slices(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Every stored slice after the base, oldest first, as (t, idx, d, reset): one per
        committed step, and one per step a change is stored at (which may be a step that tiers
        have since merged; loading restamps it the same way)."""
        c = self._changes()
        order = np.lexsort((c.idx, c.t))
        c = c.take(order)
        steps = sorted(set(self._steps[1:]) | set(np.unique(c.t).tolist()))
        bounds = np.searchsorted(c.t, steps + [math.inf], side="left")
        return [(t, c.idx[bounds[k]:bounds[k + 1]], c.d[bounds[k]:bounds[k + 1]].astype(np.float32),
                 c.reset[bounds[k]:bounds[k + 1]]) for k, t in enumerate(steps)]

    def _adapter(self, idx: np.ndarray, val: np.ndarray) -> SparseAdapter:
        v32 = val.astype(np.float32)
        nz = v32 != 0
        idx = idx[nz]
        out = SparseAdapter(self._rows, self._cols, name=self.name)
        out._c.set(idx // self._cols, idx % self._cols, v32[nz], False)
        return out


class TemporalGroup:
    """The histories of several matrices (say, every adapted layer of a model), committed
    together: one step is one record in one file, and all members share their steps.

    Parameters
    ----------
    shapes : mapping of name to (rows, cols)
        The members, in order.
    max_history, tiers, compact_every
        As for :class:`TemporalAdapter`, applied to every member. Without tiers, members
        compact their write tails on different commits so that no single commit pays for all.

    Examples
    --------
    >>> import hyprvdb
    >>> g = hyprvdb.TemporalGroup({"q": (4, 4), "v": (4, 8)})
    >>> g["v"].store_base(rows=[0], cols=[7], values=[1.0])
    >>> g.store_deltas(1, {"q": ([1], [1], [0.5])})
    1
    >>> g.accumulate("v", [0], [7], [0.25]); g.commit()
    2
    >>> {k: a.active_count() for k, a in g.weights_at_time(2).items()}
    {'q': 1, 'v': 1}
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int]], *,
                 max_history: int | None = None,
                 tiers: Sequence[tuple[int | None, int]] | None = None,
                 compact_every: int = 16) -> None:
        if not isinstance(shapes, Mapping) or not shapes:
            raise ValueError(f"shapes must be a non-empty mapping of name to (rows, cols), "
                             f"got {shapes!r}")
        self._members: dict[str, TemporalAdapter] = {}
        for i, (name, shape) in enumerate(shapes.items()):
            try:
                rows, cols = shape
            except (TypeError, ValueError):
                raise TypeError(f"shapes[{name!r}] must be (rows, cols), got {shape!r}") from None
            h = TemporalAdapter(rows, cols, max_history=max_history, tiers=tiers,
                                compact_every=compact_every, name=name)
            self._adopt(h, i)
        self._file: HistoryFile | None = None

    def _adopt(self, h: TemporalAdapter, i: int) -> None:
        h._group, h._member = self, i
        # Tiers restamp steps when a member compacts, so then all members compact together.
        h._phase = 0 if h._tiers else i % h._compact_every
        self._members[h.name] = h

    # ---------------------------------------------------------------- members
    def __getitem__(self, name: str) -> TemporalAdapter:
        try:
            return self._members[name]
        except KeyError:
            raise KeyError(f"no member {name!r}; members: {list(self._members)}") from None

    def __iter__(self):  # noqa: ANN204
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def items(self):  # noqa: ANN201
        return self._members.items()

    def __repr__(self) -> str:
        return (f"TemporalGroup({len(self)} matrices, steps {self.base_step}..{self.latest}, "
                f"changes={self.change_count()})")

    @property
    def _first(self) -> TemporalAdapter:
        return next(iter(self._members.values()))

    @property
    def steps(self) -> list[int]:
        return self._first.steps

    @property
    def latest(self) -> int:
        return self._first.latest

    @property
    def base_step(self) -> int:
        return self._first.base_step

    @property
    def path(self) -> str | None:
        return self._file.path if self._file else None

    def resolve(self, t: int) -> int:
        """The step a query for ``t`` answers for (the same for every member)."""
        return self._first.resolve(t)

    def change_count(self) -> int:
        return sum(h.change_count() for h in self._members.values())

    def memory_usage(self) -> int:
        return sum(h.memory_usage() for h in self._members.values())

    def history_bytes(self) -> int:
        return sum(h.history_bytes() for h in self._members.values())

    # ---------------------------------------------------------------- writes
    def store_deltas(self, t: int, deltas: Mapping[str, Any]) -> int:
        """Commit step ``t`` for every member: ``deltas[name]`` is ``(rows, cols, values)``
        or ``(rows, cols, values, reset)``; members left out get an empty slice. Everything
        is checked before anything is stored."""
        if not isinstance(deltas, Mapping):
            raise TypeError(f"deltas must be a mapping of member name to (rows, cols, values), "
                            f"got {type(deltas).__name__}")
        t = self._first._check_new_step(t)
        unknown = [k for k in deltas if k not in self._members]
        if unknown:
            raise KeyError(f"no member {unknown[0]!r}; members: {list(self._members)}")
        staged = {}
        for name, h in self._members.items():
            if h._open is not None and h._open.active_count():
                raise ValueError(f"member {name!r} holds accumulated changes: commit() first")
            if name in deltas:
                item = deltas[name]
                if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
                    raise TypeError(f"deltas[{name!r}] must be (rows, cols, values[, reset]), "
                                    f"got {type(item).__name__}")
                staged[name] = h._slice_arrays(*item[:3], "values",
                                               reset=item[3] if len(item) == 4 else None)
        self._commit_all(t, staged)
        return t

    def accumulate(self, name: str, rows: Any, cols: Any, grads: Any) -> None:
        """Add contributions into member ``name``'s open step."""
        self[name].accumulate(rows, cols, grads)

    def commit(self, t: int | None = None) -> int:
        """Close every member's open step as step ``t`` (default latest + 1); returns t."""
        t = self.latest + 1 if t is None else self._first._check_new_step(t)
        self._commit_all(t, {name: h._take_open() for name, h in self._members.items()})
        return t

    def _commit_all(self, t: int, staged: Mapping[str, tuple]) -> None:
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, bool))
        slices = [(name, h, staged.get(name, empty)) for name, h in self._members.items()]
        if self._file:
            self._file.append_step(t, [(h._member, idx, d.astype(np.float32), r)
                                       for _, h, (idx, d, r) in slices if len(idx)])
        for _, h, (idx, d, r) in slices:
            h._append_slice(t, idx, d, r)

    # ---------------------------------------------------------------- queries and surgery
    def weights_at_time(self, t: int) -> dict[str, SparseAdapter]:
        """Every member's weights at step ``t``."""
        return {name: h.weights_at_time(t) for name, h in self._members.items()}

    def rollback(self, t: int) -> int:
        """Roll every member back to step ``t``; later steps are discarded."""
        for name, h in self._members.items():
            if h._open is not None and h._open.active_count():
                raise ValueError(f"member {name!r} holds accumulated changes: commit() or "
                                 "discard_open() them before rollback")
        step = self._first.resolve(t)
        for h in self._members.values():
            h._rollback(step)
        if self._file:
            self._file.append_rollback(step)
        return step

    def prune_history(self, keep_last: int) -> int:
        """Fold all but the newest ``keep_last`` steps of every member into its base."""
        if isinstance(keep_last, (bool, np.bool_)) or not isinstance(keep_last, (int, np.integer)):
            raise TypeError(f"keep_last must be an int, got {type(keep_last).__name__}")
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}")
        steps = self.steps
        if keep_last >= len(steps) - 1:
            return self.base_step
        cut = steps[len(steps) - 1 - keep_last]
        for h in self._members.values():
            h._fold(cut)
        if self._file:
            self._file.append_fold(cut)
        return cut

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, *, sync: bool = False) -> None:
        """Write every member's history to one file and append later commits to it (see
        :meth:`TemporalAdapter.save` for what ``sync`` buys)."""
        if self._file:
            self._file.close()
        members = list(self._members.values())
        per_member = [h._slices() for h in members]
        steps = []
        for k, t in enumerate(self.steps[1:]):
            steps.append((t, [(i, idx, d, r) for i, sl in enumerate(per_member)
                              for (_, idx, d, r) in [sl[k]] if len(idx)]))
        self._file = HistoryFile.create(
            path, {"members": [h._settings() for h in members]},
            [(i, h.base_step, h._base_idx, h._base_val) for i, h in enumerate(members)],
            steps, sync=sync)

    @classmethod
    def load(cls, path: str | os.PathLike, *, strict: bool = False,
             sync: bool = False) -> TemporalGroup:
        """Open a history file of one or more matrices; later commits append to it."""
        header, records, file = HistoryFile.open(path, strict=strict, sync=sync)
        g = cls.__new__(cls)
        g._members = {}
        for i, m in enumerate(_members_of(header, path)):
            g._adopt(_from_settings(m), i)
        g._file = None
        _replay(list(g._members.values()), records)
        g._file = file
        return g

    def close(self) -> None:
        """Stop appending commits to the file."""
        if self._file:
            self._file.close()
        self._file = None


def _members_of(header: dict[str, Any], path: Any) -> list[dict[str, Any]]:
    members = header.get("members")
    if not isinstance(members, list) or not members:
        from ._errors import CorruptFileError
        raise CorruptFileError(f"{os.fspath(path)!r}: the header lists no matrices")
    return members


def _from_settings(m: dict[str, Any]) -> TemporalAdapter:
    try:
        return TemporalAdapter(m["rows"], m["cols"], max_history=m.get("max_history"),
                               tiers=m.get("tiers"), compact_every=m["compact_every"],
                               name=m["name"])
    except (TypeError, ValueError, KeyError) as exc:
        from ._errors import CorruptFileError
        raise CorruptFileError(f"the history header describes an invalid matrix: {exc}") \
            from None


def _replay(members: list[TemporalAdapter], records: list[tuple[str, int, Any]]) -> None:
    """Re-run a file's records through the same code that produced them."""
    n = len(members)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, bool))
    for kind, t, payload in records:
        if kind == "base":
            member, idx, val = payload
            if not 0 <= member < n:
                from ._errors import CorruptFileError
                raise CorruptFileError(f"a base record names matrix {member}, the file has {n}")
            h = members[member]
            h._steps = [t]
            h._base_idx, h._base_val = idx, val
        elif kind == "step":
            got = {}
            for member, idx, d, reset in payload:
                if not 0 <= member < n:
                    from ._errors import CorruptFileError
                    raise CorruptFileError(f"a step record names matrix {member}, the file "
                                           f"has {n}")
                got[member] = (idx, d, reset)
            for i, h in enumerate(members):
                h._append_slice(t, *got.get(i, empty))
        elif kind == "fold":
            for h in members:
                h._fold(t)
        elif kind == "rollback":
            for h in members:
                h._rollback(t)


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
        self._rows = V.positive_int("rows", rows)
        self._cols = V.positive_int("cols", cols)
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


# -------------------------------------------------------------------- helpers
def _int(name: str, x: Any) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__} {x!r}")
    return int(x)


def _check_tiers(tiers: Any) -> list[tuple[int | None, int]] | None:
    if tiers is None:
        return None
    out: list[tuple[int | None, int]] = []
    try:
        items = [tuple(t) for t in tiers]
    except TypeError:
        raise TypeError(f"tiers must be a sequence of (age, resolution) pairs, got {tiers!r}") \
            from None
    prev_limit, prev_res = 0, 1
    for i, item in enumerate(items):
        if len(item) != 2:
            raise ValueError(f"tiers[{i}] must be (age, resolution), got {item!r}")
        limit, res = item
        res = V.positive_int(f"tiers[{i}] resolution", res)
        if limit is not None:
            limit = V.positive_int(f"tiers[{i}] age", limit)
            if limit <= prev_limit:
                raise ValueError(f"tiers[{i}] age {limit} must exceed the previous tier's "
                                 f"{prev_limit}")
        if res % prev_res:
            raise ValueError(f"tiers[{i}] resolution {res} must be a multiple of the previous "
                             f"tier's {prev_res}")
        out.append((limit, res))
        if limit is None and i != len(items) - 1:
            raise ValueError(f"tiers[{i}] has no age limit, so it must be the last tier")
        prev_limit, prev_res = (limit if limit is not None else prev_limit), res
    return out


def _unzip_mapping(m: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = list(m.keys())
    for k in keys:
        if not (isinstance(k, tuple) and len(k) == 2):
            raise TypeError(f"mapping keys must be (row, col) tuples, got {k!r}")
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.array([k[0] for k in keys]), np.array([k[1] for k in keys]),
            np.array(list(m.values()), dtype=np.float64))


def _scatter(where: np.ndarray, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    out = np.zeros(len(where), np.float64)
    out[np.searchsorted(where, idx)] = val
    return out


def _show_steps(steps: list[int]) -> str:
    if len(steps) <= 8:
        return str(steps)
    return f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}] ({len(steps)} steps)"
