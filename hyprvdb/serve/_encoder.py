"""Serving a model whose sparse adapters keep learning, with every past step recallable.

:class:`AdaptiveEncoder` holds the model, the history of its 36 adapters (a
:class:`~hyprvdb.TemporalGroup`, persisted to a file when a path is given) and the serving
weights: the live adapter merged into the model's own weights (:class:`MergedWeights`), so a
request at the live step runs the plain model's forward pass.

``adapt(pairs)`` computes the contrastive loss's gradient with respect to every adapted
matrix at the live weights, keeps the top-k entries of each as a sparse update ``-lr * grad``,
commits it as one step of the history, and rewrites, in place, only the weights that step
changed, each from its pretrained value and the history's sum: the live weights equal a
merge from scratch of ``history.weights_at_time(step)`` bit for bit.

Requests run their forward passes in their own threads, concurrently, and a weight update
waits for them and holds them off while it writes (:class:`WeightsLock`, writers first): a
request sees one whole committed step and reports it. ``encode(texts, step=t)`` serves a past
step without touching the live weights: each adapted layer adds the window's sparse
correction ``S_t - S_live`` to the live product (:func:`hyprvdb.jax.delta_add`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import jax as hj
from ..history import TemporalGroup, is_url
from ._lock import WeightsLock
from ._follow import Follower
from ._merged import MergedWeights
from ._model import MiniLM, contrastive_loss

__all__ = ["AdaptiveEncoder"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# What a committed step's embeddings are checked on, when it brings no texts of its own.
_PROBE = ["a probe of the adapted model", "hyprvdb checks that a step keeps outputs finite"]
_CORRECTIONS_KEPT = 32  # past steps (and adapters) whose corrections stay built, most recent


@dataclass
class Metrics:
    """Counters for /metrics."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    embedded_texts: int = 0
    batches: int = 0
    adapt_steps: int = 0
    last_swap_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_texts(self, n: int) -> None:
        with self.lock:
            self.embedded_texts += n

    def count_batch(self) -> None:
        with self.lock:
            self.batches += 1

    def observe(self, endpoint: str, seconds: float, ok: bool = True) -> None:
        with self.lock:
            self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
            self.seconds[endpoint] = self.seconds.get(endpoint, 0.0) + seconds
            if not ok:
                self.errors[endpoint] = self.errors.get(endpoint, 0) + 1


