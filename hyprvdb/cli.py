"""The ``hyprvdb`` command: ``demo``, ``serve``, ``info PATH``, ``convert SRC DST``,
``plot HISTORY -o OUT.png``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import HyprVDBError

__all__ = ["main"]

_VDB_MAGIC = (0x56444220).to_bytes(8, "little")
_NVDB_FILE_MAGIC = b"NanoVDB"
_HISTORY_MAGIC = b"HYPRVDBZ"


def file_kind(path: str | os.PathLike) -> str:
    """``"vdb"``, ``"nvdb"``, ``"history"`` or ``"safetensors"``, from the file's first bytes;
    for a folder ``"peft"`` (``adapter_config.json`` + ``adapter_model.safetensors``) or
    ``"vdb folder"`` (``.vdb`` files)."""
    from . import _peft
    p = Path(path)
    if p.is_dir():
        if _peft.is_peft_folder(p):
            return "peft"
        if any(f.suffix == ".vdb" for f in p.iterdir()):
            return "vdb folder"
        raise IsADirectoryError(f"{os.fspath(path)!r} is a folder that is neither a PEFT "
                                f"adapter folder ({_peft.CONFIG} + {_peft.WEIGHTS}) nor holds "
                                f".vdb files")
    with open(p, "rb") as f:
        head = f.read(16)
    if head.startswith(_VDB_MAGIC):
        return "vdb"
    if head.startswith(_HISTORY_MAGIC):
        return "history"
    if head[:7] == _NVDB_FILE_MAGIC:
        return "nvdb"
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then JSON
        return "safetensors"
    raise ValueError(f"{os.fspath(path)!r} is not a .vdb, .nvdb, history or safetensors file "
                     f"(it starts with {head[:8]!r})")


# -------------------------------------------------------------------- info
def info(path: str) -> dict[str, Any]:
    """A description of a hyprvdb file."""
    kind = file_kind(path)
    if kind in ("peft", "vdb folder"):
        return _folder_info(path, kind)
    out: dict[str, Any] = {"file": path, "kind": kind, "bytes": os.path.getsize(path)}
    if kind == "vdb":
        a = _load_vdb(path)
        if hasattr(a, "add"):  # an AdapterSet
            out.update(kind="vdb (adapter set)", matrices=len(a), active=a.active_count(),
                       memory_bytes=a.memory_usage(),
                       members={k: [list(m.shape), m.active_count()] for k, m in a.items()})
        else:
            out.update(name=a.name, shape=list(a.shape), block_shape=list(a.block_shape),
                       active=a.active_count(), density=a.density(),
                       memory_bytes=a.memory_usage())
    elif kind == "nvdb":
        s = _load_nvdb(path)
        if hasattr(s, "cell_base"):
            out.update(kind="nvdb (set snapshot)", nanovdb_version=s.file_version,
                       matrices=len(s), step=s.step, active=s.nnz,
                       grid_bytes=s.nbytes, bytes_per_weight=s.nbytes / max(s.nnz, 1),
                       members={k: [list(s.shape(k)), s[k][1]] for k in s})
        else:
            out.update(nanovdb_version=s.file_version, name=s.name, shape=list(s.shape),
                       step=s.step, active=s.nnz, grid_bytes=s.nbytes,
                       checksum=f"{s.checksum:016x}")
    elif kind == "history":
        from .history import TemporalGroup
        g = TemporalGroup.load(path)
        try:
            out.update(matrices=len(g), base_step=g.base_step, latest=g.latest,
                       steps=len(g.steps) - 1, changes=g.change_count(),
                       memory_bytes=g.memory_usage(),
                       members={k: list(h.shape) for k, h in g.items()})
        finally:
            g.close()
    else:
        from safetensors.numpy import load_file
        t = load_file(path)
        out.update(tensors={k: [list(v.shape), str(v.dtype)] for k, v in sorted(t.items())})
    return out


def _folder_info(path: str, kind: str) -> dict[str, Any]:
    """Totals of a PEFT folder or a folder of .vdb files: matrices, active weights, density,
    bytes on disk per weight."""
    from . import _peft
    files = sorted(f for f in Path(path).iterdir() if f.is_file())
    out: dict[str, Any] = {"file": path, "kind": kind,
                           "bytes": sum(f.stat().st_size for f in files)}
    if kind == "peft":
        ptype = _peft.peft_type(path)
        out["kind"] = f"peft {ptype.lower()}"
        conf = _peft.read_config(Path(path))
        out["r"] = conf.get("r")
        if ptype == "SHIRA":
            members = {n: (shape, len(r)) for n, shape, r, _, _ in _peft.read_shira(path)}
            out["shapes_note"] = ("SHiRA folders do not store layer shapes: each is the "
                                  "smallest that holds its indices")
        else:
            _, pairs = _peft.read_lora(path)
            members = {n: ((b.shape[0], a.shape[1]), a.shape[0] * (a.shape[1] + b.shape[0]))
                       for n, (a, b) in sorted(pairs.items())}
            out["weights_note"] = "LoRA: active = the parameters of A and B"
    else:
        members = {}
        for f in files:
            if f.suffix == ".vdb":
                a = _load_vdb(str(f))
                for k, m in (a.items() if hasattr(a, "add") else [(a.name, a)]):
                    members[k] = (m.shape, m.active_count())
    active = sum(n for _, n in members.values())
    size = sum(s[0] * s[1] for s, _ in members.values())
    out.update(matrices=len(members), active=active, density=active / size if size else 0.0,
               bytes_per_weight=out["bytes"] / active if active else None,
               members={k: [list(s), n] for k, (s, n) in members.items()})
    return out


def _load_vdb(path: str) -> Any:
    """A SparseAdapter, or an AdapterSet where the file holds one."""
    from ._errors import ForeignFileError
    from .adapter import AdapterSet, SparseAdapter
    try:
        return SparseAdapter.load(path)
    except ForeignFileError as first:
        try:
            return AdapterSet.load(path)
        except ForeignFileError:
            raise first from None


def _load_nvdb(path: str) -> Any:
    """A Snapshot, or a SetSnapshot where the file holds one."""
    from ._errors import ForeignFileError
    from .snapshot import SetSnapshot, Snapshot
    try:
        return Snapshot.load_nvdb(path)
    except ForeignFileError as first:
        try:
            return SetSnapshot.load_nvdb(path)
        except ForeignFileError:
            raise first from None


# -------------------------------------------------------------------- convert
def _adapters_from_safetensors(path: str, density: float, alpha: float | None
                               ) -> dict[str, Any]:
    """PEFT LoRA pairs (sparsified by ``from_lora``) or dense 2-D tensors (top entries)."""
    from safetensors.numpy import load_file

    from . import _peft
    from .adapter import SparseAdapter
    tensors = load_file(path)
    pairs = _peft.lora_pairs(tensors)
    out = {}
    if pairs:
        cfg = Path(path).with_name(_peft.CONFIG)
        conf = _peft.read_config(cfg.parent) if cfg.is_file() else {}
        for name, (a, b) in sorted(pairs.items()):
            r = a.shape[0]
            al = _peft.lora_scale(conf, name, r, alpha) * r
            out[name] = SparseAdapter.from_lora(a, b, alpha=al, density=density, name=name)
        return out
    for name, w in sorted(tensors.items()):
        if w.ndim != 2:
            continue
        dense = SparseAdapter.from_dense(w.astype(np.float32), name=name)
        k = max(1, int(round(density * w.size)))
        out[name] = dense.top_k(k)
    if not out:
        raise ValueError(f"{path!r} holds neither LoRA pairs (*.lora_A.weight / *.lora_B.weight) "
                         "nor 2-D tensors")
    return out


def convert(src: str, dst: str, *, density: float = 0.01, alpha: float | None = None,
            step: int | None = None, shira: bool = False,
            shapes: dict[str, tuple[int, int]] | None = None,
            nvdb_version: str = "32.9") -> list[str]:
    """Convert between PEFT LoRA / dense safetensors, .vdb, .nvdb and history files.

    The destination's kind follows its suffix: ``.vdb``, ``.nvdb``, ``.safetensors`` (dense
    deltas), ``.hvh`` (a history whose bases are the adapters), or a folder (one ``.vdb`` per
    adapter). Returns the files written.
    """
    from .adapter import SparseAdapter
    kind = file_kind(src)
    if kind == "peft":
        from .adapter import AdapterSet
        got = AdapterSet.from_peft(src, density=density, alpha=alpha, shapes=shapes)
        adapters = {k: m.copy() for k, m in got.items()}
    elif kind == "vdb folder":
        adapters = {}
        for f in sorted(Path(src).glob("*.vdb")):
            a = _load_vdb(str(f))
            adapters.update({k: m.copy() for k, m in a.items()} if hasattr(a, "add")
                            else {a.name: a})
    elif kind == "safetensors":
        adapters = _adapters_from_safetensors(src, density, alpha)
    elif kind == "vdb":
        a = _load_vdb(src)
        adapters = {k: m.copy() for k, m in a.items()} if hasattr(a, "add") else {a.name: a}
    elif kind == "nvdb":
        s = _load_nvdb(src)
        if hasattr(s, "cell_base"):
            adapters = {}
            for k in s:
                adapters[k] = SparseAdapter(*s.shape(k), name=k)
                adapters[k].batch_update(*s.active_weights(k))
        else:
            a = SparseAdapter(*s.shape, name=s.name)
            a.batch_update(*s.active_weights())
            adapters = {s.name: a}
    else:
        from .history import TemporalGroup
        g = TemporalGroup.load(src)
        t = g.latest if step is None else step
        adapters = {k: h.weights_at_time(t) for k, h in g.items()}
        g.close()
    return _write(adapters, dst, step, shira, nvdb_version)


def _write(adapters: dict[str, Any], dst: str, step: int | None, shira: bool = False,
           nvdb_version: str = "32.9") -> list[str]:
    d = Path(dst)
    suffix = d.suffix.lower()
    if shira:
        from . import _peft
        _peft.write_shira(d, [(k, a.shape, *a.active_weights()) for k, a in adapters.items()])
        return [str(d / _peft.CONFIG), str(d / _peft.WEIGHTS)]
    if suffix == ".nvdb" and len(adapters) != 1:  # one grid of cells for every matrix
        from .snapshot import SetSnapshot
        SetSnapshot.from_matrices(adapters, step=step).save_nvdb(dst, version=nvdb_version)
        return [dst]
    if suffix == ".vdb" and len(adapters) != 1:  # one file, a grid per matrix
        from .adapter import AdapterSet
        AdapterSet.from_adapters(adapters).save(dst)
        return [dst]
    if suffix in (".vdb", ".nvdb"):
        (a,) = adapters.values()
        if suffix == ".vdb":
            a.save(dst)
        else:
            from .snapshot import Snapshot
            Snapshot.from_adapter(a, step=step).save_nvdb(dst, version=nvdb_version)
        return [dst]
    if suffix == ".safetensors":
        from safetensors.numpy import save_file
        save_file({k: a.to_dense() for k, a in adapters.items()}, dst)
        return [dst]
    if suffix == ".hvh":
        from .history import TemporalGroup
        g = TemporalGroup({k: a.shape for k, a in adapters.items()})
        for k, a in adapters.items():
            g[k].store_base(a)
        g.save(dst)
        g.close()
        return [dst]
    if suffix:
        raise ValueError(f"unknown destination kind {suffix!r}: use .vdb, .nvdb, .safetensors, "
                         ".hvh or a folder")
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for k, a in adapters.items():
        p = d / (k.replace("/", "_") + ".vdb")
        a.save(p)
        written.append(str(p))
    return written


# -------------------------------------------------------------------- plot
def plot(path: str, out: str, weight: tuple[str, int, int] | None = None) -> None:
    """Chart the history file ``path`` into the PNG ``out`` (see
    :func:`hyprvdb.plot.plot_history`)."""
    from .history import TemporalGroup
    from .plot import plot_history
    kind = file_kind(path)
    if kind != "history":
        raise ValueError(f"{path!r} is not a history file (.hvh): its kind is {kind!r}")
    g = TemporalGroup.load(path)
    try:
        plot_history(g, out, weight=weight)
    finally:
        g.close()


# -------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hyprvdb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="adapt MiniLM online on Python's own documentation")
    d.add_argument("--steps", type=int, default=12, help="adaptation steps (default 12)")
    d.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("serve", help="HTTP server: /embed /adapt /history /rollback /metrics")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--history", default="hyprvdb-history.hvh",
                   help="history file or fsspec URL such as s3://bucket/h (created or "
                        "appended to)")
    s.add_argument("--follow", metavar="URL", default=None,
                   help="serve, read-only, the history another process writes at this file "
                        "or URL (a replica): new steps are polled and served as they commit")
    s.add_argument("--follow-interval", type=float, default=0.5, metavar="SECONDS",
                   help="how often a replica polls its history (default 0.5)")
    s.add_argument("--model", default=None, help="model folder (default: embedded MiniLM)")
    i = sub.add_parser("info", help="describe a .vdb, .nvdb, history or safetensors file, a "
                                    "PEFT adapter folder or a folder of .vdb files")
    i.add_argument("file")
    c = sub.add_parser("convert", help="PEFT LoRA / dense safetensors <-> .vdb / .nvdb / .hvh")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--density", type=float, default=0.01,
                   help="fraction of entries kept when sparsifying (default 0.01)")
    c.add_argument("--alpha", type=float, default=None,
                   help="LoRA alpha (default: adapter_config.json beside the file, else r)")
    c.add_argument("--step", type=int, default=None, help="history step to export")
    c.add_argument("--shape", action="append", default=[], metavar="MODULE=OUTxIN",
                   help="a SHiRA layer's shape (the folder does not store it; default: the "
                        "smallest that holds its indices); repeat for each layer")
    c.add_argument("--nvdb-version", choices=("32.9", "32.4"), default="32.9",
                   help="NanoVDB layout of a .nvdb destination: current NanoVDB (32.6 and "
                        "later; default) or 32.4 (Debian 12's tools)")
    c.add_argument("--shira", action="store_true",
                   help="write DST as a PEFT SHiRA adapter folder (PeftModel.from_pretrained "
                        "loads it)")
    p = sub.add_parser("plot", help="chart a history file as a PNG: changes per step and "
                                    "active weights per matrix, a weight's trajectory")
    p.add_argument("history")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the PNG to write")
    p.add_argument("--weight", nargs=3, metavar=("NAME", "ROW", "COL"), default=None,
                   help="also draw the value of weight (ROW, COL) of matrix NAME at every step")
    args = parser.parse_args(argv)
    weight = None
    if args.command == "plot":
        if not args.output.lower().endswith(".png"):
            parser.error(f"-o must name a .png file, got {args.output!r}")
        if args.weight:
            name, row, col = args.weight
            if not (row.isdigit() and col.isdigit()):
                parser.error(f"--weight ROW and COL must be integers >= 0, got {row!r} and "
                             f"{col!r}")
            weight = (name, int(row), int(col))
    try:
        if args.command == "demo":
            from .serve import run_demo as run
            run(steps=args.steps, seed=args.seed)
        elif args.command == "serve":
            from .serve import serve
            if not args.follow_interval > 0:
                parser.error(f"--follow-interval must be > 0, got {args.follow_interval}")
            serve(args.host, args.port, args.follow or args.history, args.model,
                  follow=args.follow is not None, follow_interval=args.follow_interval)
        elif args.command == "info":
            print(json.dumps(info(args.file), indent=2))
        elif args.command == "plot":
            try:
                plot(args.history, args.output, weight)
            except (IndexError, ImportError, HyprVDBError) as exc:
                # a coordinate of --weight outside its matrix, no matplotlib, a damaged file
                print(f"hyprvdb plot: {exc}", file=sys.stderr)
                return 1
            print(args.output)
        else:
            if not 0 < args.density <= 1:
                parser.error(f"--density must be in (0, 1], got {args.density}")
            shapes = {}
            for item in args.shape:
                name, _, dims = item.partition("=")
                out_in = dims.lower().split("x")
                if not name or len(out_in) != 2 or not all(d.isdigit() and int(d) > 0
                                                            for d in out_in):
                    parser.error(f"--shape must be MODULE=OUTxIN (such as q_proj=384x384), "
                                 f"got {item!r}")
                shapes[name] = (int(out_in[0]), int(out_in[1]))
            for p in convert(args.src, args.dst, density=args.density, alpha=args.alpha,
                             step=args.step, shira=args.shira, shapes=shapes,
                             nvdb_version=args.nvdb_version):
                print(p)
    except (OSError, ValueError) as exc:
        print(f"hyprvdb {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
