"""Loading hyprvdb's CUDA kernels (``kernels/*.cu``) through CuPy's NVRTC, lazily.

Nothing here imports CuPy until a kernel is asked for. :func:`function` builds one
``cupy.RawModule`` per (file, defines) pair, memoized, with the ``#define``\\ s prepended, and
returns the compiled function for a name expression such as ``"delta_matmul<float>"``.

The same sources, options and name expressions are what the test suite compiles with NVRTC
on machines without a GPU (:func:`module_source`, :data:`NAME_EXPRESSIONS`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from .. import _native

__all__ = ["KERNEL_DIR", "NAME_EXPRESSIONS", "function", "module_source", "nvrtc_options",
           "cuda_include_dirs", "nanovdb_include_dir"]


def _kernel_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # installed: hyprvdb/kernels
    for d in (package / "kernels", package.parent / "kernels"):  # a checkout: ./kernels
        if (d / "common.cuh").is_file():
            return d
    return package / "kernels"


KERNEL_DIR = _kernel_dir()

_DTYPES = ("float", "__half", "__nv_bfloat16")

#: Every kernel of every file, as NVRTC name expressions.
NAME_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "matmul.cu": tuple(f"{k}<{t}>" for k in ("delta_matmul", "delta_matmul_staged",
                                             "fused_linear", "delta_matmul_segments",
                                             "delta_matmul_segments_staged")
                        for t in _DTYPES),
    "merge.cu": tuple(f"merge_layers<{t}>" for t in _DTYPES),
    "window.cu": ("window_rebuild",),
    "gather.cu": ("gather_index", "gather_set"),
}


def cuda_include_dirs() -> list[str]:
    """Folders holding ``cuda_fp16.h`` (CUDA toolkit, or the pip ``nvidia-*`` wheels)."""
    found: list[str] = []
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    cands = [Path(r) / "include" for r in roots if r]
    for p in map(Path, sys.path):
        cands += list((p / "nvidia").glob("*/include")) if (p / "nvidia").is_dir() else []
    for c in cands:
        if (c / "cuda_fp16.h").is_file() and str(c) not in found:
            found.append(str(c))
    return found


#: Kernel files that walk NanoVDB trees through NanoVDB's own headers.
NANOVDB_FILES = ("gather.cu",)


def nanovdb_include_dir() -> str | None:
    """The folder holding ``nanovdb/NanoVDB.h`` for NVRTC: ``$HYPRVDB_NANOVDB_INCLUDE``, the
    headers ``hyprvdb._cpu`` was built against, or a system or conda prefix."""
    cands = [os.environ.get("HYPRVDB_NANOVDB_INCLUDE")]
    cpu = _native.cpu()
    cands.append(getattr(cpu, "nanovdb_include", None))
    prefix = os.environ.get("CONDA_PREFIX")
    cands += [str(Path(prefix) / "include") if prefix else None, "/usr/include",
              "/usr/local/include", "/opt/homebrew/include"]
    for c in cands:
        if c and (Path(c) / "nanovdb" / "NanoVDB.h").is_file():
            return c
    return None


def nvrtc_options(arch: str | None = None, filename: str | None = None) -> tuple[str, ...]:
    """NVRTC options for ``kernels/<filename>``. NanoVDB 32.4's header compiles under NVRTC
    only with ``-default-device`` (its free functions carry no ``__device__``)."""
    opts = ["-std=c++17", f"-I{KERNEL_DIR}"] + [f"-I{d}" for d in cuda_include_dirs()]
    if filename in NANOVDB_FILES:
        nano = nanovdb_include_dir()
        if nano is None:
            raise RuntimeError(f"kernels/{filename} needs NanoVDB's headers (nanovdb/NanoVDB.h): "
                               "install them (Debian: libnanovdb-dev) or point "
                               "HYPRVDB_NANOVDB_INCLUDE at the folder holding nanovdb/")
        opts += ["-default-device", f"-I{nano}"]
    if arch:
        opts.append(f"--gpu-architecture={arch}")
    return tuple(opts)


def module_source(filename: str, defines: tuple[tuple[str, Any], ...] = ()) -> str:
    """The source NVRTC compiles: generated ``#define`` lines, then the kernel file."""
    path = KERNEL_DIR / filename
    if filename not in NAME_EXPRESSIONS or not path.is_file():
        raise ValueError(f"unknown kernel file {filename!r}; known: {sorted(NAME_EXPRESSIONS)}")
    head = "".join(f"#define {k} {v}\n" for k, v in defines)
    nano = _file_digest(Path(nanovdb_include_dir() or ".") / "nanovdb" / "NanoVDB.h") \
        if filename in NANOVDB_FILES else ""
    return f"// headers {_headers_digest()}{nano}\n" + head + path.read_text()


@functools.cache
def _headers_digest() -> str:
    """A digest of the included ``*.cuh`` files. CuPy's compile cache is keyed on the source
    string alone, so without it an edited header would keep running an old cached binary."""
    h = hashlib.sha256()
    for p in sorted(KERNEL_DIR.glob("*.cuh")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def _file_digest(path: Path) -> str:
    return " nanovdb " + hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() \
        else ""


@functools.cache
def _module(filename: str, defines: tuple[tuple[str, Any], ...]) -> Any:
    import cupy

    return cupy.RawModule(code=module_source(filename, defines),
                          options=nvrtc_options(filename=filename),
                          name_expressions=NAME_EXPRESSIONS[filename])


def function(filename: str, name: str, **defines: Any) -> Any:
    """The compiled kernel ``name`` (a name expression) of ``kernels/<filename>``."""
    if name not in NAME_EXPRESSIONS.get(filename, ()):
        raise ValueError(f"{filename!r} has no kernel {name!r}; it has "
                         f"{list(NAME_EXPRESSIONS.get(filename, ()))}")
    return _function(filename, name, tuple(sorted(defines.items())))


@functools.cache
def _function(filename: str, name: str, defines: tuple[tuple[str, Any], ...]) -> Any:
    # Looked up once: a launch then costs CuPy's argument packing alone.
    return _module(filename, defines).get_function(name)
