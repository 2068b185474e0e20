"""MergedWeights: a model's weights with a history's adapter merged in, kept at one step and
moved between steps by writing, in place, only the weights a move changes.

At step t every adapted matrix holds ``W = dtype(f32(W_pre) + f32(scale) * S_t)`` where
``W_pre`` is the pretrained weight and ``S_t`` the adapter's accumulated sum at t (the
history's float32 state). A move from step a to step b rewrites the coordinates that have a
stored change in the window between them (for a commit: the coordinates the step changed),
each computed again from ``W_pre`` and ``S_b`` — never by adding a delta onto a rounded weight
— so the weights are bit for bit those of a merge from scratch, after any sequence of
commits, rollbacks and jumps, in float32 as in bfloat16.

``W_pre`` is kept only where the adapter has ever been: the support, read from the weights
the first time a coordinate is written. The values are computed on the host with numpy (no
fused multiply-add, so the same bits on every backend) and written by one jitted scatter per
move whose input buffers are donated: XLA updates the weights in place, so a move needs no
second copy of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..history import TemporalGroup

__all__ = ["MergedWeights", "merge_from_scratch"]

_DTYPES = ("float32", "bfloat16", "float16")


def merge_from_scratch(pre: np.ndarray, delta: np.ndarray, scale: float) -> np.ndarray:
    """The rule a merge follows, on whole arrays: ``dtype(f32(pre) + f32(scale) * f32(delta))``
    with ``pre``'s dtype (the reference the in-place moves are held equal to)."""
    out = pre.astype(np.float32) + np.float32(scale) * delta.astype(np.float32)
    return out.astype(pre.dtype)


def _split(flat: Any, sizes: tuple[int, ...]) -> list:
    out, at = [], 0
    for n in sizes:
        out.append(flat[at:at + n])
        at += n
    return out


def _scatter(weights: tuple, idx: Any, vals: Any, sizes: tuple[int, ...]) -> tuple:
    # Every matrix's (padded) indices and values in one array each, split by the static
    # sizes; padding carries an index past the end, which mode="drop" skips.
    return tuple(w.reshape(-1).at[i].set(v, mode="drop").reshape(w.shape)
                 for w, i, v in zip(weights, _split(idx, sizes), _split(vals, sizes)))


def _gather(weights: tuple, idx: Any, sizes: tuple[int, ...]) -> Any:
    # One array back: one transfer to the host, whatever the number of matrices.
    return jnp.concatenate([w.reshape(-1).at[i].get(mode="fill", fill_value=0).astype(jnp.float32)
                            for w, i in zip(weights, _split(idx, sizes))])


_scatter_jit = jax.jit(_scatter, donate_argnums=0, static_argnums=3)
_gather_jit = jax.jit(_gather, static_argnums=2)


