"""PEFT adapter folders both ways, checked with the real ``peft`` package on the CPU PyTorch:
a SHiRA adapter made by PEFT goes through hyprvdb and back into PEFT with identical outputs;
a LoRA folder becomes a sparse SHiRA folder PEFT runs as the sparsified delta; a history's
step exports as a SHiRA folder; damaged or mismatched folders get errors that name the
problem.

Tolerances: the SHiRA round trip must give PEFT's own outputs exactly (same values, same
coordinates; the padding zeros add nothing). Against a reference that adds the dense delta to
the layer's weight, outputs agree to 1e-5 relative to their magnitude (float32, PyTorch's own
sparse and dense products summing in different orders).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import needs_core

from hyprvdb import AdapterSet, TemporalGroup
from hyprvdb import _peft as P

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft", minversion="0.17")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

SHAPES = {"q": (32, 48), "v": (64, 48)}  # (out, in) of the adapted layers


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(48, 32)
        self.v = torch.nn.Linear(48, 64)
        self.o = torch.nn.Linear(64, 8)

    def forward(self, x):
        return self.o(torch.relu(self.q(x)).sum(-1, keepdim=True) * self.v(x))


@pytest.fixture(scope="module")
def base_state():
    torch.manual_seed(0)
    return copy.deepcopy(Tiny().state_dict())


def fresh(state) -> Tiny:
    m = Tiny()
    m.load_state_dict(state)
    return m


def outputs(model, x):
    with torch.no_grad():
        return model(x).numpy()


def reference(state, deltas: dict, x):
    """The base model with each adapted layer's weight plus its dense delta."""
    m = fresh(state)
    with torch.no_grad():
        for name, d in deltas.items():
            layer = getattr(m, name.rsplit(".", 1)[-1])
            layer.weight += torch.from_numpy(d)
    return outputs(m, x)


def dense_of(adapter) -> np.ndarray:
    return adapter.to_dense().astype(np.float32)


@pytest.fixture(scope="module")
def shira_folder(tmp_path_factory, base_state):
    folder = tmp_path_factory.mktemp("peft") / "shira"
    model = peft.get_peft_model(fresh(base_state), peft.ShiraConfig(
        r=2, target_modules=["q", "v"], init_weights=False, random_seed=3))
    model.save_pretrained(folder)
    x = torch.randn(7, 48, generator=torch.Generator().manual_seed(1))
    return folder, x, outputs(model, x)


def test_shira_round_trip_gives_peft_the_same_outputs(shira_folder, base_state, tmp_path):
    needs_core()
    folder, x, want = shira_folder
    s = AdapterSet.from_peft(folder, shapes=SHAPES)
    assert list(s) == ["base_model.model.q", "base_model.model.v"]
    stored = safetensors_numpy.load_file(str(folder / P.WEIGHTS))
    for name, m in s.items():
        assert m.shape == SHAPES[name.rsplit(".", 1)[-1]]
        r, c, v = m.active_weights()
        idx = stored[f"{name}.shira_indices"].astype(np.int64)
        w = stored[f"{name}.shira_weight"]
        order = np.lexsort((idx[1], idx[0]))
        np.testing.assert_array_equal(r, idx[0][order])
        np.testing.assert_array_equal(c, idx[1][order])
        np.testing.assert_array_equal(v, w[order])
    out = tmp_path / "back"
    s.save_shira(out)
    got = outputs(peft.PeftModel.from_pretrained(fresh(base_state), out), x)
    np.testing.assert_array_equal(got, want)


