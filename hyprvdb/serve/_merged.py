"""MergedWeights: a model's weights with a history's adapter merged in, kept at one step and
moved between steps by writing, in place, only the weights a move changes.

At step t every adapted matrix holds ``W = dtype(f32(W_pre) + f32(f32(scale) * S_t))`` where
``W_pre`` is the pretrained weight and ``S_t`` the adapter's accumulated sum at t (the
history's float32 state). A move from step a to step b rewrites the coordinates that have a
stored change in the window between them (for a commit: the coordinates the step changed),
each computed again from ``W_pre`` and ``S_b`` — never by adding a delta onto a rounded weight
— so the weights are bit for bit those of a merge from scratch, after any sequence of
commits, rollbacks and jumps, in float32 as in bfloat16.

How a move runs without waiting for the device: the host computes ``f32(scale) * S_b`` (numpy,
so the product is rounded on its own: no fused multiply-add can change the bits on any
backend) and, where it keeps it, ``W_pre``; one jitted program, whose weight buffers are
donated (XLA updates them in place, no second copy of the model), takes ``W_pre`` for those
coordinates and the current weight for the others (never written before, so still
pretrained), adds the product in float32, rounds to the weights' dtype, writes, and hands
back the values it found. Those join the kept ``W_pre`` (the support: every coordinate the
adapter has reached) at the next move, when they have long arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..history import TemporalGroup

__all__ = ["MergedWeights", "merge_from_scratch"]

_DTYPES = ("float32", "bfloat16", "float16")


def merge_from_scratch(pre: np.ndarray, delta: np.ndarray, scale: float) -> np.ndarray:
    """The rule a merge follows, on whole arrays: ``dtype(f32(pre) + f32(f32(scale) *
    f32(delta)))`` with ``pre``'s dtype (the reference the in-place moves are held equal to).

    Examples
    --------
    >>> import numpy as np, hyprvdb
    >>> from hyprvdb.serve import merge_from_scratch
    >>> merge_from_scratch(np.ones(2, np.float32), np.array([0.5, 0.0], np.float32), 2.0).tolist()
    [2.0, 1.0]
    """
    out = pre.astype(np.float32) + np.float32(scale) * delta.astype(np.float32)
    return out.astype(pre.dtype)


def _split(flat: Any, sizes: tuple[int, ...]) -> list:
    out, at = [], 0
    for n in sizes:
        out.append(flat[at:at + n])
        at += n
    return out


def _update(weights: tuple, idx: Any, pre: Any, known: Any, product: Any,
            sizes: tuple[int, ...]) -> tuple[tuple, Any]:
    """Every matrix's (padded) entries in one array each, split by the static sizes; padding
    carries an index past the end, which the writes drop. Returns the new weights and the
    values found at the written coordinates."""
    new, found = [], []
    for w, i, p, k, s in zip(weights, _split(idx, sizes), _split(pre, sizes),
                             _split(known, sizes), _split(product, sizes)):
        flat = w.reshape(-1)
        old = flat.at[i].get(mode="fill", fill_value=0)
        base = jnp.where(k, p, old).astype(jnp.float32)
        new.append(flat.at[i].set((base + s).astype(w.dtype), mode="drop").reshape(w.shape))
        found.append(old)
    return tuple(new), jnp.concatenate(found)


_update_jit = jax.jit(_update, donate_argnums=0, static_argnums=5)


class MergedWeights:
    """The serving weights of a :class:`~hyprvdb.TemporalGroup`'s matrices at one step.

    Parameters
    ----------
    weights : mapping of name to jax.Array
        The pretrained weights of the group's matrices (one dtype: float32, bfloat16 or
        float16; each of its member's shape). They are taken over: moves donate them, so the
        caller keeps using :attr:`weights`, never the arrays it passed.
    history : TemporalGroup
        The adapter's history; every name of ``weights`` must be a member.
    scale : float
        ``W = W_pre + scale * S``.
    step : int, optional
        The step to start at (default: the newest).

    Examples
    --------
    >>> import hyprvdb
    >>> import numpy as np, jax.numpy as jnp, hyprvdb
    >>> from hyprvdb.serve import MergedWeights
    >>> g = hyprvdb.TemporalGroup({"w": (2, 3)})
    >>> g.store_deltas(1, {"w": ([0], [2], [0.5])})
    1
    >>> m = MergedWeights({"w": jnp.ones((2, 3), jnp.float32)}, g)
    >>> np.asarray(m.weights["w"]).tolist()
    [[1.0, 1.0, 1.5], [1.0, 1.0, 1.0]]
    >>> m.move_to(0)
    0
    >>> np.asarray(m.weights["w"])[0, 2].item()
    1.0
    """

    def __init__(self, weights: Mapping[str, Any], history: TemporalGroup, *,
                 scale: float = 1.0, step: int | None = None) -> None:
        if not isinstance(history, TemporalGroup):
            raise TypeError(f"history must be a TemporalGroup, got {type(history).__name__}")
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError("weights must be a non-empty mapping of member name to array")
        members = set(history)
        for name, w in weights.items():
            if name not in members:
                raise KeyError(f"weights[{name!r}]: the history has no member {name!r}; "
                               f"members: {list(history)}")
            shape = history[name].shape
            if tuple(getattr(w, "shape", ())) != shape:
                raise ValueError(f"weights[{name!r}] has shape {tuple(getattr(w, 'shape', ()))}"
                                 f", the history's {name!r} is {shape}")
            if str(getattr(w, "dtype", "")) not in _DTYPES:
                raise TypeError(f"weights[{name!r}] must be one of {_DTYPES}, got dtype "
                                f"{getattr(w, 'dtype', type(w).__name__)}")
            if shape[0] * shape[1] >= 2**31:
                raise ValueError(f"weights[{name!r}] has {shape[0] * shape[1]} entries; the "
                                 f"in-place update indexes at most 2**31 - 1")
        dtypes = {str(w.dtype) for w in weights.values()}
        if len(dtypes) != 1:
            raise TypeError(f"weights must share one dtype, got {sorted(dtypes)}")
        self.scale = np.float32(scale)
        if not np.isfinite(self.scale):
            raise ValueError(f"scale = {scale!r} is not finite")
        self._history = history
        self._names = list(weights)
        self._w = {n: jnp.asarray(weights[n]) for n in self._names}
        self._dtype = np.dtype(self._w[self._names[0]].dtype)
        # One index space over all matrices: matrix k's weight i is offset[k] + i.
        sizes = np.array([self._w[n].size for n in self._names], np.int64)
        self._offset = dict(zip(self._names, np.concatenate([[0], np.cumsum(sizes)[:-1]])))
        self._sizes = dict(zip(self._names, sizes.tolist()))
        self._support = (np.zeros(0, np.int64), np.zeros(0, self._dtype))
        self._pending: tuple | None = None  # the last move's found values, still on the device
        self._absorbing = threading.Lock()
        self._nonfinite = np.zeros(0, np.int64)  # flat indices whose live value is NaN or inf
        self._step: int | None = None  # None: the pretrained weights, no adapter yet
        self.move_to(history.latest if step is None else step)

    @property
    def step(self) -> int:
        """The step the weights hold."""
        assert self._step is not None
        return self._step

    @property
    def weights(self) -> dict[str, Any]:
        """The current arrays (valid until the next move, which donates them)."""
        return dict(self._w)

    @property
    def finite(self) -> bool:
        """Whether every weight the adapter has written is finite."""
        self._absorb()
        return not len(self._nonfinite)

    def support_size(self) -> int:
        """Coordinates whose pretrained value is kept (those the adapter has ever reached)."""
        self._absorb()
        return len(self._support[0])

    def support_nbytes(self) -> int:
        """Host bytes held by the kept pretrained values and their indices."""
        self._absorb()
        return self._support[0].nbytes + self._support[1].nbytes

    def changed_since(self, t: int) -> dict[str, np.ndarray]:
        """Sorted linear indices, per matrix, whose value may differ between step ``t`` and
        the current step: those with a stored change in the window between them."""
        h = self._history
        lo, hi = sorted((h.resolve(t), self.step))
        out = {}
        for name in self._names:
            rows, cols = h[name].changed_between(lo, hi)
            out[name] = rows * h[name].shape[1] + cols
        return out

    def move_to(self, t: int, changed: Mapping[str, np.ndarray] | None = None) -> int:
        """Bring the weights to step ``t`` (resolved by the history); returns the step.

        ``changed`` (sorted distinct linear indices per matrix) are the coordinates to
        rewrite; by default those with a stored change between the current step and ``t``
        (every active weight on the first move). Pass it when the history has already dropped
        the window (a rollback discards the steps it undoes).
        """
        h = self._history
        step = h.resolve(t)
        if changed is None:
            if self._step is None:
                changed = {}
                for n in self._names:
                    r, c, _ = h[n].active_weights(step)
                    changed[n] = r * h[n].shape[1] + c
            else:
                changed = self.changed_since(step)
        names = [n for n in self._names if n in changed and len(changed[n])]
        if names:
            self._absorb()
            local = {n: np.asarray(changed[n], np.int64) for n in names}
            s = h.get_weights(local, step, check=False)
            flat = np.concatenate([local[n] + self._offset[n] for n in names])
            counts = {n: len(local[n]) for n in names}
            product = np.float32(self.scale) * np.concatenate([s[n] for n in names])
            self._write(flat, product, counts)
        self._step = step
        return step

    def reached(self) -> dict[str, np.ndarray]:
        """Sorted linear indices, per matrix, of every coordinate the adapter has written."""
        self._absorb()
        sup = self._support[0]
        out = {}
        for name in self._names:
            lo, hi = np.searchsorted(sup, [self._offset[name],
                                           self._offset[name] + self._sizes[name]])
            out[name] = sup[lo:hi] - self._offset[name]
        return out

    def move_to_latest(self, *, rewritten: bool = False) -> int:
        """Bring the weights to the history's newest step after the history grew (a
        follower's refresh). ``rewritten``: the history was rolled back or pruned meanwhile,
        so the window from the current step may no longer be stored; then every coordinate
        the adapter has reached, and every active one at the newest step, is rewritten."""
        h = self._history
        if not rewritten:
            return self.move_to(h.latest)
        changed = self.reached()
        for name in self._names:
            r, c, _ = h[name].active_weights(h.latest)
            changed[name] = np.union1d(changed[name], r * h[name].shape[1] + c)
        return self.move_to(h.latest, changed)

    def window_correction(self, t: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``S_t - S_current`` per matrix, as ``(rows, cols, float32 values)`` over the window's
        coordinates: what serving step ``t`` adds, as a sparse delta, to the current weights."""
        h = self._history
        step = h.resolve(t)
        out = {}
        for name, i in self.changed_since(step).items():
            cols = h[name].shape[1]
            r, c = i // cols, i % cols
            d = h[name].get_weights(r, c, step) - h[name].get_weights(r, c, self.step)
            keep = d != 0
            out[name] = (r[keep], c[keep], d[keep])
        return out

    # ---------------------------------------------------------------- internals
    def _layout(self, counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Where each entry goes in the padded concatenation the jitted program takes (every
        matrix padded to its bucket), the local-index shift of each entry, and the sizes."""
        # One padded size for every matrix, the bucket of the largest count: the program is
        # compiled once per bucket, not once per combination of the matrices' buckets (a
        # follower's poll brings any number of steps, so the combinations would not repeat).
        sizes = (_bucket(max(counts.values(), default=0)),) * len(self._names)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        present = [k for k, n in enumerate(self._names) if counts.get(n)]
        n_of = np.array([counts[self._names[k]] for k in present])
        first = np.concatenate([[0], np.cumsum(n_of)[:-1]])
        dest = np.arange(int(n_of.sum())) + np.repeat(start[present] - first, n_of)
        shift = np.repeat([self._offset[self._names[k]] for k in present], n_of)
        return dest, shift, sizes

    def _write(self, flat: np.ndarray, product: np.ndarray, counts: dict[str, int]) -> None:
        dest, shift, sizes = self._layout(counts)
        total = sum(sizes)
        idx = np.repeat(np.array([self._sizes[n] for n in self._names], np.int32), sizes)
        idx[dest] = flat - shift  # padding: past each matrix's end, dropped by the write
        sup_i, sup_v = self._support
        pos = np.searchsorted(sup_i, flat)
        known = pos < len(sup_i)
        known[known] = sup_i[pos[known]] == flat[known]
        pre = np.zeros(total, self._dtype)
        pre[dest[known]] = sup_v[pos[known]]
        kn = np.zeros(total, bool)
        kn[dest] = known
        prod = np.zeros(total, np.float32)
        prod[dest] = product
        if known.any():  # the values written where W_pre is known: checked now, on the host
            self._check_finite(flat[known], (sup_v[pos[known]].astype(np.float32)
                                             + product[known]).astype(self._dtype))
        new, found = _update_jit(tuple(self._w[n] for n in self._names), idx, pre, kn, prod,
                                 sizes)
        self._w = dict(zip(self._names, new))
        if not known.all():
            self._pending = (flat[~known], dest[~known], product[~known], found)

    def settle(self) -> None:
        """Take the last move's newly reached coordinates into the support now (waiting for
        the device's update to finish). The next move does it itself when needed; a server
        calls this after publishing a step, so that the work leaves the next swap's path."""
        self._absorb()

    def _absorb(self) -> None:
        """The last move's newly reached coordinates join the support, with the pretrained
        values the device found there. One thread at a time (a health check may ask while a
        commit settles): a move never reads a support that is half taken in."""
        with self._absorbing:
            if self._pending is None:
                return
            flat, dest, product, found = self._pending
            pre = np.asarray(found)[dest].astype(self._dtype)
            sup_i, sup_v = self._support
            at = np.searchsorted(sup_i, flat)  # a sorted merge, no sort
            self._support = (np.insert(sup_i, at, flat), np.insert(sup_v, at, pre))
            self._check_finite(flat, (pre.astype(np.float32) + product).astype(self._dtype))
            self._pending = None

    def _check_finite(self, flat: np.ndarray, values: np.ndarray) -> None:
        bad = ~np.isfinite(values.astype(np.float32))
        if bad.any() or len(self._nonfinite):
            self._nonfinite = np.union1d(np.setdiff1d(self._nonfinite, flat), flat[bad])


def _bucket(n: int) -> int:
    """Padded sizes for the jitted program's shapes: powers of two from 16, so that moves of
    similar size reuse one compiled program."""
    return max(16, 1 << max(0, n - 1).bit_length())
