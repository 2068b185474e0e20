"""Helpers shared by the scripts under bench/: timing, tables, charts, JSON output, resident
memory.

Only the standard library and numpy are imported here, so that a benchmark's child processes
can import this module without paying for anything else; matplotlib is imported by
:func:`plot_bars` alone, when a script is given ``--plot``.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np


# ------------------------------------------------------------------------------ timing
def time_call(fn: Callable[..., Any], *, repeats: int = 5, warmup: int = 1,
              setup: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Time ``fn`` with ``time.perf_counter``: ``warmup`` untimed calls, then ``repeats`` timed.

    When ``setup`` is given it is called (untimed) before every call, warm-up included, and its
    result is passed to ``fn``; use it for state that each call must find fresh (an empty
    container to fill, say). Garbage collection is run before each timed call and disabled
    during it. Returns ``{"median_s", "min_s", "max_s", "times_s", "result"}`` where
    ``result`` is what the last call returned.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    result = None
    for _ in range(warmup):
        arg = setup() if setup is not None else None
        result = fn(arg) if setup is not None else fn()
        del arg
    times = []
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn(arg) if setup is not None else fn()
            t1 = time.perf_counter()
        finally:
            if was_enabled:
                gc.enable()
        times.append(t1 - t0)
        del arg
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times, "result": result}


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def strip_result(timing: dict[str, Any]) -> dict[str, Any]:
    """A :func:`time_call` answer without its ``result`` (for JSON output)."""
    return {k: v for k, v in timing.items() if k != "result"}


# ------------------------------------------------------------------------------ memory
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def rss_bytes() -> int:
    """Resident set size of this process (``VmRSS`` from ``/proc/self/status``), in bytes."""
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``VmHWM``), in bytes."""
    return _status_kb("VmHWM") * 1024


