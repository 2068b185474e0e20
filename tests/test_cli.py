"""The ``hyprvdb`` command, run as a user runs it (a subprocess): info, convert, demo.

- ``info`` on a .vdb, a .nvdb, a history and a safetensors file: JSON describing it.
- ``convert`` from a PEFT LoRA safetensors file (with ``adapter_config.json`` beside it) to a
  .vdb, a folder of .vdb files and a .hvh history; from a .vdb to a .nvdb and to dense
  safetensors; from a history to dense safetensors at a step. Values are checked against
  ``SparseAdapter.from_lora`` and against a numpy float64 reference of ``(alpha / r) * B @ A``.
- Errors: exit code 1 and a message naming the file or the suffix.
- ``hyprvdb demo --steps 2`` end to end (about a minute: it loads MiniLM and compiles it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hyprvdb import AdapterSet, SetSnapshot, Snapshot, SparseAdapter, TemporalGroup

safetensors_numpy = pytest.importorskip("safetensors.numpy")

LORA_ALPHA, LORA_R = 16.0, 4
Q = "base_model.model.layer.q_proj"
V = "base_model.model.layer.v_proj"


def hyprvdb_cmd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hyprvdb", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def ok(*args: str) -> subprocess.CompletedProcess:
    p = hyprvdb_cmd(*args)
    assert p.returncode == 0, f"hyprvdb {' '.join(map(str, args))} exited {p.returncode}:\n" \
                              f"{p.stderr[-2000:]}"
    return p


def info(path) -> dict:
    return json.loads(ok("info", path).stdout)


def assert_same_adapter(got, expected) -> None:
    assert tuple(got.shape) == tuple(expected.shape)
    gr, gc, gv = got.active_weights()
    er, ec, ev = expected.active_weights()
    np.testing.assert_array_equal(gr, er)
    np.testing.assert_array_equal(gc, ec)
    np.testing.assert_array_equal(gv, ev)


def lora_reference(a: np.ndarray, b: np.ndarray, alpha: float, density: float):
    """(rows, cols, float32 values) of the kept entries, row-major, from numpy float64."""
    delta = (alpha / a.shape[0]) * (b.astype(np.float64) @ a.astype(np.float64))
    k = max(1, int(round(density * delta.size)))
    keep = np.sort(np.argsort(-np.abs(delta).ravel(), kind="stable")[:k])
    r, c = np.divmod(keep, delta.shape[1])
    return r, c, delta[r, c].astype(np.float32)


def assert_matches_lora(adapter, a, b, alpha, density) -> None:
    r, c, v = adapter.active_weights()
    er, ec, ev = lora_reference(a, b, alpha, density)
    np.testing.assert_array_equal(r, er)
    np.testing.assert_array_equal(c, ec)
    np.testing.assert_allclose(v, ev, rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """PEFT-style LoRA files: one pair (q) and two pairs (q, v), adapter_config.json beside."""
    rng = np.random.default_rng(7)
    pairs = {Q: (rng.standard_normal((LORA_R, 48)).astype(np.float32),
                 rng.standard_normal((32, LORA_R)).astype(np.float32)),
             V: (rng.standard_normal((LORA_R, 48)).astype(np.float32),
                 rng.standard_normal((64, LORA_R)).astype(np.float32))}
    out = {}
    for label, names in (("one", [Q]), ("two", [Q, V])):
        d = tmp_path_factory.mktemp(f"lora_{label}")
        tensors = {}
        for n in names:
            tensors[f"{n}.lora_A.weight"], tensors[f"{n}.lora_B.weight"] = pairs[n]
        safetensors_numpy.save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps(
            {"peft_type": "LORA", "r": LORA_R, "lora_alpha": LORA_ALPHA,
             "target_modules": ["q_proj", "v_proj"]}))
        out[label] = d / "adapter_model.safetensors"
    out["pairs"] = pairs
    return out


@pytest.fixture(scope="module")
def vdb_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    a = SparseAdapter(24, 40, name="layer.0.q")
    flat = rng.choice(24 * 40, 50, replace=False)
    a.batch_update(flat // 40, flat % 40, rng.standard_normal(50).astype(np.float32))
    path = tmp_path_factory.mktemp("vdb") / "q.vdb"
    a.save(path)
    return path, a


@pytest.fixture(scope="module")
def history_file(tmp_path_factory):
    rng = np.random.default_rng(5)
    g = TemporalGroup({"q": (16, 16), "ff": (32, 16)})
    g["q"].store_base(rows=[0, 3], cols=[1, 2], values=[0.5, -0.25])
    path = tmp_path_factory.mktemp("history") / "h.hvh"
    g.save(path)
    for t in (1, 2, 3):
        g.store_deltas(t, {"q": (rng.integers(0, 16, 4), rng.integers(0, 16, 4),
                                 rng.standard_normal(4).astype(np.float32)),
                           "ff": (rng.integers(0, 32, 3), rng.integers(0, 16, 3),
                                  rng.standard_normal(3).astype(np.float32))})
    expected = {t: g.weights_at_time(t) for t in (0, 1, 2, 3)}
    changes = g.change_count()
    g.close()
    return path, expected, changes


# ----------------------------------------------------------------------------- info
def test_info_vdb(vdb_file):
    path, a = vdb_file
    d = info(path)
    assert d["kind"] == "vdb" and d["file"] == str(path)
    assert d["bytes"] == os.path.getsize(path)
    assert d["name"] == "layer.0.q" and d["shape"] == [24, 40] and d["block_shape"] == [1, 1]
    assert d["active"] == 50 and d["density"] == pytest.approx(50 / (24 * 40))
    assert d["memory_bytes"] > 0


def test_info_nvdb(vdb_file, tmp_path):
    _, a = vdb_file
    path = tmp_path / "q.nvdb"
    snap = Snapshot.from_adapter(a, step=7)
    snap.save_nvdb(path)
    d = info(path)
    assert d["kind"] == "nvdb" and d["bytes"] == os.path.getsize(path)
    assert d["name"] == "layer.0.q" and d["shape"] == [24, 40]
    assert d["step"] == 7 and d["active"] == 50
    assert d["checksum"] == f"{snap.checksum:016x}" and d["grid_bytes"] == snap.nbytes
    assert d["nanovdb_version"] == "32.9.2"
    snap.save_nvdb(path, version="32.4")
    assert info(path)["nanovdb_version"] == "32.4.2"


def test_info_history(history_file):
    path, _, changes = history_file
    d = info(path)
    assert d["kind"] == "history" and d["bytes"] == os.path.getsize(path)
    assert d["matrices"] == 2 and d["members"] == {"q": [16, 16], "ff": [32, 16]}
    assert d["base_step"] == 0 and d["latest"] == 3 and d["steps"] == 3
    assert d["changes"] == changes


def test_info_safetensors(lora):
    d = info(lora["two"])
    assert d["kind"] == "safetensors"
    assert d["tensors"] == {f"{Q}.lora_A.weight": [[LORA_R, 48], "float32"],
                            f"{Q}.lora_B.weight": [[32, LORA_R], "float32"],
                            f"{V}.lora_A.weight": [[LORA_R, 48], "float32"],
                            f"{V}.lora_B.weight": [[64, LORA_R], "float32"]}


# ----------------------------------------------------------------------------- convert
def test_convert_lora_to_vdb(lora, tmp_path):
    dst = tmp_path / "q.vdb"
    p = ok("convert", lora["one"], dst)
    assert p.stdout.split() == [str(dst)]
    got = SparseAdapter.load(dst)
    a, b = lora["pairs"][Q]
    assert got.name == Q
    # alpha comes from adapter_config.json (16, not the rank 4)
    assert_same_adapter(got, SparseAdapter.from_lora(a, b, alpha=LORA_ALPHA, density=0.01))
    assert_matches_lora(got, a, b, LORA_ALPHA, 0.01)
    assert got.active_count() == round(0.01 * 32 * 48)


def test_convert_lora_alpha_and_density_options(lora, tmp_path):
    dst = tmp_path / "q.vdb"
    ok("convert", lora["one"], dst, "--alpha", "2", "--density", "0.25")
    a, b = lora["pairs"][Q]
    got = SparseAdapter.load(dst)
    assert got.active_count() == round(0.25 * 32 * 48)
    assert_matches_lora(got, a, b, 2.0, 0.25)


def test_convert_lora_without_config_uses_alpha_equal_to_rank(lora, tmp_path):
    src = tmp_path / "adapter_model.safetensors"
    shutil.copyfile(lora["one"], src)
    dst = tmp_path / "q.vdb"
    ok("convert", src, dst)
    a, b = lora["pairs"][Q]
    assert_matches_lora(SparseAdapter.load(dst), a, b, float(LORA_R), 0.01)


def test_convert_lora_to_folder(lora, tmp_path):
    dst = tmp_path / "adapters"
    p = ok("convert", lora["two"], dst)
    written = sorted(p.stdout.split())
    assert written == sorted(str(dst / f"{n}.vdb") for n in (Q, V))
    assert sorted(os.listdir(dst)) == sorted(f"{n}.vdb" for n in (Q, V))
    for n in (Q, V):
        a, b = lora["pairs"][n]
        got = SparseAdapter.load(dst / f"{n}.vdb")
        assert got.name == n
        assert_same_adapter(got, SparseAdapter.from_lora(a, b, alpha=LORA_ALPHA, density=0.01))
        assert_matches_lora(got, a, b, LORA_ALPHA, 0.01)


def test_convert_lora_to_history(lora, tmp_path):
    dst = tmp_path / "lora.hvh"
    ok("convert", lora["two"], dst)
    g = TemporalGroup.load(dst)
    try:
        assert sorted(g) == sorted([Q, V]) and g.latest == 0
        for n in (Q, V):
            a, b = lora["pairs"][n]
            assert g[n].shape == (b.shape[0], a.shape[1])
            assert_matches_lora(g[n].weights_at_time(0), a, b, LORA_ALPHA, 0.01)
    finally:
        g.close()
    d = info(dst)
    assert d["kind"] == "history" and d["matrices"] == 2 and d["latest"] == 0


def test_convert_vdb_to_nvdb(vdb_file, tmp_path):
    src, a = vdb_file
    dst = tmp_path / "q.nvdb"
    ok("convert", src, dst, "--step", "4")
    s = Snapshot.load_nvdb(dst)
    assert s.name == "layer.0.q" and s.shape == (24, 40) and s.step == 4
    assert_same_adapter(s, a)
    assert s.file_version == "32.9.2"
    ok("convert", src, dst, "--nvdb-version", "32.4")
    assert Snapshot.load_nvdb(dst).file_version == "32.4.2"


def test_convert_vdb_to_dense_safetensors(vdb_file, tmp_path):
    src, a = vdb_file
    dst = tmp_path / "q.safetensors"
    ok("convert", src, dst)
    t = safetensors_numpy.load_file(str(dst))
    assert list(t) == ["layer.0.q"]
    assert t["layer.0.q"].dtype == np.float32
    np.testing.assert_array_equal(t["layer.0.q"], a.to_dense())
    dense = np.zeros((24, 40), np.float32)
    r, c, v = a.active_weights()
    dense[r, c] = v
    np.testing.assert_array_equal(t["layer.0.q"], dense)


@pytest.mark.parametrize("step", [1, 3])
def test_convert_history_step_to_dense_safetensors(history_file, tmp_path, step):
    src, expected, _ = history_file
    dst = tmp_path / "h.safetensors"
    ok("convert", src, dst, "--step", step)
    t = safetensors_numpy.load_file(str(dst))
    assert sorted(t) == ["ff", "q"]
    for n in ("q", "ff"):
        np.testing.assert_array_equal(t[n], expected[step][n].to_dense(), err_msg=n)


# ----------------------------------------------------------------------------- errors
def assert_fails(p: subprocess.CompletedProcess, command: str, *words: str) -> None:
    assert p.returncode == 1, f"exit code {p.returncode}, stderr: {p.stderr[-1000:]}"
    assert p.stderr.startswith(f"hyprvdb {command}: "), p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in p.stderr, f"{w!r} not in {p.stderr!r}"


def test_info_missing_file(tmp_path):
    missing = tmp_path / "nope.vdb"
    assert_fails(hyprvdb_cmd("info", missing), "info", str(missing), "No such file")


def test_convert_missing_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    assert_fails(hyprvdb_cmd("convert", missing, tmp_path / "out.vdb"), "convert",
                 str(missing), "No such file")
    assert not (tmp_path / "out.vdb").exists()


def test_info_foreign_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some text, not a grid\n")
    assert_fails(hyprvdb_cmd("info", path), "info", str(path), "is not a .vdb, .nvdb")


@pytest.mark.parametrize("suffix", [".txt", ".pt"])
def test_convert_unknown_destination_suffix(vdb_file, tmp_path, suffix):
    src, _ = vdb_file
    dst = tmp_path / f"out{suffix}"
    assert_fails(hyprvdb_cmd("convert", src, dst), "convert",
                 f"unknown destination kind {suffix!r}", ".vdb", ".nvdb")
    assert not dst.exists()


def test_convert_two_adapters_into_set_files(lora, tmp_path):
    """Several adapters into one .vdb (an AdapterSet: a grid per matrix) or one .nvdb (a
    SetSnapshot: one grid of cells), each read back by info and by convert."""
    per_matrix = tmp_path / "per"
    ok("convert", lora["two"], per_matrix)
    want = {SparseAdapter.load(f).name: SparseAdapter.load(f) for f in per_matrix.iterdir()}
    vdb, nvdb = tmp_path / "both.vdb", tmp_path / "both.nvdb"
    ok("convert", lora["two"], vdb)
    ok("convert", vdb, nvdb, "--step", "4")
    got = AdapterSet.load(vdb)
    snap = SetSnapshot.load_nvdb(nvdb)
    assert list(got) == list(snap) == sorted(want) and snap.step == 4
    for name, a in want.items():
        assert_same_adapter(got[name], a)
        r, c, v = a.active_weights()
        np.testing.assert_array_equal(snap.lookup(name, r, c), v)
    d = info(vdb)
    assert d["kind"] == "vdb (adapter set)" and d["matrices"] == 2
    assert d["active"] == sum(a.active_count() for a in want.values())
    d = info(nvdb)
    assert d["kind"] == "nvdb (set snapshot)" and d["step"] == 4
    assert d["members"] == {k: [list(a.shape), a.active_count()] for k, a in want.items()}
    back = tmp_path / "back"
    ok("convert", nvdb, back)
    for f in back.iterdir():
        assert_same_adapter(SparseAdapter.load(f), want[SparseAdapter.load(f).name])


def test_convert_density_out_of_range_is_a_usage_error(lora, tmp_path):
    p = hyprvdb_cmd("convert", lora["one"], tmp_path / "q.vdb", "--density", "0")
    assert p.returncode == 2 and "--density must be in (0, 1], got 0.0" in p.stderr


# ----------------------------------------------------------------------------- demo
def _hyprvdb_executable() -> list[str]:
    exe = Path(sys.executable).with_name("hyprvdb")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hyprvdb"]


@pytest.mark.slow
def test_demo_runs_end_to_end():
    pytest.importorskip("jax")
    pytest.importorskip("tqdm")
    import hyprvdb.jax as hj
    p = subprocess.run([*_hyprvdb_executable(), "demo", "--steps", "2"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, f"demo exited {p.returncode}:\n{p.stderr[-3000:]}"
    out = p.stdout
    for needle in ("step 0: MRR", "step 2: MRR", "time travel: serving step 1",
                   "step 1: MRR learned pairs", "rollback(1): serving step 1",
                   "history steps now 0..1", "= pretrained + weights_at_time(1), bit for bit: True",
                   "memory at step 1", "hyprvdb AdapterSet (one OpenVDB tree)", "python dict",
                   "scipy CSR", "dense float32 deltas", "full checkpoints",
                   f"past steps' corrections ran on {hj.kernel_path()}",
                   "demo finished in"):
        assert needle in out, f"{needle!r} not in the demo's output:\n{out[-3000:]}"
