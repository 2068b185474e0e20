"""Follower: a read-only replica of a learning history that another process writes.

One online learner commits steps to a history (a file, or a URL on object storage, see
``hyprvdb/history/_objects.py``); any number of followers, on other machines, serve them. A
follower polls the history, downloads only the records committed since its last poll, and
applies them: to its read-only :class:`~hyprvdb.TemporalGroup` (so that past steps can be
served too) and, when it was given the model's pretrained weights, to its
:class:`MergedWeights` through the same O(changes) in-place update a learner's commit uses.
A follower started late reads the history's segments and the tail, not one object per
step.

A follower never serves a partial step: a step is visible once the writer's manifest (or
superblock) commits it, and the weights move to it in one update, under the follower's
:class:`WeightsLock`, between forward passes.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..history import TemporalGroup
from ._lock import WeightsLock
from ._merged import MergedWeights

__all__ = ["Follower"]


class Follower:
    """A read-only replica of a history that another process writes.

    Parameters
    ----------
    history : str, PathLike or TemporalGroup
        The history: a file path or fsspec URL (loaded with ``mode="r"``), or a group
        already loaded read-only.
    weights : mapping of name to array, optional
        The model's pretrained weights of the history's matrices: the follower then keeps
        them merged with the adapter at its step (:class:`MergedWeights`, which takes the
        arrays over; read :attr:`weights` inside :meth:`reading`).
    scale : float
        ``W = W_pre + scale * S``.

    Examples
    --------
    >>> import tempfile, os, numpy as np, jax.numpy as jnp, hyprvdb
    >>> path = os.path.join(tempfile.mkdtemp(), "h.hvh")
    >>> writer = hyprvdb.TemporalGroup({"w": (2, 3)})
    >>> writer.save(path)
    >>> f = hyprvdb.Follower(path, {"w": jnp.ones((2, 3), jnp.float32)})
    >>> writer.store_deltas(1, {"w": ([1], [0], [0.25])})
    1
    >>> f.poll()
    [1]
    >>> with f.reading():
    ...     np.asarray(f.weights["w"])[1, 0].item()
    1.25
    """

    def __init__(self, history: str | os.PathLike | TemporalGroup,
                 weights: Mapping[str, Any] | None = None, *, scale: float = 1.0) -> None:
        if isinstance(history, TemporalGroup):
            if not history.read_only or history.path is None:
                raise ValueError("history must be loaded from a file or URL with mode='r' "
                                 "(a follower never writes)")
            self.history = history
        elif isinstance(history, (str, os.PathLike)):
            self.history = TemporalGroup.load(history, mode="r")
        else:
            raise TypeError(f"history must be a path, a URL or a TemporalGroup, got "
                            f"{type(history).__name__}")
        self.merged = MergedWeights(weights, self.history, scale=scale) \
            if weights is not None else None
        self.lock = WeightsLock()
        self.history_lock = threading.RLock()  # held while the history changes
        self.moved: Callable[[], None] | None = None  # runs inside the move's lock
        self.error: BaseException | None = None  # the background poll's last failure
        self._polling = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def step(self) -> int:
        """The step served: the weights' step, or the history's newest without weights."""
        return self.merged.step if self.merged is not None else self.history.latest

    @property
    def weights(self) -> dict[str, Any]:
        """The merged weights at :attr:`step` (read them inside :meth:`reading`: a move
        donates the arrays)."""
        if self.merged is None:
            raise ValueError("this follower was given no weights to merge")
        return self.merged.weights

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold off moves while the weights are read (a forward pass; many at once). Reads
        of :attr:`history` while the background thread polls take :attr:`history_lock`."""
        with self.lock.reading():
            yield

    def poll(self) -> list[int]:
        """Fetch the steps committed since the last poll and serve the newest; returns the
        steps that became visible ([] if none)."""
        with self._polling:
            records = self.history.fetch_commits()  # the download: forward passes go on
            if not records:
                return []
            with self.lock.writing(), self.history_lock:
                new, rewritten = self.history.apply_commits(records)
                if self.merged is not None:
                    self.merged.move_to_latest(rewritten=rewritten)
                if self.moved is not None:
                    self.moved()
            return new

    def start(self, interval: float = 0.5,
              on_step: Callable[[int, list[int]], None] | None = None) -> Follower:
        """Poll every ``interval`` seconds in a background thread; ``on_step(step, new)``
        runs after each poll that brought steps. A failed poll (an unreachable store) is kept
        in :attr:`error`, warned about, and tried again at the next interval."""
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if self._thread is not None:
            raise RuntimeError("this follower is polling already")
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    new = self.poll()
                    self.error = None
                    if new and on_step is not None:
                        on_step(self.step, new)
                except Exception as exc:  # noqa: BLE001 - kept, reported, retried
                    if self.error is None or str(exc) != str(self.error):
                        warnings.warn(f"{self.history.path!r}: polling failed ({exc}); "
                                      f"serving step {self.step}, trying again",
                                      RuntimeWarning, stacklevel=1)
                    self.error = exc
                self._stop.wait(interval)

        self._thread = threading.Thread(target=run, name="hyprvdb-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the background polling (after the poll in progress)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.history.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
