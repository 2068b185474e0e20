"""The charts: :func:`hyprvdb.plot.plot_history`, ``hyprvdb plot`` (run as a user runs it, a
subprocess) and the benchmarks' ``--plot``.

Every chart is checked as a file: a PNG of the documented pixel size that is not blank. Bad
arguments are refused before anything is written, with a message that names the argument and
shows its value. Importing hyprvdb (its plotting module and the command included) loads no
matplotlib.
"""

from __future__ import annotations

import doctest
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hyprvdb
from conftest import needs_core

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mpl():
    return pytest.importorskip("matplotlib", reason="the charts need matplotlib "
                                                    "(pip install matplotlib)")


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, which the format puts first."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG: {head[:8]!r}"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_chart(path, size: tuple[int, int]) -> None:
    """A PNG of ``size`` pixels that holds a drawing (not one flat colour)."""
    from matplotlib.image import imread
    assert os.path.getsize(path) > 0
    assert png_size(path) == size
    pixels = imread(path)
    assert pixels.shape[:2] == (size[1], size[0])
    assert float(pixels[..., :3].std()) > 0.01, f"{path} is blank"


def history_size(panels: int) -> tuple[int, int]:
    from hyprvdb.plot import PANEL_HEIGHT_PX, WIDTH_PX
    return WIDTH_PX, panels * PANEL_HEIGHT_PX


