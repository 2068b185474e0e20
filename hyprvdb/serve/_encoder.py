"""Serving a model whose sparse adapters keep learning, with every past state recallable.

:class:`AdaptiveEncoder` holds the model, the history of its 36 adapters (a
:class:`TemporalGroup`, persisted to a file when a path is given) and the *serving state*:
the step being served and one :class:`hyprvdb.jax.SparseDelta` per matrix. The serving state
is immutable and replaced in one assignment after a step is committed, so every request reads
one whole committed step and can say which.

``adapt(pairs)`` computes the contrastive loss's gradient with respect to every adapted
matrix (at the adapted weights), keeps the top-k entries of each as a sparse update
``-lr * grad``, commits it as one step of the history, and swaps the new state in. The changed
weights' new values are read back from the history, so the served deltas equal
``history.weights_at_time(step)`` bit for bit.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import jax as hj
from ..history import TemporalGroup
from ._model import MiniLM, contrastive_loss

__all__ = ["AdaptiveEncoder", "ServingState"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ServingState:
    """What requests read: the step, and per matrix the adapter's weights at that step."""

    step: int
    deltas: dict[str, hj.SparseDelta]
    idx: dict[str, np.ndarray] = field(repr=False)      # sorted linear indices
    val: dict[str, np.ndarray] = field(repr=False)      # float32 values at the step


