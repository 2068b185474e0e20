"""TemporalGroup: the histories of several matrices committed together, and the one owner of
a history's lifecycle (its steps, its file, commits, rollback, pruning, saving and loading).

A lone :class:`~hyprvdb.TemporalAdapter` is a group of one; ``group[name]`` is a
TemporalAdapter view of one member.

Layout of a member (see ``_changes``): the open step is an OpenVDB tree (a
:class:`SparseAdapter` that ``accumulate`` adds into); committed slices join a short
time-major tail, which is compacted every ``compact_every`` commits into change runs, where
each weight's changes lie contiguous along Z. A query takes each run up to t in one pass and
replays at most the tail's few slices, so its cost does not grow with t.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import _coo
from .. import _validate as V
from ..adapter import AdapterSet
from .._errors import CorruptFileError
from ._changes import Changes, merge_groups
from ._file import HistoryFile
from ._matrix import Matrix
from ._objects import SEGMENT_EVERY, HistoryObjects, is_url
from ..snapshot import SetSnapshot

__all__ = ["TemporalGroup"]

MAX_STEP = 2**31 - 1  # steps travel as int32 to the kernels
_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, bool))


class TemporalGroup:
    """The histories of several matrices (say, every adapted layer of a model), committed
    together: one step is one record in one file, and all members share their steps.

    Parameters
    ----------
    shapes : mapping of name to (rows, cols)
        The members, in order.
    max_history, tiers, compact_every, allow_nonfinite
        As for :class:`TemporalAdapter`, applied to every member. Without tiers, members
        compact their write tails on different commits so that no single commit pays for all.

    Examples
    --------
    >>> import hyprvdb
    >>> g = hyprvdb.TemporalGroup({"q": (4, 4), "v": (4, 8)})
    >>> g["v"].store_base(rows=[0], cols=[7], values=[1.0])
    >>> g.store_deltas(1, {"q": ([1], [1], [0.5])})
    1
    >>> g.store_deltas(2, {"v": ([0], [7], [0.25])})
    2
    >>> {k: len(h.active_weights(2)[0]) for k, h in g.items()}
    {'q': 1, 'v': 1}
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int]], *,
                 max_history: int | None = None,
                 tiers: Sequence[tuple[int | None, int]] | None = None,
                 compact_every: int = 16, allow_nonfinite: bool = False) -> None:
        if not isinstance(shapes, Mapping) or not shapes:
            raise ValueError(f"shapes must be a non-empty mapping of name to (rows, cols), "
                             f"got {shapes!r}")
        if max_history is not None:
            max_history = V.positive_int("max_history", max_history)
        self._max_history = max_history
        self._tiers = _check_tiers(tiers)
        self._compact_every = V.positive_int("compact_every", compact_every)
        if not isinstance(allow_nonfinite, (bool, np.bool_)):
            raise TypeError(f"allow_nonfinite must be a bool, got "
                            f"{type(allow_nonfinite).__name__} {allow_nonfinite!r}")
        self._allow_nonfinite = bool(allow_nonfinite)
        self._matrices: dict[str, Matrix] = {}
        for i, (name, shape) in enumerate(shapes.items()):
            if not isinstance(name, str) or not name:
                raise ValueError(f"names must be non-empty str, got {name!r}")
            try:
                rows, cols = shape
            except (TypeError, ValueError):
                raise TypeError(f"shapes[{name!r}] must be (rows, cols), got {shape!r}") from None
            m = Matrix(*V.matrix_dims(rows, cols), name)
            # Tiers restamp steps when a member compacts, so then all members compact together.
            m.phase = 0 if self._tiers else i % self._compact_every
            self._matrices[name] = m
        self._views: dict[str, Any] = {}
        self._open: AdapterSet | None = None  # every member's open step, in one tree
        self._steps: list[int] = [0]
        self._commits = 0
        self._file: HistoryFile | None = None
        self._read_only = False

    # ---------------------------------------------------------------- members
    def __getitem__(self, name: str) -> Any:
        """The member ``name`` as a :class:`TemporalAdapter` view (reads, ``store_base``,
        ``accumulate``; commits and surgery go through the group)."""
        if name not in self._matrices:
            raise KeyError(f"no member {name!r}; members: {list(self._matrices)}")
        view = self._views.get(name)
        if view is None:
            from ._temporal import TemporalAdapter
            view = self._views[name] = TemporalAdapter._view(self, name, owner=False)
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._matrices)

    def __len__(self) -> int:
        return len(self._matrices)

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, member view)`` pairs, in order."""
        return ((name, self[name]) for name in self._matrices)

    def __repr__(self) -> str:
        return (f"TemporalGroup({len(self)} matrices, steps {self.base_step}..{self.latest}, "
                f"changes={self.change_count()})")

    # ---------------------------------------------------------------- description
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
        """The step the bases hold (0 until older history is folded into them)."""
        return self._steps[0]

    @property
    def path(self) -> str | None:
        """The history file commits are appended to, if any."""
        return self._file.path if self._file else None

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

    def change_count(self) -> int:
        """Stored changes (entries of all slices after the bases), all members."""
        return sum(m.change_count() for m in self._matrices.values())

    def memory_usage(self) -> int:
        """Bytes held by every member's base, changes and open step, and the step list."""
        return sum(m.memory_usage() for m in self._matrices.values()) + 8 * len(self._steps)

    def history_bytes(self) -> int:
        """Bytes held by the stored changes alone (not the bases)."""
        return sum(m.history_bytes() for m in self._matrices.values())

    # ---------------------------------------------------------------- writes
    def store_deltas(self, t: int, deltas: Mapping[str, Any]) -> int:
        """Commit step ``t`` for every member: ``deltas[name]`` is ``(rows, cols, values)``
        or ``(rows, cols, values, reset)``; members left out get an empty slice. Everything
        is checked before anything is stored."""
        self._writable("store_deltas")
        if not isinstance(deltas, Mapping):
            raise TypeError(f"deltas must be a mapping of member name to (rows, cols, values), "
                            f"got {type(deltas).__name__}")
        t = self._check_new_step(t)
        unknown = [k for k in deltas if k not in self._matrices]
        if unknown:
            raise KeyError(f"no member {unknown[0]!r}; members: {list(self._matrices)}")
        self._no_open_changes("store_deltas")
        staged = {}
        for name, item in deltas.items():
            if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
                raise TypeError(f"deltas[{name!r}] must be (rows, cols, values[, reset]), "
                                f"got {type(item).__name__}")
            staged[name] = self._stage(name, *item[:3], "values",
                                       reset=item[3] if len(item) == 4 else None)
        self._check_sums(staged)
        self._commit(t, staged)
        return t

    def accumulate(self, name: str, rows: Any, cols: Any, grads: Any) -> None:
        """Add contributions into member ``name``'s open step."""
        self[name].accumulate(rows, cols, grads)

    def commit(self, t: int | None = None) -> int:
        """Close every member's open step as step ``t`` (default latest + 1); returns t."""
        self._writable("commit")
        t = self.latest + 1 if t is None else self._check_new_step(t)
        staged = {name: m.open_changes() for name, m in self._matrices.items()}
        self._check_sums(staged)
        for m in self._matrices.values():
            m.drop_open()
        self._commit(t, staged)
        return t

    # ---------------------------------------------------------------- queries and surgery
    def get_weights(self, coords: Mapping[str, Any], t: int | None = None, *,
                    check: bool = True) -> dict[str, np.ndarray]:
        """Float32 weights at step ``t`` (default: the newest) of several members at once:
        ``coords[name]`` is ``(rows, cols)``, or with ``check=False`` sorted distinct linear
        indices ``row * cols + col`` that the caller guarantees in range (what serving passes
        for the coordinates the history itself reported; never the default)."""
        step = self.latest if t is None else self.resolve(t)
        out = {}
        for name, c in coords.items():
            if check:
                out[name] = self[name].get_weights(*c, t=step)
            else:
                out[name] = _f32(self._matrices[name].values(c, step))
        return out

    def weights_at_time(self, t: int) -> AdapterSet:
        """Every member's weights at step ``resolve(t)``, as one :class:`AdapterSet` (needs
        OpenVDB; see :meth:`TemporalAdapter.active_weights` for arrays)."""
        step = self.resolve(t)
        out = AdapterSet(allow_nonfinite=self._allow_nonfinite)
        for name, m in self._matrices.items():
            idx, v32 = m.active(step)
            out.add(name, m.rows, m.cols).batch_update(*_coo.split_linear(idx, m.cols), v32)
        return out

    def set_snapshot(self, t: int | None = None) -> SetSnapshot:
        """Every member's weights at step ``resolve(t)`` (default: the newest) as one
        :class:`hyprvdb.SetSnapshot`: one NanoVDB grid of 64-column cells for the whole group,
        what serving uploads to a device. Needs no OpenVDB."""
        step = self.latest if t is None else self.resolve(t)
        entries = []
        for name, m in self._matrices.items():
            idx, v32 = m.active(step)
            rows, cols = _coo.split_linear(idx, m.cols)
            entries.append((name, (m.rows, m.cols), rows, cols, v32))
        return SetSnapshot.from_coo(entries, step=step, allow_nonfinite=True)

    @classmethod
    def from_peft(cls, path: str | os.PathLike, *, density: float = 0.01,
                  alpha: float | None = None, shapes: Mapping[str, tuple[int, int]] | None = None,
                  **kwargs: Any) -> TemporalGroup:
        """A history whose base (step 0) is a PEFT folder's adapter, one member per layer
        (read as :meth:`hyprvdb.AdapterSet.from_peft` reads it; needs no OpenVDB);
        ``kwargs`` go to the constructor."""
        from .. import _peft as P
        entries = P.read_peft(os.fspath(path), density=V.real_scalar("density", density),
                              alpha=None if alpha is None else V.real_scalar("alpha", alpha),
                              shapes=dict(shapes or {}))
        g = cls({name: shape for name, shape, _, _, _ in entries}, **kwargs)
        for name, _, r, c, v in entries:
            g[name].store_base(rows=r, cols=c, values=v)
        return g

    def save_shira(self, path: str | os.PathLike, t: int | None = None, *, r: int | None = None,
                   base_model: str | None = None) -> None:
        """Step ``resolve(t)`` (default: the newest) of every member as a PEFT SHiRA folder
        (see :meth:`hyprvdb.AdapterSet.save_shira`). Needs no OpenVDB."""
        from .. import _peft as P
        step = self.latest if t is None else self.resolve(t)
        entries = []
        for name, m in self._matrices.items():
            idx, v32 = m.active(step)
            entries.append((name, (m.rows, m.cols), *_coo.split_linear(idx, m.cols), v32))
        P.write_shira(os.fspath(path), entries, r=r, base_model=base_model)

    def _open_member(self, name: str) -> Any:
        """Member ``name``'s open step: its member of one AdapterSet that holds every
        member's open step (created on the first accumulate)."""
        self._writable("accumulate")
        if self._open is None:
            self._open = AdapterSet(allow_nonfinite=self._allow_nonfinite)
        if name not in self._open:
            m = self._matrices[name]
            self._open.add(name, m.rows, m.cols)
        return self._open[name]

    def rollback(self, t: int) -> int:
        """Make the weights at ``t`` current for every member: every later slice is discarded
        (not kept on a branch; save the history first to keep it). Returns the step rolled
        back to."""
        self._writable("rollback")
        self._no_open_changes("rollback", hint="commit() or discard_open() them before rollback")
        step = self.resolve(t)
        self._rollback(step)
        if self._file:
            self._file.append_rollback(step)
        return step

    def prune_history(self, keep_last: int) -> int:
        """Fold all but the newest ``keep_last`` slices of every member into its base,
        exactly (float64). Returns the new base step."""
        self._writable("prune_history")
        if isinstance(keep_last, (bool, np.bool_)) or not isinstance(keep_last, (int, np.integer)):
            raise TypeError(f"keep_last must be an int, got {type(keep_last).__name__}")
        if keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {keep_last}")
        n = len(self._steps) - 1
        if keep_last >= n:
            return self.base_step
        cut = self._steps[n - keep_last]
        self._fold(cut)
        if self._file:
            self._file.append_fold(cut)
        return cut

    # ---------------------------------------------------------------- files
    def save(self, path: str | os.PathLike, *, sync: bool = False,
             take_over: bool = False, segment_every: int | None = None) -> None:
        """Write every member's whole history to ``path`` (atomically) and append every later
        commit to it, one checksummed record per commit for all members.

        A commit is safe against a killed process as soon as it returns (its record is
        written in one ``write``); with ``sync=True`` it is also fsynced, which makes it
        durable across power loss at the price of a disk flush per commit.

        ``path`` may be a URL of an fsspec filesystem (``memory://``, ``file://``, ``s3://``
        with s3fs ...): the history is then a header object, one immutable object per commit
        and a manifest written after it (see ``hyprvdb/history/_objects.py``). A history on
        a URL has one writer at a time: the writer holds a lease object until :meth:`close`;
        another refuses to write (``take_over=True`` replaces the lease of a writer that is
        gone). Once ``segment_every`` (default 64) commits are loose objects, they are
        compacted into one segment object, so that a new follower reads a few objects, not one
        per step.
        """
        self._writable("save")
        extra = _url_options(path, take_over=take_over, segment_every=segment_every)
        if self._file:
            self._file.close()
        members = list(self._matrices.values())
        per_member = [m.slices() for m in members]
        # Every visible step (an empty one too) and every step a change is stored at (which
        # tiers may since have merged; loading restamps it the same way).
        steps = sorted(set(self._steps[1:]).union(*per_member))
        records = [(t, [(i, *sl[t]) for i, sl in enumerate(per_member) if t in sl])
                   for t in steps]
        self._file = _store(path).create(
            path, {"members": [self._settings(m) for m in members]},
            [(i, self.base_step, m.base_idx, m.base_val) for i, m in enumerate(members)],
            records, sync=sync, **extra)

    @classmethod
    def load(cls, path: str | os.PathLike, *, strict: bool = False,
             sync: bool = False, mode: str = "a", take_over: bool = False,
             segment_every: int | None = None) -> TemporalGroup:
        """Open a history file (or fsspec URL, see :meth:`save`) of one or more matrices;
        later commits append to it.

        A damaged or torn tail (a crash mid-commit) is dropped with a
        :class:`HistoryRecoveryWarning`, keeping every step before it; ``strict=True`` raises
        :class:`CorruptFileError` instead.

        ``mode="r"`` opens it read-only, as a follower of another process that writes it:
        every write is refused, and :meth:`refresh` applies the writer's new commits. On a
        URL, ``mode="a"`` takes the history's writer lease (see :meth:`save`; ``take_over``
        and ``segment_every`` are as there).
        """
        if mode not in ("a", "r"):
            raise ValueError(f"mode must be 'a' (read and append) or 'r' (read only), got "
                             f"{mode!r}")
        extra = _url_options(path, take_over=take_over, segment_every=segment_every)
        if extra:
            extra["writer"] = mode == "a"
        header, records, file = _store(path).open(path, strict=strict, sync=sync, **extra)
        try:
            g = cls._from_header(header, path)
            g._replay(records, repr(os.fspath(path)))
        except BaseException:
            file.close()
            raise
        g._file = file
        g._read_only = mode == "r"
        return g

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "a", **kwargs: Any) -> TemporalGroup:
        """``TemporalGroup.load(path, mode=mode, **kwargs)``: ``mode="r"`` to follow a history,
        ``"a"`` to write to it."""
        return cls.load(path, mode=mode, **kwargs)

    def refresh(self) -> list[int]:
        """Apply the commits another process made to this history's file or URL since it was
        loaded or last refreshed, reading only the new records (each checked as on loading);
        returns the steps that became visible, oldest first ([] if none). Rollbacks and
        prunes the writer made apply too.

        Raises :class:`CorruptFileError` when the history was written anew (saved over) since
        it was read: load it again.
        """
        return self.apply_commits(self.fetch_commits())[0]

    @property
    def read_only(self) -> bool:
        """Whether this history was loaded with ``mode="r"`` (a follower's: writes refused)."""
        return self._read_only

    def fetch_commits(self) -> list[tuple[str, int, Any, int]]:
        """The first half of :meth:`refresh`: the records committed to this history's file or
        URL since it was read, fetched and checked, the group unchanged (a server downloads
        them while requests go on, then applies them with :meth:`apply_commits`)."""
        if self._file is None:
            raise ValueError("refresh needs a history loaded from a file or URL")
        records = self._file.poll()
        if records is None:
            raise CorruptFileError(f"{self._file.path!r} was written anew (saved over) since "
                                   f"it was read; load it again")
        return records

    def apply_commits(self, records: list[tuple[str, int, Any, int]]
                      ) -> tuple[list[int], bool]:
        """The second half of :meth:`refresh`: replay records from :meth:`fetch_commits`.
        Returns the steps that became visible (a step the writer committed again after a
        rollback counts) and whether the records rewrote what the history held (a rollback or
        a prune: a step's window may no longer be stored)."""
        self._no_open_changes("refresh")
        shown = repr(self._file.path) if self._file is not None else "the history"
        if any(r[0] == "base" for r in records) and len(self._steps) > 1:
            raise CorruptFileError(f"{shown}: a base record after the first step")
        before = set(self._steps)
        back = [t for kind, t, *_ in records if kind == "rollback"]
        self._replay(records, shown)
        lowest = min(back) if back else None
        new = [t for t in self._steps
               if t not in before or (lowest is not None and t > lowest)]
        return new, bool(back) or any(r[0] == "fold" for r in records)

    def _writable(self, what: str) -> None:
        if self._read_only:
            raise ValueError(f"{what}: this history was loaded read-only (mode='r'); load it "
                             f"with mode='a' to write to it")

    def close(self) -> None:
        """Stop appending commits to the file (on a URL, give up the writer lease)."""
        if self._file:
            self._file.close()
        self._file = None

    # ---------------------------------------------------------------- internals
    def _settings(self, m: Matrix) -> dict[str, Any]:
        return {"rows": m.rows, "cols": m.cols, "name": m.name,
                "max_history": self._max_history, "compact_every": self._compact_every,
                "tiers": [list(t) for t in self._tiers] if self._tiers else None,
                "allow_nonfinite": self._allow_nonfinite}

    @classmethod
    def _from_header(cls, header: dict[str, Any], path: Any) -> TemporalGroup:
        members = header.get("members")
        if not isinstance(members, list) or not members:
            raise CorruptFileError(f"{os.fspath(path)!r}: the header lists no matrices")
        first = members[0]
        keys = ("max_history", "compact_every", "tiers", "allow_nonfinite")
        for m in members[1:]:
            if any(m.get(k) != first.get(k) for k in keys):
                raise CorruptFileError(f"{os.fspath(path)!r}: the header gives its matrices "
                                       f"different {', '.join(keys)}")
        try:
            return cls({m["name"]: (m["rows"], m["cols"]) for m in members},
                       max_history=first.get("max_history"), tiers=first.get("tiers"),
                       compact_every=first["compact_every"],
                       allow_nonfinite=first.get("allow_nonfinite", False))
        except (TypeError, ValueError, KeyError) as exc:
            raise CorruptFileError(f"the history header describes an invalid matrix: {exc}") \
                from None

    def _replay(self, records: list[tuple[str, int, Any, int]], shown: str) -> None:
        """Re-run a file's records through the same code that produced them, each checked
        first against the rules that code keeps (a record that breaks one is named)."""
        matrices = list(self._matrices.values())
        only_bases = True
        for i, (kind, t, payload, offset) in enumerate(records):
            where = f"{shown}: record {i} ({kind}, at byte {offset})"
            try:
                if kind == "base":
                    member, idx, val = payload
                    if not only_bases:
                        raise ValueError("a base record after the first step")
                    m = _member(matrices, member)
                    if not 0 <= t <= MAX_STEP:
                        raise ValueError(f"its step {t} is outside 0..{MAX_STEP}")
                    self._check_slice(m, idx, val)
                    self._steps = [t]
                    m.base_idx, m.base_val = idx, val
                    m.bound = float(np.abs(val).max()) if len(val) else 0.0
                elif kind == "step":
                    only_bases = False
                    if not self.latest < t <= MAX_STEP:
                        raise ValueError(f"its step {t} does not follow step {self.latest}")
                    got = {}
                    members = [p[0] for p in payload]
                    if members != sorted(set(members)):
                        raise ValueError(f"its matrices {members} are not in order")
                    for member, idx, d, reset in payload:
                        m = _member(matrices, member)
                        self._check_slice(m, idx, d)
                        got[m.name] = (idx, d, reset)
                    self._check_sums(got)
                    self._apply(t, got)
                elif kind in ("fold", "rollback"):
                    only_bases = False
                    if t not in self._steps or (kind == "fold" and t == self.base_step):
                        raise ValueError(f"step {t} is not a stored step after the base "
                                         f"(steps {show_steps(self._steps)})"
                                         if kind == "fold" else
                                         f"step {t} is not a stored step "
                                         f"(steps {show_steps(self._steps)})")
                    (self._fold if kind == "fold" else self._rollback)(t)
            except ValueError as exc:
                raise CorruptFileError(f"{where}: {exc}") from None

    def _check_slice(self, m: Matrix, idx: np.ndarray, values: np.ndarray) -> None:
        """A slice as the writer left it: sorted indices inside the matrix (a weight twice only
        where tiers split a merged value in two), finite values unless the history allows
        others."""
        if len(idx):
            if len(idx) > 1 and not bool(np.all(idx[1:] >= idx[:-1])):
                raise ValueError(f"its indices of {m.name!r} are not sorted")
            if idx[0] < 0 or idx[-1] >= m.rows * m.cols:
                raise ValueError(f"it holds an index outside {m.name!r} ({m.rows} x {m.cols})")
        if not self._allow_nonfinite and not bool(np.isfinite(values).all()):
            raise ValueError(f"it holds a value of {m.name!r} that is not finite")

    def _check_sums(self, staged: Mapping[str, tuple]) -> None:
        """Refuse a step that would make a weight's value NaN or infinite (unless the history
        allows them). Each matrix keeps an upper bound on its values' magnitude; only a step
        that could pass float32's range pays for an exact look at the weights it changes."""
        if self._allow_nonfinite:
            return
        limit = float(np.finfo(np.float32).max) / 2
        for name, (idx, d, reset) in staged.items():
            if not len(idx):
                continue
            m = self._matrices[name]
            top = float(np.abs(d).max())
            if m.bound + top < limit:
                continue
            cur = m.values(idx, self.latest)
            with np.errstate(over="ignore", invalid="ignore"):
                new = np.where(reset, d, cur + d).astype(np.float32)
            bad = np.flatnonzero(~np.isfinite(new))
            if len(bad):
                i = int(bad[0])
                r, c = divmod(int(idx[i]), m.cols)
                raise ValueError(f"the step would make weight ({r}, {c}) of {name!r} "
                                 f"{float(cur[i])!r} + {float(d[i])!r} = {new[i]!r}, which is "
                                 f"not finite (a history created with allow_nonfinite=True "
                                 f"stores such values)")

    def _check_new_step(self, t: Any) -> int:
        t = _int("t", t)
        if t > MAX_STEP:
            raise ValueError(f"t = {t} is too large (steps are limited to {MAX_STEP})")
        if t <= self.latest:
            raise ValueError(f"t = {t} is out of order: steps must increase and the newest "
                             f"committed step is {self.latest}")
        return t

    def _no_open_changes(self, what: str, hint: str = "commit() them first") -> None:
        for name, m in self._matrices.items():
            if m.has_open_changes():
                who = "the open step" if len(self) == 1 else f"member {name!r}'s open step"
                raise ValueError(f"{what}: {who} holds accumulated changes: {hint}")

    def _stage(self, name: str, rows: Any, cols: Any, values: Any, what: str, *,
               reset: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate one member's slice: (sorted distinct linear indices, float64 values,
        reset flags), repeats merged (a repeat after a reset builds on the reset)."""
        m = self._matrices[name]
        r = V.as_index_array("rows", rows)
        c = V.as_index_array("cols", cols)
        v = V.as_value_array(what, values, allow_nonfinite=self._allow_nonfinite,
                             hint="; create the history with allow_nonfinite=True to store it")
        V.same_length(rows=r, cols=c, **{what: v})
        V.check_range("rows", r, m.rows)
        V.check_range("cols", c, m.cols)
        idx = r * m.cols + c
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
        order = np.argsort(idx, kind="stable")
        merged = merge_groups(Changes(idx[order], np.zeros(len(idx), np.int64),
                                      v[order].astype(np.float64), rs[order]),
                              np.zeros(len(idx), np.int64))
        return merged.idx, merged.d, merged.reset

    def _commit(self, t: int, staged: Mapping[str, tuple]) -> None:
        """Log step ``t`` (one record for all members), then apply it."""
        if self._file:
            self._file.append_step(t, [(i, idx, d.astype(np.float32), r)
                                       for i, (name, m) in enumerate(self._matrices.items())
                                       for (idx, d, r) in [staged.get(name, _EMPTY)]
                                       if len(idx)])
        self._apply(t, staged)

    def _apply(self, t: int, staged: Mapping[str, tuple]) -> None:
        for name, m in self._matrices.items():
            item = staged.get(name, _EMPTY)
            m.append(t, *item)
            if len(item[1]):
                m.bound += float(np.abs(item[1]).max())
        self._steps.append(t)
        if self._tiers:
            # The visible steps follow the tiers at every commit; merging the stored changes
            # (at compaction) only saves space and never changes an answer.
            stamps = self._stamp(np.asarray(self._steps[1:], np.int64)).tolist()
            self._steps = [self._steps[0]] + sorted(set(stamps))
        self._commits += 1
        ce = self._compact_every
        for name, m in self._matrices.items():
            if len(m.tail) >= 2 * ce or (len(m.tail) >= ce
                                         and (self._commits + m.phase) % ce == 0):
                m.compact(self._stamp if self._tiers else None)
            if m.snapshots and m.snap is not None:
                m.refresh_snapshot(self.latest, self._steps[-2] if len(self._steps) > 1
                                   else self.base_step, staged.get(name, _EMPTY)[0])
        if self._max_history is not None and len(self._steps) - 1 > self._max_history:
            self._fold(self._steps[len(self._steps) - 1 - self._max_history])

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

    def _fold(self, cut: int) -> None:
        for m in self._matrices.values():
            m.fold(cut)
        self._steps = [cut] + [s for s in self._steps if s > cut]

    def _rollback(self, step: int) -> None:
        for m in self._matrices.values():
            m.rollback(step)
        self._steps = [s for s in self._steps if s <= step]


# -------------------------------------------------------------------- helpers
def _f32(values: np.ndarray) -> np.ndarray:
    """The one rounding of a float64 sum to the float32 state (inf beyond float32's range,
    which only a history that allows non-finite values holds)."""
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def _member(matrices: list[Matrix], member: int) -> Matrix:
    if not 0 <= member < len(matrices):
        raise ValueError(f"it names matrix {member}, the file has {len(matrices)}")
    return matrices[member]


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


def show_steps(steps: list[int]) -> str:
    if len(steps) <= 8:
        return str(steps)
    return f"[{steps[0]}, {steps[1]}, ..., {steps[-1]}] ({len(steps)} steps)"


def _url_options(path: Any, *, take_over: bool, segment_every: int | None) -> dict[str, Any]:
    """The options only a history on a URL takes; refused, naming them, for a local file."""
    if is_url(path):
        return {"take_over": take_over,
                "segment_every": SEGMENT_EVERY if segment_every is None else segment_every}
    given = [k for k, v in (("take_over", take_over), ("segment_every", segment_every)) if v]
    if given:
        raise ValueError(f"{', '.join(given)}: only a history on a URL takes it; "
                         f"{os.fspath(path)!r} is a local file")
    return {}


def _store(path: Any) -> type[HistoryFile]:
    """Where a history lives: a local file, or objects on an fsspec filesystem."""
    return HistoryObjects if is_url(path) else HistoryFile
