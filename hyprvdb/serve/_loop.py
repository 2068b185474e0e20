"""The serving loop: one thread runs every forward pass and applies every weight update,
batching the requests that wait (continuous batching, as LLM servers do).

Why one thread: the live weights are updated in place (their buffers donated to the update),
so no forward pass may read them while an update writes them. A loop that alternates batches
and updates makes that true by construction, lets each batch report the one step its weights
hold, and turns many small concurrent requests into fewer, larger forward passes.

Work items are taken in arrival order: consecutive requests are batched together (up to
``max_texts`` texts per batch), and an update runs between the batch before it and the batch
after it. A request submitted after an update's future has resolved is served on the new
weights.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServingLoop", "Request"]


@dataclass
class Request:
    """One ``encode`` call: its texts, the step asked for (None: the live step) and what the
    caller prepared for the batch (its tokens)."""

    texts: list[str]
    step: int | None
    payload: Any = None
    future: Future = field(default_factory=Future)


@dataclass
class _Update:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


_STOP = object()


class ServingLoop:
    """Runs ``run_batch(requests)`` and updates on one thread (see the module docstring).

    ``run_batch`` receives a list of :class:`Request` (at most ``max_texts`` texts in all,
    unless one request alone has more) and must resolve every request's future.
    """

    def __init__(self, run_batch: Callable[[list[Request]], None], *, max_texts: int = 256,
                 name: str = "hyprvdb-serving") -> None:
        self._run_batch = run_batch
        self._max_texts = max_texts
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, texts: list[str], step: int | None, payload: Any = None) -> Future:
        """Queue a request; its future resolves to what ``run_batch`` sets."""
        if self._closed:
            raise RuntimeError("the serving loop is closed")
        r = Request(texts, step, payload)
        self._q.put(r)
        return r.future

    def update(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the loop thread between batches; wait for it and return its result
        (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn()
        if self._closed:
            raise RuntimeError("the serving loop is closed")
        u = _Update(fn)
        self._q.put(u)
        return u.future.result()

    def close(self, timeout: float | None = 30.0) -> None:
        """Serve what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._q.put(_STOP)
            self._thread.join(timeout)

    # ---------------------------------------------------------------- the loop
    def _main(self) -> None:
        pending: list[Any] = []
        while True:
            item = pending.pop(0) if pending else self._q.get()
            if item is _STOP:
                self._drain_after_stop(pending)
                return
            if isinstance(item, _Update):
                _run(item)
                continue
            batch, texts = [item], len(item.texts)
            while True:  # take every request that waits, up to the batch limit
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, Request) and texts + len(nxt.texts) <= self._max_texts:
                    batch.append(nxt)
                    texts += len(nxt.texts)
                else:
                    pending.append(nxt)
                    break
            try:
                self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)

    def _drain_after_stop(self, pending: list[Any]) -> None:
        rest = list(pending)
        while True:
            try:
                rest.append(self._q.get_nowait())
            except queue.Empty:
                break
        for item in rest:
            if isinstance(item, _Update):
                _run(item)
            elif isinstance(item, Request):
                try:
                    self._run_batch([item])
                except BaseException as exc:  # noqa: BLE001
                    if not item.future.done():
                        item.future.set_exception(exc)


def _run(u: _Update) -> None:
    try:
        u.future.set_result(u.fn())
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
        u.future.set_exception(exc)