@dataclass
class Metrics:
    """Counters for /metrics."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    embedded_texts: int = 0
    adapt_steps: int = 0
    last_swap_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_texts(self, n: int) -> None:
        with self.lock:
            self.embedded_texts += n

    def observe(self, endpoint: str, seconds: float, ok: bool = True) -> None:
        with self.lock:
            self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
            self.seconds[endpoint] = self.seconds.get(endpoint, 0.0) + seconds
            if not ok:
                self.errors[endpoint] = self.errors.get(endpoint, 0) + 1


class AdaptiveEncoder:
    """MiniLM with a sparse adapter on every linear layer, learning online.

    Parameters
    ----------
    model : MiniLM, optional
        Default: the embedded all-MiniLM-L6-v2.
    history : str or PathLike, optional
        History file: opened (and appended to) if it exists, created otherwise. Without it
        the history lives in memory only.
    lr : float
        Learning rate of the sparse SGD step.
    update_fraction : float
        Fraction of each matrix's weights changed per step (top-k by gradient magnitude).
    capacity_fraction : float
        Room reserved in each serving delta, as a fraction of the matrix, so that steps do
        not change the jitted shapes; it doubles when exceeded (one retrace).
    query_tokens, doc_tokens : int
        Token lengths adaptation batches are padded (or truncated) to.
    """

    def __init__(self, model: MiniLM | None = None, history: str | os.PathLike | None = None,
                 *, lr: float = 0.05, update_fraction: float = 5e-4,
                 capacity_fraction: float = 0.01, query_tokens: int = 32,
                 doc_tokens: int = 96) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < update_fraction <= 1:
            raise ValueError(f"update_fraction must be in (0, 1], got {update_fraction}")
        if not 0 < capacity_fraction <= 1:
            raise ValueError(f"capacity_fraction must be in (0, 1], got {capacity_fraction}")
        self.model = model if model is not None else MiniLM.load()
        self.shapes = self.model.linear_shapes()
        self.lr, self.update_fraction = float(lr), float(update_fraction)
        self.query_tokens, self.doc_tokens = int(query_tokens), int(doc_tokens)
        self._capacity = {n: max(256, int(capacity_fraction * r * c))
                          for n, (r, c) in self.shapes.items()}
        if history is not None and os.path.exists(history):
            self.history = TemporalGroup.load(history)
            if dict((k, self.history[k].shape) for k in self.history) != self.shapes:
                raise ValueError(f"{os.fspath(history)!r} holds histories of other matrices "
                                 "than this model's linear layers")
        else:
            self.history = TemporalGroup(self.shapes)
            if history is not None:
                self.history.save(history)
        self.metrics = Metrics()
        self._write = threading.Lock()  # one writer (adapt, rollback) at a time
        fwd = self.model.embed_fn()
        self._embed = jax.jit(fwd)

        def loss(weights, params, deltas, qi, qm, pi, pm, valid):  # noqa: ANN001, ANN202
            p = dict(params)
            for name, w in weights.items():
                p[f"encoder.{name}.weight"] = w
            q = fwd(p, deltas, qi, qm, 1.0)
            k = fwd(p, deltas, pi, pm, 1.0)
            return contrastive_loss(q, k, valid=valid)

        self._grad = jax.jit(jax.value_and_grad(loss))
        self._state = self._state_from_history()

    # ---------------------------------------------------------------- reading
    @property
    def state(self) -> ServingState:
        return self._state

    @property
    def step(self) -> int:
        return self._state.step

    def encode(self, texts: list[str], *, state: ServingState | None = None
               ) -> tuple[np.ndarray, int]:
        """Embeddings of ``texts`` under one committed step: ``(embeddings, step)``."""
        st = self._state if state is None else state  # one read: one whole step
        ids, mask = self.model.tokenize(texts)
        n = len(texts)
        b = next((x for x in _BATCH_BUCKETS if x >= n), n)
        if b > n:  # pad the batch to a bucket so the jitted shapes repeat
            ids = np.concatenate([ids, np.zeros((b - n, ids.shape[1]), ids.dtype)])
            mask = np.concatenate([mask, np.zeros((b - n, mask.shape[1]), mask.dtype)])
            mask[n:, 0] = 1
        out = self._embed(self.model.params, st.deltas, jnp.asarray(ids), jnp.asarray(mask),
                          jnp.float32(1.0))
        return np.asarray(out)[:n], st.step

    def state_at(self, t: int) -> ServingState:
        """A serving state for a past step (time travel), built from the history."""
        return self._state_from_history(t)

    # ---------------------------------------------------------------- learning
    def adapt(self, pairs: list[tuple[str, str]], *, lr: float | None = None) -> dict[str, Any]:
        """One step of online adaptation on (query, positive) pairs; returns
        ``{"step", "loss", "changes", "swap_ms"}``."""
        if not isinstance(pairs, (list, tuple)) or len(pairs) < 2:
            raise ValueError("pairs must hold at least 2 (query, positive) pairs "
                             "(the other pairs are the negatives)")
        for i, p in enumerate(pairs):
            if not (isinstance(p, (list, tuple)) and len(p) == 2
                    and all(isinstance(s, str) and s for s in p)):
                raise ValueError(f"pairs[{i}] must be two non-empty strings, got {p!r}")
        lr = self.lr if lr is None else float(lr)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        # Fixed lengths, and the pair count padded to a bucket (padding masked out of the
        # loss): the gradient is traced once per bucket, not once per batch shape.
        n = len(pairs)
        b = next((x for x in _BATCH_BUCKETS if x >= n), n)
        padded = list(pairs) + [pairs[0]] * (b - n)
        valid = np.arange(b) < n
        qi, qm = self.model.tokenize([p[0] for p in padded], pad_to=self.query_tokens)
        pi, pm = self.model.tokenize([p[1] for p in padded], pad_to=self.doc_tokens)
        with self._write:
            st = self._state
            weights = {n: self.model.weight(n) for n in self.shapes}
            loss, grads = self._grad(weights, self.model.params, st.deltas, jnp.asarray(qi),
                                     jnp.asarray(qm), jnp.asarray(pi), jnp.asarray(pm),
                                     jnp.asarray(valid))
            update = {}
            for name, g in grads.items():
                g = np.asarray(g).ravel()
                k = max(1, int(self.update_fraction * g.size))
                top = np.sort(np.argpartition(np.abs(g), g.size - k)[g.size - k:])
                cols = self.shapes[name][1]
                update[name] = (top // cols, top % cols, (-lr * g[top]).astype(np.float32))
            t = self.history.latest + 1
            self.history.store_deltas(t, update)  # durable once this returns
            swap = time.perf_counter()
            self._state = self._advance(st, t, update)
            self.metrics.last_swap_seconds = time.perf_counter() - swap
            self.metrics.adapt_steps += 1
        return {"step": t, "loss": float(loss),
                "changes": int(sum(len(u[0]) for u in update.values())),
                "swap_ms": self.metrics.last_swap_seconds * 1e3}

    def rollback(self, t: int) -> int:
        """Serve (and continue from) step ``t``; later steps are discarded."""
        with self._write:
            step = self.history.rollback(t)
            self._state = self._state_from_history(step)
        return step

    # ---------------------------------------------------------------- state building
    def _delta(self, name: str, idx: np.ndarray, val32: np.ndarray, step: int) -> hj.SparseDelta:
        rows, cols = self.shapes[name]
        while self._capacity[name] < len(idx):
            self._capacity[name] *= 2
        r, c = np.divmod(idx, cols)
        return hj.SparseDelta.from_coo(r, c, val32, (rows, cols), step=step,
                                       capacity=self._capacity[name])

    def _state_from_history(self, t: int | None = None) -> ServingState:
        t = self.history.latest if t is None else self.history.resolve(t)
        idx, val, deltas = {}, {}, {}
        for name, (rows, cols) in self.shapes.items():
            r, c, v = self.history[name].active_weights(t)
            idx[name], val[name] = r * cols + c, v
            deltas[name] = self._delta(name, idx[name], v, t)
        return ServingState(t, deltas, idx, val)

    def _advance(self, st: ServingState, t: int, update: dict[str, tuple]) -> ServingState:
        """The state after step ``t`` from the previous one: the changed weights' new values
        come from the history (its value rule), the rest is kept."""
        idx, val, deltas = dict(st.idx), dict(st.val), dict(st.deltas)
        for name, (r, c, _) in update.items():
            cols = self.shapes[name][1]
            new_i = r.astype(np.int64) * cols + c
            new_v = self.history[name].get_weights(r, c, t)
            keep = ~np.isin(idx[name], new_i)
            all_i = np.concatenate([idx[name][keep], new_i])
            all_v = np.concatenate([val[name][keep], new_v])
            order = np.argsort(all_i, kind="stable")
            nz = all_v[order] != 0
            idx[name], val[name] = all_i[order][nz], all_v[order][nz]
            deltas[name] = self._delta(name, idx[name], val[name], t)
        return ServingState(t, deltas, idx, val)
