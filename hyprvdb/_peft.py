"""PEFT adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``), read and
written with numpy and ``safetensors`` alone: no PEFT, no PyTorch.

Two adapter types are read:

* **LoRA** (``peft_type`` ``"LORA"``): pairs ``<module>.lora_A.weight`` (r x in) and
  ``<module>.lora_B.weight`` (out x r); the update is ``lora_alpha / r · B·A`` (``lora_alpha``
  and ``r`` from the config, ``rank_pattern`` / ``alpha_pattern`` per module where given).
* **SHiRA** (``peft_type`` ``"SHIRA"``, PEFT ≥ 0.17): ``<module>.shira_weight`` (float, n) and
  ``<module>.shira_indices`` (int, 2 x n: output rows, input columns); the update is the sparse
  matrix of those values, repeated coordinates summed (``torch.sparse_coo_tensor``'s rule),
  shape ``(out, in)`` of the module, which the folder does not store: it comes from the
  caller or, where not given, from the largest index (a lower bound).

SHiRA folders are written the way ``PeftModel.save_pretrained`` writes them, so that
``PeftModel.from_pretrained`` loads them. PEFT builds each SHiRA layer with exactly
``r · (in + out)`` weights for the config's one ``r``, so a layer with fewer active weights is
padded with explicit zeros at inactive coordinates (the first ones in row-major order): the
layer's output is unchanged. ``r`` is the smallest that holds every layer's weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."

Entry = tuple  # (name, (rows, cols), rows int64, cols int64, values float32)


def is_peft_folder(path: Any) -> bool:
    p = Path(path)
    return p.is_dir() and (p / CONFIG).is_file() and (p / WEIGHTS).is_file()


def read_config(folder: Path) -> dict:
    try:
        conf = json.loads((folder / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(folder / CONFIG)!r} is not readable JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise ValueError(f"{str(folder / CONFIG)!r} holds {type(conf).__name__}, not an object")
    return conf


def peft_type(path: Any) -> str:
    """``"LORA"`` or ``"SHIRA"`` for a PEFT folder; ValueError for another type."""
    kind = str(read_config(Path(path)).get("peft_type", "")).upper()
    if kind not in ("LORA", "SHIRA"):
        raise ValueError(f"{os.fspath(path)!r} holds a PEFT adapter of type {kind or 'unknown'!r}; "
                         f"hyprvdb reads LORA and SHIRA")
    return kind


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {exc}") from None


def lora_pairs(tensors: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{module: (A, B)}`` of a PEFT LoRA state dict."""
    pairs = {}
    for k, a in tensors.items():
        if k.endswith("lora_A.weight"):
            base = k[: -len("lora_A.weight")].rstrip(".")
            b = tensors.get(f"{base}.lora_B.weight")
            if b is None:
                raise ValueError(f"{k} has no matching {base}.lora_B.weight")
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise ValueError(f"{base}: lora_A {a.shape} and lora_B {b.shape} do not make a "
                                 f"product B·A")
            pairs[base] = (a, b)
    return pairs


def lora_scale(conf: dict, module: str, r: int, alpha: float | None) -> float:
    """``alpha / r`` of a module: ``alpha`` when given, else the config's ``alpha_pattern`` entry
    whose key ends the module's name, else ``lora_alpha`` (default r)."""
    if alpha is None:
        alpha = float(conf.get("lora_alpha", r))
        for key, a in (conf.get("alpha_pattern") or {}).items():
            if module == key or module.endswith("." + key):
                alpha = float(a)
    return alpha / r


def read_lora(folder: Any) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    folder = Path(folder)
    pairs = lora_pairs(_tensors(folder / WEIGHTS))
    if not pairs:
        raise ValueError(f"{os.fspath(folder)!r}: its {WEIGHTS} holds no LoRA pairs "
                         f"(*.lora_A.weight / *.lora_B.weight)")
    return read_config(folder), pairs