class MergedWeights:
    """The serving weights of a :class:`~hyprvdb.TemporalGroup`'s matrices at one step.

    Parameters
    ----------
    weights : mapping of name to jax.Array
        The pretrained weights of the group's matrices (float32, bfloat16 or float16, each of
        its member's shape). They are taken over: moves donate them, so the caller keeps using
        :attr:`weights`, never the arrays it passed.
    history : TemporalGroup
        The adapter's history; every name of ``weights`` must be a member.
    scale : float
        ``W = W_pre + scale * S``.
    step : int, optional
        The step to start at (default: the newest).

    Examples
    --------
    >>> import numpy as np, jax.numpy as jnp, hyprvdb
    >>> from hyprvdb.serve import MergedWeights
    >>> g = hyprvdb.TemporalGroup({"w": (2, 3)})
    >>> g.store_deltas(1, {"w": ([0], [2], [0.5])})
    1
    >>> m = MergedWeights({"w": jnp.ones((2, 3), jnp.float32)}, g)
    >>> np.asarray(m.weights["w"]).tolist()
    [[1.0, 1.0, 1.5], [1.0, 1.0, 1.0]]
    >>> m.move_to(0); np.asarray(m.weights["w"])[0, 2].item()
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
        return not len(self._nonfinite)

    def support_size(self) -> int:
        """Coordinates whose pretrained value is kept (those the adapter has ever reached)."""
        return len(self._support[0])

    def support_nbytes(self) -> int:
        """Host bytes held by the kept pretrained values and their indices."""
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
            local = {n: np.asarray(changed[n], np.int64) for n in names}
            s = h.get_weights(local, step, check=False)
            flat = np.concatenate([local[n] + self._offset[n] for n in names])
            counts = {n: len(local[n]) for n in names}
            values = merge_from_scratch(self._pretrained(flat, counts),
                                        np.concatenate([s[n] for n in names]), float(self.scale))
            bad = ~np.isfinite(values.astype(np.float32))
            if bad.any() or len(self._nonfinite):
                self._nonfinite = np.union1d(np.setdiff1d(self._nonfinite, flat), flat[bad])
            self._write(flat, values, counts)
        self._step = step
        return step

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
    def _layout(self, counts: dict[str, int], fill: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """Where each matrix's entries go in the padded concatenation the jitted programs
        take (every matrix padded to its bucket), and those sizes."""
        sizes = tuple(_bucket(counts.get(n, 0)) for n in self._names)
        start = dict(zip(self._names, np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()))
        dest = np.concatenate([np.arange(counts[n]) + start[n] for n in self._names
                               if counts.get(n)])
        return dest, sizes

    def _padded_local(self, flat: np.ndarray, counts: dict[str, int], fill_past_end: bool
                      ) -> tuple[np.ndarray, tuple[int, ...]]:
        """Local (per-matrix) int32 indices of ``flat``, padded per matrix: with the index
        past the matrix's end (dropped by the scatter) or 0 (a harmless gather)."""
        dest, sizes = self._layout(counts, 0)
        out = np.zeros(sum(sizes), np.int32)
        if fill_past_end:
            out[:] = np.repeat([self._sizes[n] for n in self._names], sizes)
        shift = np.concatenate([np.full(counts[n], self._offset[n]) for n in self._names
                                if counts.get(n)])
        out[dest] = flat - shift
        return out, sizes

    def _pretrained(self, flat: np.ndarray, counts: dict[str, int]) -> np.ndarray:
        """``W_pre`` at ``flat`` (sorted, distinct): kept values, and for coordinates not
        reached before, the current weights (untouched so far, so still pretrained), which
        then join the support. One gather for every matrix, one transfer back."""
        sup_i, sup_v = self._support
        pos = np.searchsorted(sup_i, flat)
        known = pos < len(sup_i)
        known[known] = sup_i[pos[known]] == flat[known]
        if not known.all():
            local, sizes = self._padded_local(flat, counts, fill_past_end=False)
            got = np.asarray(_gather_jit(tuple(self._w[n] for n in self._names), local, sizes))
            dest, _ = self._layout(counts, 0)
            new = ~known
            at = np.searchsorted(sup_i, flat[new])  # a sorted merge, no sort
            sup_i = np.insert(sup_i, at, flat[new])
            sup_v = np.insert(sup_v, at, got[dest][new].astype(self._dtype))
            self._support = (sup_i, sup_v)
            pos = np.searchsorted(sup_i, flat)
        return sup_v[pos]

    def _write(self, flat: np.ndarray, values: np.ndarray, counts: dict[str, int]) -> None:
        local, sizes = self._padded_local(flat, counts, fill_past_end=True)
        dest, _ = self._layout(counts, 0)
        vals = np.zeros(sum(sizes), self._dtype)
        vals[dest] = values
        new = _scatter_jit(tuple(self._w[n] for n in self._names), local, vals, sizes)
        self._w = dict(zip(self._names, new))


def _bucket(n: int) -> int:
    """Padded sizes for the jitted programs' shapes: powers of two from 16, so that moves of
    similar size reuse one compiled program."""
    return max(16, 1 << max(0, n - 1).bit_length())