def make_group(n_matrices: int = 3, steps: int = 8, seed: int = 0) -> hyprvdb.TemporalGroup:
    """A group with a base, learning steps, an empty step and a step that resets weights to 0."""
    rng = np.random.default_rng(seed)
    shapes = {f"m{i}": (6 + i, 10) for i in range(n_matrices)}
    g = hyprvdb.TemporalGroup(shapes)
    g["m0"].store_base(rows=[0, 1], cols=[0, 1], values=[1.0, -2.0])
    for t in range(1, steps + 1):
        deltas = {}
        for name, (r, c) in shapes.items():
            flat = np.sort(rng.choice(r * c, 1 + (t * (1 + int(name[1:]))) % 7, replace=False))
            deltas[name] = (flat // c, flat % c, rng.normal(0, 1, len(flat)).astype(np.float32))
        if t == 3:
            deltas = {}  # a step where nothing changed
        if t == 5:
            rows, cols, _ = g["m0"].active_weights()
            deltas["m0"] = (rows, cols, np.zeros(len(rows), np.float32),
                            np.ones(len(rows), bool))
        g.store_deltas(t, deltas)
    return g


# ----------------------------------------------------------------------------- import
def test_importing_hyprvdb_and_its_command_loads_no_matplotlib():
    probe = ("import sys, hyprvdb, hyprvdb.plot, hyprvdb.cli\n"
             "sys.path.insert(0, sys.argv[1])\n"
             "import _common\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    p = subprocess.run([sys.executable, "-c", probe, str(BENCH)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- plot_history
def test_group_chart_has_two_panels_and_three_with_a_weight(mpl, tmp_path):
    from hyprvdb.plot import plot_history
    g = make_group()
    plot_history(g, tmp_path / "g.png")
    assert_chart(tmp_path / "g.png", history_size(2))
    plot_history(g, str(tmp_path / "w.PNG"), weight=("m0", 0, 0))
    assert_chart(tmp_path / "w.PNG", history_size(3))


def test_a_lone_adapter_is_a_group_of_one(mpl, tmp_path):
    from hyprvdb.plot import plot_history
    h = hyprvdb.TemporalAdapter(4, 5, name="delta")
    h.store_delta(1, [0, 3], [1, 4], [0.5, 1.0])
    h.store_delta(2, [3], [4], [-1.0], reset=np.array([True]))
    plot_history(h, tmp_path / "h.png", weight=(np.str_("delta"), np.int64(3), 4))
    assert_chart(tmp_path / "h.png", history_size(3))
    # a member of a group, drawn alone
    g = make_group()
    plot_history(g["m1"], tmp_path / "m1.png", weight=("m1", 6, 9))
    assert_chart(tmp_path / "m1.png", history_size(3))


def test_many_matrices_tiers_and_an_empty_history(mpl, tmp_path):
    from hyprvdb.plot import MAX_STATE_POINTS, SHOWN_MATRICES, plot_history
    g = make_group(n_matrices=SHOWN_MATRICES + 5, steps=6)
    plot_history(g, tmp_path / "many.png", weight=("m11", 2, 3))  # a weight never changed
    assert_chart(tmp_path / "many.png", history_size(3))
    rng = np.random.default_rng(1)
    # merged steps: changes stored at steps that are no longer visible on their own
    tiered = hyprvdb.TemporalAdapter(8, 8, tiers=[(4, 1), (None, 4)], compact_every=2)
    for t in range(1, 30):
        tiered.store_delta(t, rng.integers(0, 8, 3), rng.integers(0, 8, 3),
                           rng.normal(0, 1, 3))
    assert len(tiered.steps) < 30
    plot_history(tiered, tmp_path / "tiers.png", weight=("lora_delta", 1, 1))
    assert_chart(tmp_path / "tiers.png", history_size(3))
    # more steps than the active weights are counted at
    long = hyprvdb.TemporalAdapter(8, 8)
    for t in range(1, MAX_STATE_POINTS + 40):
        long.store_delta(t, rng.integers(0, 8, 2), rng.integers(0, 8, 2), rng.normal(0, 1, 2))
    plot_history(long, tmp_path / "long.png")
    assert_chart(tmp_path / "long.png", history_size(2))
    empty = hyprvdb.TemporalGroup({"a": (2, 2)})
    plot_history(empty, tmp_path / "empty.png")
    assert png_size(tmp_path / "empty.png") == history_size(2)


def test_doctest(mpl):
    import hyprvdb.plot
    result = doctest.testmod(hyprvdb.plot, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(path="chart.jpg"), ValueError, "path must name a .png file, got '"),
    (dict(path=3), TypeError, "path must be a str or os.PathLike, got int"),
    (dict(weight=("k_proj", 0, 0)), ValueError,
     "weight names matrix 'k_proj', which the history does not hold; matrices: "
     "['m0', 'm1', 'm2']"),
    (dict(weight=("m1", 7, 0)), IndexError,
     "weight row = 7 is out of range for matrix 'm1' (7 x 10)"),
    (dict(weight=("m1", 0, -1)), IndexError,
     "weight col = -1 is out of range for matrix 'm1' (7 x 10)"),
    (dict(weight=("m1", 1.0, 0)), TypeError, "weight row must be an int, got float 1.0"),
    (dict(weight=("m1", 1)), TypeError, "weight must be (name, row, col), got ('m1', 1)"),
    (dict(weight="m1"), TypeError, "weight must be (name, row, col), got 'm1'"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, exc, message):
    from hyprvdb.plot import plot_history
    g = make_group()
    kwargs = {"path": tmp_path / "out.png", **kwargs}
    if isinstance(kwargs["path"], str):
        kwargs["path"] = str(tmp_path / kwargs["path"])
    with pytest.raises(exc) as info:
        plot_history(g, **kwargs)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_history_of_the_wrong_kind_is_refused(tmp_path):
    from hyprvdb.plot import plot_history
    with pytest.raises(TypeError, match="history must be a TemporalGroup or a TemporalAdapter, "
                                        "got dict"):
        plot_history({"q": None}, tmp_path / "out.png")


# ----------------------------------------------------------------------------- hyprvdb plot
def hyprvdb_cmd(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyprvdb", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def history_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "history.hvh"
    g = make_group()
    g.save(path)
    g.close()
    return path


def test_command_writes_the_chart(mpl, history_file, tmp_path):
    out = tmp_path / "chart.png"
    p = hyprvdb_cmd("plot", history_file, "-o", out, "--weight", "m2", "3", "9")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(out)
    assert_chart(out, history_size(3))
    p = hyprvdb_cmd("plot", history_file, "--output", tmp_path / "two.png")
    assert p.returncode == 0, p.stderr
    assert_chart(tmp_path / "two.png", history_size(2))


@pytest.mark.parametrize("args, code, message", [
    (["--weight", "nope", "0", "0"], 1,
     "hyprvdb plot: weight names matrix 'nope', which the history does not hold"),
    (["--weight", "m0", "0", "10"], 1,
     "hyprvdb plot: weight col = 10 is out of range for matrix 'm0' (6 x 10)"),
    (["--weight", "m0", "one", "0"], 2,
     "--weight ROW and COL must be integers >= 0, got 'one' and '0'"),
    (["--weight", "m0", "0"], 2, "--weight: expected 3 arguments"),
])
def test_command_errors(mpl, history_file, tmp_path, args, code, message):
    out = tmp_path / "chart.png"
    p = hyprvdb_cmd("plot", history_file, "-o", out, *args)
    assert p.returncode == code, p.stderr
    assert message in p.stderr
    assert not out.exists()


def test_command_refuses_other_outputs_and_inputs(history_file, tmp_path):
    p = hyprvdb_cmd("plot", history_file, "-o", tmp_path / "chart.svg")
    assert p.returncode == 2 and "-o must name a .png file, got '" in p.stderr
    p = hyprvdb_cmd("plot", history_file)
    assert p.returncode == 2 and "-o/--output" in p.stderr
    snap = tmp_path / "weights.nvdb"
    hyprvdb.Snapshot.from_coo([0], [1], [1.0], (2, 2)).save_nvdb(snap)
    p = hyprvdb_cmd("plot", snap, "-o", tmp_path / "chart.png")
    assert p.returncode == 1 and "is not a history file (.hvh): its kind is 'nvdb'" in p.stderr
    p = hyprvdb_cmd("plot", tmp_path / "missing.hvh", "-o", tmp_path / "chart.png")
    assert p.returncode == 1 and "No such file" in p.stderr
    assert not (tmp_path / "chart.png").exists()


def test_without_matplotlib_the_command_says_what_is_missing(history_file, tmp_path):
    probe = ("import sys\n"
             "sys.modules['matplotlib'] = None  # `import matplotlib` now raises ImportError\n"
             "from hyprvdb.cli import main\n"
             "sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "chart.png"
    p = subprocess.run([sys.executable, "-c", probe, "plot", str(history_file), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "hyprvdb plot: plot_history needs matplotlib (pip install matplotlib)" in p.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- benchmarks
def bench(script: str, *args) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    return p


def bench_size(panels: int) -> tuple[int, int]:
    sys.path.insert(0, str(BENCH))
    try:
        import _common
    finally:
        sys.path.remove(str(BENCH))
    return _common.PLOT_WIDTH_PX, panels * _common.PLOT_PANEL_PX


def test_memory_bench_draws_its_snapshot_table(mpl, tmp_path):
    out = tmp_path / "memory.png"
    p = bench("memory.py", "--snapshots-only", "--workloads", "minilm", "--plot", out)
    assert p.returncode == 0, p.stderr
    assert f"wrote {out}" in p.stdout
    assert p.stdout.strip().splitlines()[-1].startswith("summary:")
    assert_chart(out, bench_size(1))


def test_temporal_bench_draws_its_table(mpl, tmp_path):
    needs_core()
    out = tmp_path / "temporal.png"
    p = bench("temporal.py", "--quick", "--no-tiledb", "--layers", "1", "--steps", "3",
              "--dir", tmp_path, "--plot", out)
    assert p.returncode == 0, p.stderr
    assert_chart(out, bench_size(3))


def test_bench_plot_must_be_a_png(tmp_path):
    p = bench("memory.py", "--snapshots-only", "--plot", tmp_path / "memory.pdf")
    assert p.returncode == 2
    assert "--plot must name a .png file, got '" in p.stderr


def test_matmul_draws_the_gpu_tables_it_is_given(mpl, tmp_path):
    """The GPU panels, which only a machine with a GPU draws after a long run, on rows shaped
    as bench/matmul.py records them (a failed case included)."""
    sys.path.insert(0, str(BENCH))
    try:
        import matmul
    finally:
        sys.path.remove(str(BENCH))
    rows = [{"shape": (4096, 4096), "density": 0.01, "batch": b, "ours_s": 1e-4 * b,
             "cublas_s": 9e-5 * b, "cusparse_s": 3e-4 * b} for b in (1, 4, 16)]
    failed = {"shape": (4096, 14336), "density": 0.02, "batch": 1, "cublas_s": 2e-4,
              "cusparse_s": 5e-4, "error": "RuntimeError: out of memory"}
    out = tmp_path / "matmul.png"
    matmul.plot(str(out), {"cpu": {"skipped": "--no-cpu"},
                           "gpu": {"fused_linear": rows + [failed], "delta_matmul": rows}})
    assert_chart(out, bench_size(2))
    matmul.plot(str(tmp_path / "none.png"), {"cpu": {"skipped": "--no-cpu"},
                                             "gpu": {"skipped": "no device"}})
    assert not (tmp_path / "none.png").exists()


def test_example_history_is_what_the_readme_charts(mpl, tmp_path):
    path = tmp_path / "example.hvh"
    p = bench("example_history.py", path, "--steps", "12", "--layers", "1")
    assert p.returncode == 0, p.stderr
    command = p.stdout.strip().splitlines()[-1].split("chart it: hyprvdb ")[1].split()
    g = hyprvdb.TemporalGroup.load(path)
    try:
        assert g.steps == list(range(13)) and len(g) == 6
        # step 10 prunes: it only resets weights to 0, so fewer are active after it
        before = sum(len(h.active_weights(9)[2]) for _, h in g.items())
        after = sum(len(h.active_weights(10)[2]) for _, h in g.items())
        assert 0 < after < before
    finally:
        g.close()
    command[command.index("-o") + 1] = str(tmp_path / "history.png")
    p = hyprvdb_cmd(*command)
    assert p.returncode == 0, p.stderr
    assert_chart(tmp_path / "history.png", history_size(3))