class AdaptiveEncoder:
    """MiniLM with a sparse adapter on every linear layer, learning online, served merged.

    Parameters
    ----------
    model : MiniLM, optional
        Default: the embedded all-MiniLM-L6-v2. The encoder takes over the model's adapted
        weights: from then on ``model.params`` holds the live weights (the adapter merged in).
    history : str or PathLike, optional
        History file or fsspec URL (``s3://...``): opened (and appended to) if it exists,
        created otherwise. Without it the history lives in memory only.
    follow : bool
        Serve, read-only, the steps another process commits to ``history`` (which must
        exist): a :class:`Follower` polls it every ``follow_interval`` seconds and moves the
        live weights to each new step; ``adapt``, ``commit`` and ``rollback`` are refused.
    lr : float
        Learning rate of the sparse SGD step.
    update_fraction : float
        Fraction of each matrix's weights changed per step (top-k by gradient magnitude).
    query_tokens, doc_tokens : int
        Token lengths adaptation batches are padded (or truncated) to.
    scale : float
        The adapter's scale: the live weights are ``W_pre + scale * S``.

    Examples
    --------
    >>> from hyprvdb.serve import AdaptiveEncoder, MiniLM
    >>> small = dict(layers=1, hidden=32, heads=2, intermediate=64, vocab=512)  # random weights
    >>> enc = AdaptiveEncoder(MiniLM.random(0, **small), query_tokens=8, doc_tokens=8)
    >>> emb, step = enc.encode(["a text"])
    >>> emb.shape, step
    ((1, 32), 0)
    >>> enc.adapt([("q one", "doc one"), ("q two", "doc two")])["step"]
    1
    >>> enc.encode(["a text"], step=0)[1]
    0
    """

    def __init__(self, model: MiniLM | None = None, history: str | os.PathLike | None = None,
                 *, lr: float = 0.05, update_fraction: float = 5e-4, query_tokens: int = 32,
                 doc_tokens: int = 96, scale: float = 1.0, follow: bool = False,
                 follow_interval: float = 0.5) -> None:
        if not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        if not 0 < update_fraction <= 1:
            raise ValueError(f"update_fraction must be in (0, 1], got {update_fraction}")
        self.model = model if model is not None else MiniLM.load()
        self.shapes = self.model.linear_shapes()
        self.lr, self.update_fraction = float(lr), float(update_fraction)
        self.query_tokens, self.doc_tokens = int(query_tokens), int(doc_tokens)
        if follow and history is None:
            raise ValueError("follow=True needs history: the file or URL to follow")
        if follow and not follow_interval > 0:
            raise ValueError(f"follow_interval must be > 0 seconds, got {follow_interval!r}")
        self.history = _open_history(history, self.shapes, follow)
        self.metrics = Metrics()
        self._write = threading.Lock()           # one writer (adapt, rollback) at a time
        self._history_lock = threading.RLock()   # requests read the history (past steps)
        self._lock = WeightsLock()               # forward passes vs updates of the weights
        self._corrections: OrderedDict[tuple[Any, int], dict] = OrderedDict()
        self._adapters: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._empties: dict[tuple[int, int], hj.SparseDelta] = {}
        self._corrections_lock = threading.Lock()
        self._merged = MergedWeights({n: self.model.weight(n) for n in self.shapes},
                                     self.history, scale=scale)
        self._publish()
        self._follower: Follower | None = None
        if follow:
            # The follower moves this encoder's weights, under this encoder's locks.
            f = self._follower = Follower(self.history)
            f.merged, f.lock, f.history_lock = self._merged, self._lock, self._history_lock
            f.moved = self._followed
            f.start(follow_interval)
        fwd = self.model.embed_fn()
        self._embed = jax.jit(fwd)

        def loss(params, qi, qm, pi, pm, valid):  # noqa: ANN001, ANN202
            q = fwd(params, {}, qi, qm, 1.0)
            k = fwd(params, {}, pi, pm, 1.0)
            return contrastive_loss(q, k, valid=valid)

        adapted = [f"encoder.{n}.weight" for n in self.shapes]

        def loss_of_weights(weights, params, *batch):  # noqa: ANN001, ANN202
            return loss({**params, **dict(zip(adapted, weights))}, *batch)

        self._grad = jax.jit(jax.value_and_grad(loss_of_weights))
        self._adapted = adapted

    # ---------------------------------------------------------------- reading
    @property
    def step(self) -> int:
        """The live step: what ``encode`` without ``step=`` serves."""
        return self._merged.step

    def encode(self, texts: list[str], *, step: int | None = None, steps: list | None = None,
               adapters: list | None = None) -> tuple[np.ndarray, Any]:
        """Embeddings of ``texts`` under one committed step: ``(embeddings (n, 384) float32,
        step)``. ``step=t`` serves step t (resolved by the history: the newest stored step
        <= t) without touching the live weights.

        A mixed batch, in one forward pass: ``steps=[t_0, ...]`` serves text i at step t_i,
        ``adapters=[name_0, ...]`` with the adapter ``name_i`` (see :meth:`add_adapter`);
        None in either list is the live step. Each adapted layer runs the live product once
        and adds each text's own sparse correction (:func:`hyprvdb.jax.delta_add_segments`).
        Returns ``(embeddings, served)``, ``served`` listing each text's step (or adapter).
        """
        if step is not None and (isinstance(step, (bool, np.bool_))
                                 or not isinstance(step, (int, np.integer))):
            raise TypeError(f"step must be an int or None, got {type(step).__name__} {step!r}")
        given = [k for k, v in (("step", step), ("steps", steps), ("adapters", adapters))
                 if v is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give one of step, steps and adapters")
        for name, keys in (("steps", steps), ("adapters", adapters)):
            if keys is not None and (not isinstance(keys, (list, tuple))
                                     or len(keys) != len(texts)):
                raise ValueError(f"{name} must be a list with one entry per text "
                                 f"({len(texts)}), got {keys!r}")
        ids, mask = self.model.tokenize(texts)
        with self._lock.reading():
            live = self._merged.step
            if steps is not None or adapters is not None:
                served, parts = (self._mixed_steps(steps, live) if steps is not None
                                 else self._mixed_adapters(adapters, live))
                # Texts sorted by segment: each segment's tokens are consecutive rows, which
                # the kernels take in place (no gathered copy).
                order = np.argsort(parts[0], kind="stable")
                emb = self._forward(self.model.params, {}, ids[order], mask[order],
                                    (parts[0][order], parts[1]))
                out = np.empty_like(emb)
                out[order] = emb
                return out, served
            if step is None:
                return self._forward(self.model.params, {}, ids, mask), live
            with self._history_lock:
                s = self.history.resolve(step)
            deltas = {} if s == live else self._correction(s, live)
            return self._forward(self.model.params, deltas, ids, mask), s

    def add_adapter(self, name: str, weights: dict[str, tuple]) -> None:
        """Register an adapter that requests can name (``encode(texts, adapters=[...])``):
        ``weights[layer] = (rows, cols, values)``, its sum S_a (duplicates added), served on
        the pretrained weights as ``W_pre + scale * S_a`` whatever the live step is. Layers
        not given have no delta."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if not isinstance(weights, dict):
            raise TypeError(f"weights must be a dict of layer -> (rows, cols, values), got "
                            f"{type(weights).__name__}")
        coo = {}
        for layer, item in weights.items():
            if layer not in self.shapes:
                raise KeyError(f"weights[{layer!r}]: no adapted matrix {layer!r}")
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise TypeError(f"weights[{layer!r}] must be (rows, cols, values)")
            d = hj.SparseDelta.from_coo(*item, self.shapes[layer])  # checks and sums
            n = d.nnz
            vals = np.asarray(d.values, np.float32)[:n]
            if not np.isfinite(vals).all():
                raise ValueError(f"weights[{layer!r}] holds non-finite values")
            cols = self.shapes[layer][1]
            coo[layer] = (np.asarray(d.row_ids, np.int64)[:n] * cols
                          + np.asarray(d.indices, np.int64)[:n], vals)
        with self._corrections_lock:
            self._adapters[name] = coo
            for key in [k for k in self._corrections if k[0] == ("adapter", name)]:
                del self._corrections[key]

    def history_summary(self) -> dict[str, Any]:
        """Steps and sizes of the history, read consistently with the commits."""
        with self._history_lock:
            h = self.history
            return {"latest": h.latest, "base_step": h.base_step, "steps": h.steps,
                    "serving_step": self.step, "changes": h.change_count(), "path": h.path,
                    "history_bytes": h.history_bytes(),
                    "following": self._follower is not None}

    @property
    def follow_error(self) -> str | None:
        """Why the follower's last poll of its history failed (None: it did not, or this
        encoder does not follow)."""
        err = self._follower.error if self._follower is not None else None
        return None if err is None else str(err)

    def healthy(self) -> bool:
        """Whether every live adapted weight is finite (the health check's question: the
        weights an update wrote are checked as they are written)."""
        return self._merged.finite

    # ---------------------------------------------------------------- learning
    def adapt(self, pairs: list[tuple[str, str]], *, lr: float | None = None) -> dict[str, Any]:
        """One step of online adaptation on (query, positive) pairs; returns
        ``{"step", "loss", "changes", "swap_ms"}``. The step is durable, and served, when
        this returns."""
        self._learning("adapt")
        if not isinstance(pairs, (list, tuple)) or len(pairs) < 2:
            raise ValueError("pairs must hold at least 2 (query, positive) pairs "
                             "(the other pairs are the negatives)")
        for i, p in enumerate(pairs):
            if not (isinstance(p, (list, tuple)) and len(p) == 2
                    and all(isinstance(s, str) and s for s in p)):
                raise ValueError(f"pairs[{i}] must be two non-empty strings, got {p!r}")
        lr = self.lr if lr is None else lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 \
                or not math.isfinite(lr):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        lr = float(lr)
        # Fixed lengths, and the pair count padded to a bucket (padding masked out of the
        # loss): the gradient is traced once per bucket, not once per batch shape.
        n = len(pairs)
        b = next((x for x in _BATCH_BUCKETS if x >= n), n)
        padded = list(pairs) + [pairs[0]] * (b - n)
        valid = np.arange(b) < n
        qi, qm = self.model.tokenize([p[0] for p in padded], pad_to=self.query_tokens)
        pi, pm = self.model.tokenize([p[1] for p in padded], pad_to=self.doc_tokens)
        with self._write:
            weights = self._merged.weights  # no move happens while the writer holds the lock
            loss, grads = self._grad(tuple(weights[n] for n in self.shapes), self.model.params,
                                     jnp.asarray(qi), jnp.asarray(qm), jnp.asarray(pi),
                                     jnp.asarray(pm), jnp.asarray(valid))
            update = {}
            for name, g in zip(self.shapes, grads):
                g = np.asarray(g).ravel()
                k = max(1, int(self.update_fraction * g.size))
                top = np.sort(np.argpartition(np.abs(g), g.size - k)[g.size - k:])
                cols = self.shapes[name][1]
                update[name] = (top // cols, top % cols, (-lr * g[top]).astype(np.float32))
            self._check_outputs(update, qi, qm, f"lr = {lr!r}")
            out = self._commit(update)
        return {"step": out["step"], "loss": float(loss), "changes": out["changes"],
                "swap_ms": out["swap_ms"]}

    def commit(self, update: dict[str, tuple]) -> dict[str, Any]:
        """Commit one step of sparse changes and serve it: ``update[name]`` is ``(rows, cols,
        deltas)`` or ``(rows, cols, deltas, reset)``, as for
        :meth:`~hyprvdb.TemporalGroup.store_deltas` (what ``adapt`` computes, or what another
        learner wrote). Returns ``{"step", "changes", "swap_ms"}``; the step is durable, and
        served, when this returns. A step that would make the model's embeddings non-finite
        is refused with ``ValueError`` and nothing is committed."""
        self._learning("commit")
        with self._write:
            ids, mask = self.model.tokenize(_PROBE)
            self._check_outputs(update, ids, mask, "the update")
            return self._commit(update)

    def _check_outputs(self, update: dict[str, tuple], ids: np.ndarray, mask: np.ndarray,
                       what: str) -> None:
        """Refuse a step whose values, or whose embeddings of ``ids`` (the live weights plus
        the step as sparse deltas, before anything is committed), are not finite."""
        deltas = {}
        for name, item in update.items():
            if name not in self.shapes:
                raise KeyError(f"no adapted matrix {name!r}")
            if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
                raise TypeError(f"update[{name!r}] must be (rows, cols, deltas[, reset]), got "
                                f"{type(item).__name__}")
            d = np.asarray(item[2], np.float32)
            if not np.isfinite(d).all():
                raise ValueError(f"{what}: the step's changes of {name!r} are not finite; "
                                 "nothing was committed")
            if len(item) == 4 and np.asarray(item[3]).any():
                continue  # resets: the history's own checks judge the resulting values
            if len(d):
                deltas[name] = hj.SparseDelta.from_coo(item[0], item[1], d, self.shapes[name])
        with self._lock.reading():
            emb = self._forward(self.model.params, deltas, ids, mask)
        if not np.isfinite(emb).all():
            top = max((float(np.abs(np.asarray(u[2], np.float32)).max())
                       for u in update.values() if len(u[2])), default=0.0)
            raise ValueError(f"{what}: the step would make the model's embeddings non-finite "
                             f"(its largest change is {top:.3g}); nothing was committed")

    def _commit(self, update: dict[str, tuple]) -> dict[str, Any]:
        with self._history_lock:
            t = self.history.latest + 1
            self.history.store_deltas(t, update)  # durable once this returns; checks it all
        changed = {}
        for name, item in update.items():
            cols = self.shapes[name][1]
            changed[name] = np.unique(np.asarray(item[0], np.int64) * cols
                                      + np.asarray(item[1], np.int64))
        swap = time.perf_counter()
        with self._lock.writing():
            self._move(t, changed)
        self.metrics.last_swap_seconds = time.perf_counter() - swap
        self.metrics.adapt_steps += 1
        # Served from here on; the newly reached coordinates' pretrained values join the
        # support now, while requests run, rather than on the next swap's path.
        self._merged.settle()
        return {"step": t, "changes": int(sum(len(c) for c in changed.values())),
                "swap_ms": self.metrics.last_swap_seconds * 1e3}

    def rollback(self, t: int) -> int:
        """Serve (and continue from) step ``t``; later steps are discarded. Rewrites only the
        weights the discarded steps changed."""
        self._learning("rollback")
        with self._write, self._lock.writing():
            with self._history_lock:
                step = self.history.resolve(t)
                changed = self._merged.changed_since(step)  # before the steps are dropped
                self.history.rollback(step)
            self._move(step, changed)
        return step

    def close(self) -> None:
        """Stop following, and close the history (after the requests in flight)."""
        if self._follower is not None:
            self._follower.stop()
        with self._lock.writing():
            self.history.close()

    def poll(self) -> list[int]:
        """Apply the steps committed to the followed history since the last poll now (the
        background thread does this every ``follow_interval`` seconds); returns them."""
        if self._follower is None:
            raise ValueError("poll: this encoder does not follow a history (follow=True)")
        return self._follower.poll()

    # ---------------------------------------------------------------- internals
    def _learning(self, what: str) -> None:
        if self._follower is not None:
            raise ValueError(f"{what}: this encoder follows {self.history.path!r} (read-only): "
                             f"it serves the steps the history's writer commits")

    def _followed(self) -> None:
        """Once the follower moved the weights (inside its hold of the weights lock, so that
        no forward pass sees the donated arrays): publish them."""
        self._publish()
        with self._corrections_lock:
            self._corrections.clear()

    def _move(self, step: int, changed: dict[str, np.ndarray]) -> None:
        """Bring the live weights to ``step`` (the caller holds the weights for writing, so
        no forward pass reads them meanwhile)."""
        with self._history_lock:
            self._merged.move_to(step, changed)
            self._publish()
        with self._corrections_lock:
            self._corrections.clear()

    def _publish(self) -> None:
        """The model's params hold the live weights (the old arrays were donated)."""
        for name, w in self._merged.weights.items():
            self.model.params[f"encoder.{name}.weight"] = w

    def _mixed_steps(self, steps: list, live: int) -> tuple[list[int], tuple]:
        for i, t in enumerate(steps):
            if t is not None and (isinstance(t, (bool, np.bool_))
                                  or not isinstance(t, (int, np.integer))):
                raise TypeError(f"steps[{i}] must be an int or None, got {t!r}")
        with self._history_lock:
            served = [live if t is None else self.history.resolve(int(t)) for t in steps]
        return served, self._segments(served, live,
                                      lambda s: self._correction(s, live))

    def _mixed_adapters(self, adapters: list, live: int) -> tuple[list, tuple]:
        for i, a in enumerate(adapters):
            if a is not None and a not in self._adapters:
                raise KeyError(f"adapters[{i}] = {a!r} is not an added adapter (add_adapter); "
                               f"added: {sorted(self._adapters)}")
        keys = [live if a is None else a for a in adapters]
        return list(adapters), self._segments(keys, live,
                                              lambda a: self._adapter_correction(a, live))

    def _segments(self, keys: list, live: Any, correction: Any) -> tuple[np.ndarray, dict]:
        """Segment per text and each layer's deltas per segment (the distinct keys other than
        the live one; their count padded to a power of two with empty deltas, so that jitted
        shapes repeat)."""
        distinct = list(dict.fromkeys(k for k in keys if k != live))
        seg = np.array([-1 if k == live else distinct.index(k) for k in keys], np.int32)
        corr = [correction(k) for k in distinct]
        n = 1 << max(0, len(distinct) - 1).bit_length()
        parts = {name: [c.get(name) or self._empty(name) for c in corr]
                 + [self._empty(name)] * (n - len(corr)) for name in self.shapes}
        return seg, parts

    def _empty(self, name: str) -> hj.SparseDelta:
        shape = self.shapes[name]
        if shape not in self._empties:
            self._empties[shape] = hj.SparseDelta.from_coo([], [], [], shape, capacity=256)
        return self._empties[shape]

    def _adapter_correction(self, name: str, live: int) -> dict[str, hj.SparseDelta]:
        """``S_a - S_live`` per layer: what takes the live weights to the adapter's."""
        def build() -> dict[str, hj.SparseDelta]:
            coo = self._adapters[name]
            deltas = {}
            for layer, shape in self.shapes.items():
                with self._history_lock:
                    r, c, v = self.history[layer].active_weights(live)
                live_idx = r * shape[1] + c
                a_idx, a_val = coo.get(layer, (np.zeros(0, np.int64), np.zeros(0, np.float32)))
                idx = np.union1d(live_idx, a_idx)
                d = np.zeros(len(idx), np.float32)
                d[np.searchsorted(idx, a_idx)] += a_val
                d[np.searchsorted(idx, live_idx)] -= v.astype(np.float32)
                keep = d != 0
                if keep.any():
                    deltas[layer] = _padded(idx[keep] // shape[1], idx[keep] % shape[1],
                                            d[keep], shape)
            return deltas
        return self._cached((("adapter", name), live), build)

    def _correction(self, step: int, live: int) -> dict[str, hj.SparseDelta]:
        """The sparse deltas that take the live weights to ``step`` (kept for the few past
        steps asked most recently; called with the weights held for reading)."""
        def build() -> dict[str, hj.SparseDelta]:
            with self._history_lock:
                parts = self._merged.window_correction(step)
            return {name: _padded(r, c, v, self.shapes[name], step)
                    for name, (r, c, v) in parts.items() if len(r)}
        return self._cached((step, live), build)

    def _cached(self, key: tuple, build: Any) -> dict[str, hj.SparseDelta]:
        """The corrections under ``key``, built once and kept for the most recent keys."""
        with self._corrections_lock:
            if key in self._corrections:
                self._corrections.move_to_end(key)
                return self._corrections[key]
        deltas = build()
        with self._corrections_lock:
            self._corrections[key] = deltas
            while len(self._corrections) > _CORRECTIONS_KEPT:
                self._corrections.popitem(last=False)
        return deltas

    def _forward(self, params: dict, deltas: dict, ids: np.ndarray, mask: np.ndarray,
                 mixed: tuple[np.ndarray, dict] | None = None) -> np.ndarray:
        """One forward pass per 256 texts, each padded to a batch bucket so that jitted
        shapes repeat. ``mixed``: (segment per text, {layer: [SparseDelta per segment]})."""
        out = []
        for s in range(0, len(ids), _BATCH_BUCKETS[-1]):
            i, m = ids[s:s + _BATCH_BUCKETS[-1]], mask[s:s + _BATCH_BUCKETS[-1]]
            n = len(i)
            b = next(x for x in _BATCH_BUCKETS if x >= n)
            if b > n:
                i = np.concatenate([i, np.zeros((b - n, i.shape[1]), i.dtype)])
                m = np.concatenate([m, np.zeros((b - n, m.shape[1]), m.dtype)])
                m[n:, 0] = 1
            d = deltas
            if mixed is not None:
                seg = np.full(b, -1, np.int32)
                seg[:n] = mixed[0][s:s + n]
                d = {name: hj.MixedDeltas(parts, jnp.asarray(seg))
                     for name, parts in mixed[1].items()}
            emb = self._embed(params, d, jnp.asarray(i), jnp.asarray(m), jnp.float32(1.0))
            out.append(np.asarray(emb)[:n])
        self.metrics.count_batch()
        return out[0] if len(out) == 1 else np.concatenate(out)


def _open_history(history: str | os.PathLike | None, shapes: dict[str, tuple[int, int]],
                  follow: bool) -> TemporalGroup:
    """The encoder's history: loaded (read-only when following), created where none is."""
    if history is None:
        return TemporalGroup(shapes)
    exists = True
    if not is_url(history):
        exists = os.path.exists(history)
    if exists or follow:
        try:
            g = TemporalGroup.load(history, mode="r" if follow else "a")
        except FileNotFoundError:
            if follow or not is_url(history):
                raise
            exists = False
        else:
            if dict((k, g[k].shape) for k in g) != shapes:
                g.close()
                raise ValueError(f"{os.fspath(history)!r} holds histories of other matrices "
                                 "than this model's linear layers")
            return g
    g = TemporalGroup(shapes)
    g.save(history)
    return g


def _padded(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int],
            step: int | None = None) -> hj.SparseDelta:
    """A correction's SparseDelta, padded to a power of two of at least 256 entries: the
    shapes repeat from step to step, so the jitted forward pass is not traced again."""
    cap = max(256, 1 << (len(rows) - 1).bit_length())
    return hj.SparseDelta.from_coo(rows, cols, values, shape, step=step, capacity=cap)