def test_lora_becomes_a_sparse_shira_adapter(tmp_path, base_state):
    needs_core()
    model = peft.get_peft_model(fresh(base_state), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q", "v"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "lora")
    s = AdapterSet.from_peft(tmp_path / "lora", density=0.05)
    stored = safetensors_numpy.load_file(str(tmp_path / "lora" / P.WEIGHTS))
    for name, m in s.items():
        a = stored[f"{name}.lora_A.weight"].astype(np.float64)
        b = stored[f"{name}.lora_B.weight"].astype(np.float64)
        full = (8 / 4) * (b @ a)
        r, c, v = m.active_weights()
        assert len(v) == round(0.05 * full.size)
        np.testing.assert_allclose(v, full[r, c], rtol=1e-6)
        assert np.abs(v).min() >= np.sort(np.abs(full).ravel())[-len(v)] * (1 - 1e-6)
    s.save_shira(tmp_path / "shira")
    x = torch.randn(9, 48, generator=torch.Generator().manual_seed(2))
    got = outputs(peft.PeftModel.from_pretrained(fresh(base_state), tmp_path / "shira"), x)
    want = reference(base_state, {n: dense_of(m) for n, m in s.items()}, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_a_history_step_exports_as_shira(tmp_path, base_state):
    rng = np.random.default_rng(3)
    g = TemporalGroup({f"base_model.model.{k}": s for k, s in SHAPES.items()})
    for t in (1, 2, 3):
        deltas = {}
        for name, m in g.items():
            n_out, n_in = m.shape
            lin = rng.choice(n_out * n_in, size=40, replace=False)
            deltas[name] = (lin // n_in, lin % n_in, 0.01 * rng.standard_normal(40))
        g.store_deltas(t, deltas)
    x = torch.randn(5, 48, generator=torch.Generator().manual_seed(4))
    for t in (2, 3):
        g.save_shira(tmp_path / f"step{t}", t)
        conf = json.loads((tmp_path / f"step{t}" / P.CONFIG).read_text())
        assert conf["peft_type"] == "SHIRA" and conf["target_modules"] == ["q", "v"]
        got = outputs(peft.PeftModel.from_pretrained(fresh(base_state), tmp_path / f"step{t}"), x)
        deltas = {}
        for name, m in g.items():
            d = np.zeros(m.shape, np.float32)
            r, c, v = m.active_weights(t)
            d[r, c] = v
            deltas[name] = d
        want = reference(base_state, deltas, x)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_cli_converts_and_describes_folders(shira_folder, base_state, tmp_path):
    needs_core()
    folder, x, want = shira_folder
    cmd = [sys.executable, "-m", "hyprvdb"]
    done = subprocess.run(cmd + ["info", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert d["kind"] == "peft shira" and d["matrices"] == 2 and d["r"] == 2
    assert d["active"] == 2 * (32 + 48) + 2 * (64 + 48)
    assert d["bytes_per_weight"] > 0
    vdbs = tmp_path / "vdbs"
    shapes = [a for k, (r, c) in SHAPES.items() for a in ("--shape", f"{k}={r}x{c}")]
    assert subprocess.run(cmd + ["convert", str(folder), str(vdbs)] + shapes).returncode == 0
    d = json.loads(subprocess.run(cmd + ["info", str(vdbs)], capture_output=True,
                                  text=True).stdout)
    assert d["kind"] == "vdb folder" and d["matrices"] == 2 and d["active"] == 384
    out = tmp_path / "shira_again"
    assert subprocess.run(cmd + ["convert", str(vdbs), str(out), "--shira"]).returncode == 0
    # a SHiRA folder does not store layer shapes: --shape gives them
    assert d["members"] == {f"base_model.model.{k}": [list(s), 2 * sum(s)]
                            for k, s in SHAPES.items()}
    got = outputs(peft.PeftModel.from_pretrained(fresh(base_state), out), x)
    np.testing.assert_array_equal(got, want)


def _folder(tmp_path, tensors: dict, conf: dict | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(tensors, str(tmp_path / P.WEIGHTS))
    (tmp_path / P.CONFIG).write_text(json.dumps(conf or {"peft_type": "SHIRA", "r": 1}))
    return tmp_path


def test_damaged_and_mismatched_folders_are_refused(tmp_path):
    w = np.ones(4, np.float32)
    idx = np.array([[0, 1, 2, 3], [0, 1, 2, 3]], np.int32)
    cases = [
        ("no indices", {"m.shira_weight": w}, None, "no matching m.shira_indices"),
        ("shape", {"m.shira_weight": w, "m.shira_indices": idx[:, :3].copy()}, None,
         r"do not match shira_weight"),
        ("negative", {"m.shira_weight": w, "m.shira_indices": -idx}, None, "negative index"),
        ("nan", {"m.shira_weight": np.full(4, np.nan, np.float32), "m.shira_indices": idx},
         None, "not finite"),
        ("type", {"m.shira_weight": w, "m.shira_indices": idx}, {"peft_type": "IA3"},
         "type 'IA3'"),
        ("empty", {"m.other": w}, None, "no \\*.shira_weight"),
    ]
    for label, tensors, conf, match in cases:
        folder = _folder(tmp_path / label, tensors, conf)
        with pytest.raises(ValueError, match=match):
            P.read_shira(folder)
    folder = _folder(tmp_path / "outside", {"m.shira_weight": w, "m.shira_indices": idx})
    with pytest.raises(ValueError, match="outside the module's shape"):
        P.read_shira(folder, {"m": (3, 3)})
    (folder / P.CONFIG).write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        P.peft_type(folder)
    folder = _folder(tmp_path / "cut", {"m.shira_weight": w, "m.shira_indices": idx})
    data = (folder / P.WEIGHTS).read_bytes()
    (folder / P.WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        P.read_shira(folder)
    lora = _folder(tmp_path / "lora", {"m.lora_A.weight": np.ones((2, 5), np.float32),
                                       "m.lora_B.weight": np.ones((3, 4), np.float32)},
                   {"peft_type": "LORA", "r": 2})
    with pytest.raises(ValueError, match="do not make a product"):
        P.read_lora(lora)


def test_repeated_coordinates_sum_as_torch_does(tmp_path):
    idx = np.array([[1, 1, 0], [2, 2, 0]], np.int32)
    folder = _folder(tmp_path / "rep", {"m.shira_weight": np.array([1.5, 2.0, 3.0], np.float32),
                                        "m.shira_indices": idx})
    ((name, shape, r, c, v),) = P.read_shira(folder, {"m": (4, 4)})
    assert shape == (4, 4)
    assert r.tolist() == [0, 1] and c.tolist() == [0, 2] and v.tolist() == [3.0, 3.5]


def test_writing_needs_a_rank_that_fits(tmp_path):
    entry = ("m", (4, 4), np.arange(4), np.arange(4), np.ones(4, np.float32))
    assert P.shira_rank([entry]) == 1
    with pytest.raises(ValueError, match="r must be an int of at least 1"):
        P.write_shira(tmp_path / "a", [entry], r=0)
    with pytest.raises(ValueError, match="more than the 4x4 layer has"):
        P.write_shira(tmp_path / "b", [entry], r=3)
    full = ("m", (3, 3), np.repeat(np.arange(3), 3), np.tile(np.arange(3), 3), np.ones(9))
    with pytest.raises(ValueError, match="PEFT cannot load it"):
        P.shira_rank([full])
    out = P.write_shira(tmp_path / "c", [entry], r=1)
    t = safetensors_numpy.load_file(str(out / P.WEIGHTS))
    assert t["base_model.model.m.shira_weight"].shape == (8,)  # r (in + out), zero-padded
    assert t["base_model.model.m.shira_indices"].dtype == np.int32
    assert np.count_nonzero(t["base_model.model.m.shira_weight"]) == 4


def test_a_history_starts_from_a_peft_folder(shira_folder, base_state, tmp_path):
    """TemporalGroup.from_peft (no OpenVDB): the folder is step 0; exported again, PEFT gives
    the same outputs."""
    folder, x, want = shira_folder
    g = TemporalGroup.from_peft(folder, shapes=SHAPES)
    stored = safetensors_numpy.load_file(str(folder / P.WEIGHTS))
    for name, m in g.items():
        r, c, v = m.active_weights(0)
        idx = stored[f"{name}.shira_indices"].astype(np.int64)
        order = np.lexsort((idx[1], idx[0]))
        np.testing.assert_array_equal(np.stack([r, c]), idx[:, order])
        np.testing.assert_array_equal(v, stored[f"{name}.shira_weight"][order])
    g.save_shira(tmp_path / "again", 0)
    got = outputs(peft.PeftModel.from_pretrained(fresh(base_state), tmp_path / "again"), x)
    np.testing.assert_array_equal(got, want)
