"""TemporalAdapter: the full history of a sparse adapter, with time as the Z axis.

Z[0] holds the base weights; every later Z slice holds only the weights that changed at that
step; the weights at step t are the sum of the slices up to t.

A TemporalAdapter is a view of one matrix of a :class:`TemporalGroup`: created on its own it
owns a group of one (and commits, rolls back, prunes and saves through it); obtained as
``group[name]`` it reads, sets its base and accumulates, while commits and surgery go through
the group, which keeps all its matrices at the same steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _coo
from .. import _validate as V
from ..adapter import SparseAdapter
from ..snapshot import Snapshot
from ._group import TemporalGroup, _f32, _int, show_steps
from ._matrix import ChangeLog, CorrelatedPair

__all__ = ["TemporalAdapter"]


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
        Commits kept time-major before they are compacted into change runs; a query replays
        at most this many slices.
    snapshots : bool, default False
        Keep a NanoVDB :class:`Snapshot` of the newest step (``last_snapshot``), refreshed at
        every commit: a step that only changes values of active weights refreshes the value
        array of the previous snapshot; one that changes the topology rebuilds it. Costs a
        float64 copy of the current weights.
    allow_nonfinite : bool, default False
        Store steps that make a weight NaN or infinite. By default such a step is refused with
        ``ValueError`` and nothing is stored (as :class:`SparseAdapter` refuses such values).
    name : str
        Name carried into files and snapshots.

    Notes
    -----
    A weight is active at a step when its value there is nonzero. Steps are integers that
    increase with every commit (gaps allowed); the base is step 0 until history is folded
    into it. Deltas are float32; sums are computed in float64 and rounded once, so every
    state equals a float64 replay of the stored deltas rounded to float32.

    Everything but :meth:`accumulate` (whose open step is an OpenVDB tree) and the methods
    that return a :class:`SparseAdapter` works without OpenVDB: :meth:`active_weights`,
    :meth:`get_weights` and :meth:`snapshot` give the same states as arrays or snapshots.

    Examples
    --------
    >>> import hyprvdb
    >>> h = hyprvdb.TemporalAdapter(4, 4)
    >>> h.store_base(rows=[0, 1], cols=[0, 1], values=[1.0, 2.0])
    >>> h.store_delta(1, [0, 2], [0, 2], [0.5, 3.0])
    1
    >>> h.store_delta(2, [2], [2], [2.0])
    2
    >>> h.get_weights([0, 1, 2], [0, 1, 2], t=1)
    array([1.5, 2. , 3. ], dtype=float32)
    >>> h.weight_history(2, 2)
    [(1, 3.0), (2, 5.0)]
    """

    __slots__ = ("_group", "_m", "_owner", "name")

    def __init__(self, rows: int, cols: int, *, max_history: int | None = None,
                 tiers: Sequence[tuple[int | None, int]] | None = None,
                 compact_every: int = 16, snapshots: bool = False,
                 allow_nonfinite: bool = False, name: str = "lora_delta") -> None:
        rows, cols = V.matrix_dims(rows, cols)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        group = TemporalGroup({name: (rows, cols)}, max_history=max_history, tiers=tiers,
                              compact_every=compact_every, allow_nonfinite=allow_nonfinite)
        self._bind(group, name, owner=True)
        self._m.snapshots = bool(snapshots)

    @classmethod
    def _view(cls, group: TemporalGroup, name: str, *, owner: bool) -> TemporalAdapter:
        self = object.__new__(cls)
        self._bind(group, name, owner=owner)
        return self

    def _bind(self, group: TemporalGroup, name: str, *, owner: bool) -> None:
        self._group, self._m, self._owner, self.name = group, group._matrices[name], owner, name

    # ---------------------------------------------------------------- description
    @property
    def shape(self) -> tuple[int, int]:
        return (self._m.rows, self._m.cols)

    @property
    def steps(self) -> list[int]:
        """Steps that can be queried exactly, oldest (the base's step) first."""
        return self._group.steps

    @property
    def latest(self) -> int:
        """The newest committed step."""
        return self._group.latest

    @property
    def base_step(self) -> int:
        """The step the base holds (0 until older history is folded into it)."""
        return self._group.base_step

    @property
    def path(self) -> str | None:
        """The history file commits are appended to, if any."""
        return self._group.path

    def change_count(self) -> int:
        """Number of stored changes (entries of all slices after the base)."""
        return self._m.change_count()

    def memory_usage(self) -> int:
        """Bytes held by the base, the change runs, the tail slices, the open step and the
        step list."""
        return self._m.memory_usage() + 8 * len(self._group._steps)

    def history_bytes(self) -> int:
        """Bytes held by the history alone (change runs and tail slices, not the base)."""
        return self._m.history_bytes()

    def __repr__(self) -> str:
        return (f"TemporalAdapter({self._m.rows}, {self._m.cols}, steps={self.base_step}.."
                f"{self.latest} ({len(self._group._steps) - 1} slices), "
                f"changes={self.change_count()})")

    # ---------------------------------------------------------------- writes
    def store_base(self, adapter: SparseAdapter | None = None, *, rows: Any = None, cols: Any = None,
                   values: Any = None) -> None:
        """Set Z[0], from a SparseAdapter or from ``rows, cols, values`` arrays.

        Only before the first delta; duplicated coordinates are summed.
        """
        g, m = self._group, self._m
        g._writable("store_base")
        if len(g._steps) > 1 or g.base_step != 0 or m.open is not None:
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
        idx, val, _ = g._stage(self.name, rows, cols, values, "values")
        keep = val != 0
        m.base_idx, m.base_val = idx[keep], val[keep]
        m.bound = float(np.abs(m.base_val).max()) if len(m.base_val) else 0.0
        if g._file:
            g._file.append_base(list(g._matrices).index(self.name), g.base_step, m.base_idx,
                                m.base_val)

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
        g = self._owned("store_delta")
        t = g._check_new_step(t)
        g._no_open_changes("store_delta")
        staged = {self.name: g._stage(self.name, rows, cols, deltas, "deltas", reset=reset)}
        g._check_sums(staged)
        g._commit(t, staged)
        return t

    def accumulate(self, rows: Any, cols: Any, grads: Any) -> None:
        """Add contributions into the open step (an OpenVDB tree: needs ``hyprvdb._core``);
        repeated coordinates sum."""
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        allow = self._group._allow_nonfinite
        g = V.as_value_array("grads", grads, allow_nonfinite=allow,
                             hint="; create the history with allow_nonfinite=True to store it")
        V.same_length(rows=r, cols=c, grads=g)
        m = self._m
        V.check_range("rows", r, m.rows)  # before the open step exists: a refusal leaves none
        V.check_range("cols", c, m.cols)
        if m.open is None:
            m.open = self._group._open_member(self.name)
        m.open.add_weights(r, c, g)

    def commit(self, t: int | None = None) -> int:
        """Close the open step as slice ``t`` (default: latest + 1) and return ``t``."""
        return self._owned("commit").commit(t)

    def discard_open(self) -> None:
        """Drop what was accumulated since the last commit."""
        self._m.drop_open()

    # ---------------------------------------------------------------- queries
    def resolve(self, t: int) -> int:
        """The step a query for ``t`` answers for: the newest stored step <= t."""
        return self._group.resolve(t)

    def active_weights(self, t: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The weights at step ``t`` (default: the newest) as ``(rows int64, cols int64,
        values float32)`` in row-major order: the state :meth:`weights_at_time` returns, with
        no OpenVDB needed."""
        idx, v32 = self._m.active(self.latest if t is None else self.resolve(t))
        rows, cols = _coo.split_linear(idx, self._m.cols)
        return rows, cols, v32

    def get_weights(self, rows: Any, cols: Any, t: int | None = None) -> np.ndarray:
        """Weights at ``(rows, cols)`` at step ``t`` (default: the newest), float32; 0 where
        inactive."""
        m = self._m
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        V.same_length(rows=r, cols=c)
        V.check_range("rows", r, m.rows)
        V.check_range("cols", c, m.cols)
        step = self.latest if t is None else self.resolve(t)
        idx = r * m.cols + c
        if len(idx) < 2 or bool(np.all(idx[1:] > idx[:-1])):  # sorted and distinct already
            return _f32(m.values(idx, step))
        uniq, inv = np.unique(idx, return_inverse=True)
        return _f32(m.values(uniq, step))[inv]

    def weights_at_time(self, t: int, *, return_step: bool = False) -> SparseAdapter | tuple[SparseAdapter, int]:
        """The weights at step ``t`` (the sum of Z[0..t]) as a new SparseAdapter (needs
        OpenVDB; :meth:`active_weights` gives the same state as arrays).

        With tiers, ``t`` may fall inside a merged span; the answer is then for
        ``resolve(t)``, returned beside the adapter when ``return_step`` is true.
        """
        step = self.resolve(t)
        out = self._adapter(*self._m.active(step))
        return (out, step) if return_step else out

    def current(self) -> SparseAdapter:
        """The weights at the newest committed step, as a SparseAdapter."""
        return self.weights_at_time(self.latest)

    def snapshot(self, t: int | None = None) -> Snapshot:
        """The weights at step ``t`` (default: the newest) as a NanoVDB
        :class:`hyprvdb.Snapshot` for the read path."""
        return self._m.snapshot(self.latest if t is None else self.resolve(t))

    @property
    def last_snapshot(self) -> Snapshot | None:
        """The snapshot of the newest step when built with ``snapshots=True`` (else None)."""
        m = self._m
        if not m.snapshots:
            return None
        if m.snap is None or m.snap.step != self.latest:
            m.refresh_snapshot(self.latest, self.latest, None)
        return m.snap

    def window_delta(self, t0: int, t1: int) -> SparseAdapter:
        """The sum of the slices in (t0, t1]: weights at t1 minus weights at t0, as a
        SparseAdapter."""
        s0, s1 = self.resolve(t0), self.resolve(t1)
        if s0 > s1:
            raise ValueError(f"t0 = {t0} must not be after t1 = {t1}")
        i0, v0 = self._m.state(s0)
        i1, v1 = self._m.state(s1)
        idx = np.union1d(i0, i1)
        with np.errstate(invalid="ignore"):
            diff = _scatter(idx, i1, v1) - _scatter(idx, i0, v0)
        v32 = _f32(diff)
        nz = v32 != 0
        return self._adapter(idx[nz], v32[nz])

    def delta_at(self, t: int) -> SparseAdapter:
        """The change made by step ``t`` (which must be a stored step after the base)."""
        step = self.resolve(t)
        steps = self._group._steps
        if step != t or t == self.base_step:
            raise ValueError(f"t = {t} is not a stored slice; stored steps after the base: "
                             f"{show_steps(steps[1:])}")
        return self.window_delta(steps[steps.index(t) - 1], t)

    def recent_deltas(self, k: int) -> list[tuple[int, SparseAdapter]]:
        """``[(t, delta_at(t))]`` for the last ``k`` slices, oldest first."""
        k = V.positive_int("k", k)
        return [(t, self.delta_at(t)) for t in self._group._steps[1:][-k:]]

    def changed_between(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` (row-major, distinct) of the weights with a stored change at a step
        in (t0, t1]: the only weights whose value can differ between the two steps."""
        s0, s1 = self.resolve(t0), self.resolve(t1)
        if s0 > s1:
            raise ValueError(f"t0 = {t0} must not be after t1 = {t1}")
        return _coo.split_linear(self._m.changed(s0, s1), self._m.cols)

    def change_log(self) -> ChangeLog:
        """The whole stored history as sorted COO (the base, then every change in (weight,
        step) order): what :class:`hyprvdb.ops.DeviceHistory` uploads."""
        return self._m.change_log()

    def weight_history(self, row: int, col: int) -> list[tuple[int, float]]:
        """``[(t, value)]`` at every stored step where the weight changed (the base counts as
        a change at ``base_step`` when the weight is in it); value is the weight after it."""
        m = self._m
        row, col = _int("row", row), _int("col", col)
        if not 0 <= row < m.rows:
            raise IndexError(f"row = {row} is out of range for {m.rows} rows")
        if not 0 <= col < m.cols:
            raise IndexError(f"col = {col} is out of range for {m.cols} columns")
        key = row * m.cols + col
        out: list[tuple[int, float]] = []
        value = m.base_value(key)
        if value is not None:
            out.append((self.base_step, float(np.float32(value))))
        value = value or 0.0
        ts, ds, rs = m.runs_of(key)
        if self._group._tiers and ts:
            ts = self._group._stamp(np.asarray(ts, np.int64)).tolist()
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
        steps = [s for s in self._group._steps[1:] if s <= t][-window:]
        if not steps:
            return []
        return self._m.correlated(steps, min_together, min_score, max_pairs)

    # ---------------------------------------------------------------- history surgery
    def rollback(self, t: int) -> int:
        """Make the weights at ``t`` current: every later slice is discarded (not kept on a
        branch; save the history first to keep it). Returns the step rolled back to."""
        return self._owned("rollback").rollback(t)

    def prune_history(self, keep_last: int) -> int:
        """Fold all but the newest ``keep_last`` slices into the base, exactly (float64).
        Returns the new base step."""
        if isinstance(keep_last, (bool, np.bool_)) or not isinstance(keep_last, (int, np.integer)):
            raise TypeError(f"keep_last must be an int, got {type(keep_last).__name__}")
        return self._owned("prune_history").prune_history(keep_last)

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, *, sync: bool = False) -> None:
        """Write the whole history to ``path`` (atomically) and append every later commit to
        it, one checksummed record per commit.

        A commit is safe against a killed process as soon as it returns (its record is
        written in one ``write``); with ``sync=True`` it is also fsynced, which makes it
        durable across power loss at the price of a disk flush per commit.
        """
        self._owned("save").save(path, sync=sync)

    @classmethod
    def load(cls, path: str | os.PathLike, *, strict: bool = False,
             sync: bool = False) -> TemporalAdapter:
        """Open a history written by :meth:`save`; later commits append to it.

        A damaged or torn tail (a crash mid-commit) is dropped with a
        :class:`HistoryRecoveryWarning`, keeping every step before it; ``strict=True`` raises
        :class:`CorruptFileError` instead. Files of a :class:`TemporalGroup` with more than one
        matrix are read with :meth:`TemporalGroup.load`.
        """
        g = TemporalGroup.load(path, strict=strict, sync=sync)
        if len(g) != 1:
            g.close()
            raise ValueError(f"{os.fspath(path)!r} holds the histories of {len(g)} "
                             "matrices: open it with TemporalGroup.load")
        return cls._view(g, next(iter(g)), owner=True)

    def close(self) -> None:
        """Stop appending commits to the file."""
        self._owned("close").close()

    # ---------------------------------------------------------------- internals
    def _owned(self, what: str) -> TemporalGroup:
        if not self._owner:
            raise ValueError(f"{self.name!r} belongs to a TemporalGroup: call {what} on the "
                             "group, which commits all its matrices together")
        return self._group

    def _adapter(self, idx: np.ndarray, v32: np.ndarray) -> SparseAdapter:
        out = SparseAdapter(self._m.rows, self._m.cols, name=self.name)
        rows, cols = _coo.split_linear(idx, self._m.cols)
        out.batch_update(rows, cols, v32)
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