def _libc():
    import ctypes
    import ctypes.util
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def malloc_trim() -> bool:
    """Ask glibc malloc to give free memory back to the OS (``malloc_trim(0)``), so that RSS
    shows the pages in use rather than freed chunks the allocator keeps. False if unavailable."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def malloc_in_use_bytes() -> int | None:
    """Bytes malloc has handed out and not had back (glibc ``mallinfo2``: heap in use plus
    mmapped chunks); None where unavailable. Python objects in pymalloc arenas are not in it."""
    import ctypes
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None

    class _MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


# ------------------------------------------------------------------------------ output
def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                title: str | None = None, file: Any = None) -> None:
    """Print a plain-text table; numbers right-aligned, text left-aligned."""
    out = file if file is not None else sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r]
                                           for r in rows]
    numeric = [all(_looks_numeric(r[i]) for r in cells[1:] if r[i]) for i in range(len(headers))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        parts = [(c.rjust(w) if num else c.ljust(w))
                 for c, w, num in zip(r, widths, numeric)]
        return "  ".join(parts).rstrip()

    if title:
        print(title, file=out)
    print(line(cells[0]), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells[1:]:
        print(line(r), file=out)
    out.flush()


def _looks_numeric(s: str) -> bool:
    s = s.strip().rstrip("xX%")
    for suffix in (" s", " ms", " us", " B", " KiB", " MiB", " GiB"):
        if s.endswith(suffix):
            s = s[: -len(suffix)]
            break
    try:
        float(s.replace(",", ""))
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ charts
PLOT_DPI = 100
PLOT_WIDTH_PX = 1200
PLOT_PANEL_PX = 400


class BarPanel(NamedTuple):
    """One panel of :func:`plot_bars`: ``groups`` maps an x label (a workload, an operation) to
    ``{series: value}``, a bar per contender; a value of None (or a missing series) is a
    contender not measured there and draws no bar."""

    title: str
    ylabel: str
    groups: Mapping[str, Mapping[str, float | None]]
    log: bool = False


def check_plot_arg(ap: Any, path: str | None) -> None:
    """Refuse ``--plot PATH`` before a run that would fail at its end: PATH must name a .png
    file and matplotlib must import."""
    if path is None:
        return
    if not path.lower().endswith(".png"):
        ap.error(f"--plot must name a .png file, got {path!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        ap.error(f"--plot needs matplotlib (pip install matplotlib): {exc}")


def plot_bars(path: str, title: str, panels: Sequence[BarPanel]) -> None:
    """Save grouped bar charts, one panel under the other, as a PNG of ``PLOT_WIDTH_PX`` by
    ``PLOT_PANEL_PX`` per panel. A series (contender) keeps its colour in every panel; a
    group's bars are drawn in the order of its mapping, each carrying its value."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    # Every contender once, in the order the groups give them: a new one goes after the one
    # before it in its group, or last when it leads its group.
    series: list[str] = []
    for panel in panels:
        for values in panel.groups.values():
            before = None
            for s in (s for s, v in values.items() if v is not None):
                if s not in series:
                    series.insert(len(series) if before is None else before + 1, s)
                before = series.index(s)
    cmap = colormaps["tab10"]
    color = {s: cmap(i % 10) for i, s in enumerate(series)}
    fig = Figure(figsize=(PLOT_WIDTH_PX / PLOT_DPI, len(panels) * PLOT_PANEL_PX / PLOT_DPI),
                 dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        names = list(panel.groups)
        present = [[s for s, v in panel.groups[g].items() if _drawable(v, panel.log)]
                   for g in names]
        width = 0.8 / max([len(p) for p in present] + [1])
        for x, (g, here) in enumerate(zip(names, present)):
            for k, s in enumerate(here):
                v = float(panel.groups[g][s])
                bar = ax.bar(x + (k - (len(here) - 1) / 2) * width, v, width * 0.95,
                             color=color[s])
                ax.bar_label(bar, labels=[_short(v)], fontsize=7, padding=1)
        ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 6 else 0,
                      ha="right" if len(names) > 6 else "center", fontsize=8)
        if panel.log:
            ax.set_yscale("log")
        ax.margins(y=0.15)
        ax.set_title(panel.title, loc="left", fontsize=10)
        ax.set_ylabel(panel.ylabel)
    fig.legend([Patch(color=color[s]) for s in series], series, loc="outside right upper",
               fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    fig.savefig(path, dpi=PLOT_DPI)


def _drawable(v: float | None, log: bool) -> bool:
    return v is not None and math.isfinite(v) and (v > 0 or not log)


def _short(v: float) -> str:
    """A bar's value in a few characters: 12,345 / 123 / 12.3 / 1.23 / 0.12 / 0.0012."""
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.2g}"


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were taken."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "numpy": np.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    for mod in ("scipy", "hyprvdb"):
        m = sys.modules.get(mod)
        if m is not None:
            info[mod] = getattr(m, "__version__", "unknown")
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_json(path: str, benchmark: str, results: dict[str, Any],
               config: dict[str, Any] | None = None) -> None:
    """Write ``{"benchmark", "machine", "config", "results"}`` to ``path``."""
    payload = {"benchmark": benchmark, "machine": machine_info(),
               "config": config or {}, "results": results}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(payload), f, indent=2, sort_keys=False)
        f.write("\n")


# ------------------------------------------------------------------------------ dict size
_SMALL_INT_MIN, _SMALL_INT_MAX = -5, 256      # CPython's cached small ints


def dict_bytes(d: dict) -> int:
    """Honest bytes of a ``{(row, col): float}`` dict: the dict's table, every key tuple, every
    int object inside the keys and every float value, each object counted once (by id), and
    CPython's cached small ints (-5..256, shared by the whole process) not counted."""
    total = sys.getsizeof(d)
    seen: set[int] = set()
    getsize = sys.getsizeof
    for key, value in d.items():
        total += getsize(key)
        for x in key:
            if type(x) is int and _SMALL_INT_MIN <= x <= _SMALL_INT_MAX:
                continue
            if id(x) not in seen:
                seen.add(id(x))
                total += getsize(x)
        if id(value) not in seen:
            seen.add(id(value))
            total += getsize(value)
    return total