def lora_topk(a: np.ndarray, b: np.ndarray, scale: float, density: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, float64 values) of the ``max(1, round(density · out · in))`` entries of
    largest magnitude of ``scale · B·A`` (computed in float64)."""
    delta = scale * (b.astype(np.float64) @ a.astype(np.float64))
    n_cols = delta.shape[1]
    k = max(1, int(round(density * delta.size)))
    flat = np.abs(delta).ravel()
    keep = np.argpartition(flat, flat.size - k)[flat.size - k:] if k < flat.size \
        else np.arange(flat.size)
    return keep // n_cols, keep % n_cols, delta.ravel()[keep]


def read_peft(folder: Any, *, density: float = 0.01, alpha: float | None = None,
              shapes: dict[str, tuple[int, int]] | None = None) -> list[Entry]:
    """A PEFT folder's layers as entries sorted by name: SHiRA as they are (see
    :func:`read_shira`), LoRA sparsified by :func:`lora_topk`."""
    if not is_peft_folder(folder):
        raise ValueError(f"path must be a PEFT adapter folder ({CONFIG} and {WEIGHTS}), got "
                         f"{os.fspath(folder)!r}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if peft_type(folder) == "SHIRA":
        return read_shira(folder, shapes)
    conf, pairs = read_lora(folder)
    out = []
    for name in sorted(pairs):
        a, b = pairs[name]
        rank = a.shape[0]
        rows, cols, vals = lora_topk(a, b, lora_scale(conf, name, rank, alpha), density)
        out.append((name, (b.shape[0], a.shape[1]), rows, cols, vals.astype(np.float32)))
    return out


def read_shira(folder: Any, shapes: dict[str, tuple[int, int]] | None = None) -> list[Entry]:
    """The SHiRA layers of a folder as entries sorted by name, repeated coordinates summed."""
    folder = Path(folder)
    if peft_type(folder) != "SHIRA":
        raise ValueError(f"{os.fspath(folder)!r} is not a SHiRA adapter")
    tensors = _tensors(folder / WEIGHTS)
    out = []
    names = sorted(k[: -len(".shira_weight")] for k in tensors if k.endswith(".shira_weight"))
    if not names:
        raise ValueError(f"{os.fspath(folder)!r}: its {WEIGHTS} holds no *.shira_weight tensor")
    for name in names:
        w = tensors[f"{name}.shira_weight"]
        idx = tensors.get(f"{name}.shira_indices")
        if idx is None:
            raise ValueError(f"{name}.shira_weight has no matching {name}.shira_indices")
        if w.ndim != 1 or idx.ndim != 2 or idx.shape != (2, w.shape[0]):
            raise ValueError(f"{name}: shira_indices of shape {idx.shape} do not match "
                             f"shira_weight of shape {w.shape} (expected (2, {w.shape[0]}))")
        if idx.dtype.kind == "f":  # PEFT on Windows stores them as float32
            if not np.array_equal(idx, np.round(idx)):
                raise ValueError(f"{name}.shira_indices holds non-integer values")
        idx = idx.astype(np.int64)
        if idx.size and idx.min() < 0:
            raise ValueError(f"{name}.shira_indices holds a negative index {int(idx.min())}")
        if not np.isfinite(w).all():
            raise ValueError(f"{name}.shira_weight holds a value that is not finite")
        module = name[len(PREFIX):] if name.startswith(PREFIX) else name
        shape = (shapes or {}).get(module) or (shapes or {}).get(name)
        if shape is None:
            shape = (int(idx[0].max()) + 1 if idx.size else 1,
                     int(idx[1].max()) + 1 if idx.size else 1)
        elif idx.size and (idx[0].max() >= shape[0] or idx[1].max() >= shape[1]):
            raise ValueError(f"{name}: an index ({int(idx[0].max())}, {int(idx[1].max())}) lies "
                             f"outside the module's shape {tuple(shape)}")
        rows, cols, vals = _coalesce(idx[0], idx[1], w.astype(np.float64), shape[1])
        out.append((name, (int(shape[0]), int(shape[1])), rows, cols, vals.astype(np.float32)))
    return out


def _coalesce(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_cols: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lin = rows * n_cols + cols
    uniq, inv = np.unique(lin, return_inverse=True)
    summed = np.zeros(len(uniq), dtype=np.float64)
    np.add.at(summed, inv, vals)
    return uniq // n_cols, uniq % n_cols, summed


def shira_rank(entries: list[Entry]) -> int:
    """The smallest r with r · (in + out) at least every layer's weight count."""
    r = 1
    for name, (n_out, n_in), rows, _, _ in entries:
        need = -(-len(rows) // (n_out + n_in))
        r = max(r, need)
    for name, (n_out, n_in), _, _, _ in entries:
        if r * (n_out + n_in) > n_out * n_in:
            raise ValueError(f"{name}: SHiRA needs r·(in + out) = {r}·{n_in + n_out} weights, "
                             f"more than the {n_out}x{n_in} layer has; PEFT cannot load it")
    return r


def write_shira(folder: Any, entries: list[Entry], *, r: int | None = None,
                base_model: str | None = None) -> Path:
    """Write a SHiRA folder PEFT's ``PeftModel.from_pretrained`` loads; returns its path.

    ``entries`` are ``(module name, (out, in), rows, cols, values)``; a name without
    ``base_model.model.`` gets it. Written to a temporary folder and renamed into place.
    """
    from safetensors.numpy import save_file

    from ._atomic import write_bytes
    folder = Path(folder)
    if not entries:
        raise ValueError("a SHiRA folder needs at least one layer")
    need = shira_rank(entries)
    if r is None:
        r = need
    elif not isinstance(r, int) or isinstance(r, bool) or r < need:
        raise ValueError(f"r must be an int of at least {need} (the smallest that holds every "
                         f"layer's weights), got {r!r}")
    tensors = {}
    targets = []
    for name, (n_out, n_in), rows, cols, vals in entries:
        n = r * (n_out + n_in)
        if n > n_out * n_in:
            raise ValueError(f"{name}: r = {r} needs {n} weights, more than the {n_out}x{n_in} "
                             f"layer has")
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        vals = np.asarray(vals, dtype=np.float32)
        lin = rows * n_in + cols
        pad = n - len(lin)
        if pad:
            free = np.setdiff1d(np.arange(min(n_out * n_in, len(lin) + pad), dtype=np.int64),
                                lin, assume_unique=False)[:pad]
            lin = np.concatenate([lin, free])
            vals = np.concatenate([vals, np.zeros(pad, np.float32)])
        order = np.argsort(lin, kind="stable")
        lin, vals = lin[order], vals[order]
        key = name if name.startswith(PREFIX) else PREFIX + name
        tensors[f"{key}.shira_weight"] = np.ascontiguousarray(vals)
        tensors[f"{key}.shira_indices"] = np.ascontiguousarray(
            np.stack([lin // n_in, lin % n_in]).astype(np.int32))
        targets.append(key[len(PREFIX):])
    conf = {"peft_type": "SHIRA", "r": r, "mask_type": "random", "random_seed": None,
            "target_modules": sorted(targets), "fan_in_fan_out": False, "init_weights": True,
            "modules_to_save": None, "base_model_name_or_path": base_model,
            "inference_mode": True, "task_type": None, "revision": None}
    tmp = folder.with_name(folder.name + ".tmp-hyprvdb")
    if tmp.exists():
        for f in tmp.iterdir():
            f.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp / WEIGHTS))
    write_bytes(tmp / CONFIG, json.dumps(conf, indent=2).encode() + b"\n")
    if folder.exists():
        if not is_peft_folder(folder) and any(folder.iterdir()):
            raise FileExistsError(f"{os.fspath(folder)!r} exists and is not a PEFT folder; "
                                  f"not overwriting it")
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    os.replace(tmp, folder)
    return folder
