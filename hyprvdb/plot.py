"""Charts of a weight history: :func:`plot_history` draws what ``hyprvdb plot`` saves.

matplotlib is imported on the first call, never with :mod:`hyprvdb`, and draws with its Agg
canvas on a figure of its own: no pyplot, so the caller's backend and figures stay untouched.
The image has a fixed size, ``WIDTH_PX`` by ``PANEL_HEIGHT_PX`` per panel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .history import TemporalAdapter, TemporalGroup

__all__ = ["plot_history", "DPI", "WIDTH_PX", "PANEL_HEIGHT_PX", "SHOWN_MATRICES",
           "MAX_STATE_POINTS"]

DPI = 100
WIDTH_PX = 1100
PANEL_HEIGHT_PX = 360
SHOWN_MATRICES = 7     # the matrices with the most changes are drawn; the rest sum to "others"
MAX_STATE_POINTS = 300  # active weights are counted at most at this many steps, evenly spread


def plot_history(history: TemporalGroup | TemporalAdapter, path: str | os.PathLike, *,
                 weight: tuple[str, int, int] | None = None) -> None:
    """Save a PNG chart of a history: its changes per step and its active weights over time,
    per matrix, and with ``weight`` one weight's value at every step.

    Parameters
    ----------
    history : TemporalGroup or TemporalAdapter
        What to draw; a TemporalAdapter is drawn as a group of one.
    path : str or os.PathLike
        The ``.png`` file to write. The image is ``WIDTH_PX`` wide and ``PANEL_HEIGHT_PX``
        high per panel (two panels, three with ``weight``).
    weight : (name, row, col), optional
        A weight of matrix ``name`` whose trajectory is drawn in a third panel.

    Notes
    -----
    Panel one stacks the stored changes of each step (resets included) by matrix; where tiers
    merged steps, a step's bar spans the steps merged into it. Panel two stacks the active
    weights (nonzero at the step) by matrix, counted at up to ``MAX_STATE_POINTS`` steps
    spread evenly. Past ``SHOWN_MATRICES`` + 1 matrices, those with the most changes are drawn
    on their own and the rest as one series, "others". The third panel draws the value of
    ``weight`` after every step (:meth:`TemporalAdapter.weight_history`), a dot at each
    stored change.

    Examples
    --------
    >>> import os, tempfile
    >>> import hyprvdb
    >>> from hyprvdb.plot import plot_history
    >>> g = hyprvdb.TemporalGroup({"q": (4, 4), "v": (4, 8)})
    >>> g.store_deltas(1, {"q": ([1], [1], [0.5])})
    1
    >>> g.store_deltas(2, {"q": ([1], [1], [0.25]), "v": ([0], [7], [1.0])})
    2
    >>> path = os.path.join(tempfile.mkdtemp(), "history.png")
    >>> plot_history(g, path, weight=("q", 1, 1))
    >>> os.path.getsize(path) > 0
    True
    """
    members = _members(history)
    path = _png_path(path)
    picked = None if weight is None else _weight(members, weight)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"plot_history needs matplotlib (pip install matplotlib): {exc}") \
            from None

    steps = np.asarray(history.steps, np.int64)
    changes = {name: _changes_per_step(h, steps) for name, h in members.items()}
    shown, others = _split(changes)
    at = _state_steps(steps)
    active = {name: np.array([len(h.active_weights(int(s))[2]) for s in at], np.int64)
              for name, h in members.items()}

    panels = 2 if picked is None else 3
    fig = Figure(figsize=(WIDTH_PX / DPI, panels * PANEL_HEIGHT_PX / DPI), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1)
    colors = _colors(len(shown)) + (["0.6"] if others else [])
    series = [(name, [name]) for name in shown] + ([("others", others)] if others else [])
    labels = [name if len(names) == 1 else f"{len(names)} others" for name, names in series]

    ax = axes[0]
    x = steps[1:]
    if len(x):
        # A step's bar covers the steps it stands for: itself, and where tiers merged steps,
        # those since the previous visible step.
        edges = steps + 0.5
        bottom = np.zeros(len(x), np.int64)
        for color, (_, names) in zip(colors, series):
            top = bottom + sum(changes[n] for n in names)
            ax.stairs(top, edges, baseline=bottom, fill=True, color=color, linewidth=0)
            bottom = top
    else:
        ax.text(0.5, 0.5, "no steps after the base", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    total = int(sum(c.sum() for c in changes.values()))
    ax.set_title(f"stored changes per step ({total:,} in {len(x):,} steps after the base, "
                 f"{len(members)} {'matrix' if len(members) == 1 else 'matrices'})",
                 loc="left", fontsize=10)
    ax.set_ylabel("changes")
    ax.set_xlabel("step")

    ax = axes[1]
    ys = [sum(active[n] for n in names) for _, names in series]
    bands = ax.stackplot(at, *ys, colors=colors, linewidth=0)
    now = int(sum(y[-1] for y in ys))
    ax.set_title(f"active weights (nonzero), stacked by matrix: {now:,} at step {int(at[-1])}; "
                 f"counted at {len(at):,} of {len(steps):,} steps", loc="left", fontsize=10)
    ax.set_ylabel("active weights")
    ax.set_xlabel("step")
    ax.set_ylim(bottom=0)
    # The legend reads top down, as the bands are stacked.
    fig.legend(bands[::-1], labels[::-1], loc="outside right upper", fontsize=8, frameon=False)

    if picked is not None:
        name, row, col = picked
        _draw_weight(axes[2], members[name], name, row, col, int(steps[0]), int(steps[-1]))
    for ax in axes:  # one step axis for every panel, the base's step included
        ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
    fig.savefig(path, dpi=DPI)


# -------------------------------------------------------------------- checks
def _members(history: Any) -> dict[str, TemporalAdapter]:
    if isinstance(history, TemporalGroup):
        return dict(history.items())
    if isinstance(history, TemporalAdapter):
        return {history.name: history}
    raise TypeError(f"history must be a TemporalGroup or a TemporalAdapter, got "
                    f"{type(history).__name__}")


def _png_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = os.fspath(path)
    if not isinstance(p, str) or not p.lower().endswith(".png"):
        raise ValueError(f"path must name a .png file, got {p!r}")
    return p


def _weight(members: dict[str, TemporalAdapter], weight: Any) -> tuple[str, int, int]:
    if not isinstance(weight, Sequence) or isinstance(weight, str) or len(weight) != 3:
        raise TypeError(f"weight must be (name, row, col), got {weight!r}")
    name, row, col = weight
    if name not in members:
        raise ValueError(f"weight names matrix {name!r}, which the history does not hold; "
                         f"matrices: {list(members)}")
    rows, cols = members[name].shape
    for what, x, n in (("row", row, rows), ("col", col, cols)):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"weight {what} must be an int, got {type(x).__name__} {x!r}")
        if not 0 <= x < n:
            raise IndexError(f"weight {what} = {x} is out of range for matrix {name!r} "
                             f"({rows} x {cols})")
    return name, int(row), int(col)


# -------------------------------------------------------------------- data
def _changes_per_step(h: TemporalAdapter, steps: np.ndarray) -> np.ndarray:
    """Stored changes at each step after the base (one count per ``steps[1:]``)."""
    t = h.change_log().t
    after = steps[1:]
    if not len(after):
        return np.zeros(0, np.int64)
    # Where tiers merged steps, a change not yet restamped belongs to the visible step that
    # ends its span: the first visible step at or after it.
    at = np.searchsorted(after, t, side="left")
    return np.bincount(at[at < len(after)], minlength=len(after)).astype(np.int64)


def _split(changes: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """The matrices drawn on their own (most changes first) and those summed as "others"."""
    order = sorted(changes, key=lambda n: -int(changes[n].sum()))
    if len(order) <= SHOWN_MATRICES + 1:
        return order, []
    return order[:SHOWN_MATRICES], order[SHOWN_MATRICES:]


def _state_steps(steps: np.ndarray) -> np.ndarray:
    if len(steps) <= MAX_STATE_POINTS:
        return steps
    pick = np.unique(np.linspace(0, len(steps) - 1, MAX_STATE_POINTS).round().astype(np.int64))
    return steps[pick]


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _draw_weight(ax: Any, h: TemporalAdapter, name: str, row: int, col: int, first: int,
                 last: int) -> None:
    points = h.weight_history(row, col)
    ts = [t for t, _ in points]
    vs = [v for _, v in points]
    changed = len(ts) - (1 if ts and ts[0] == first else 0)
    line_t, line_v = ts, vs
    if not ts or ts[0] != first:  # not in the base: 0 until its first change
        line_t, line_v = [first] + ts, [0.0] + vs
    ax.step(line_t + [last], line_v + [line_v[-1]], where="post", color="tab:blue",
            linewidth=1.5)
    ax.plot(ts, vs, "o", color="tab:blue", markersize=3)
    ax.axhline(0.0, color="0.7", linewidth=0.8)
    ax.set_title(f"weight {name} [{row}, {col}]: value after each step ({changed} stored "
                 f"change{'' if changed == 1 else 's'})", loc="left", fontsize=10)
    ax.set_ylabel("value")
    ax.set_xlabel("step")
