"""hyprvdb: sparse LoRA adapters and the history of their weights in VDB sparse grids.

The package is laid out by tier:

- :mod:`hyprvdb.adapter` — the write path: :class:`SparseAdapter` on an OpenVDB tree
  (``hyprvdb._core``, built where OpenVDB is found) and :class:`AdapterSet`, a model's
  adapters in one tree;
- :mod:`hyprvdb.history` — :class:`TemporalGroup` / :class:`TemporalAdapter`: time as the Z
  axis; reading needs no OpenVDB;
- :mod:`hyprvdb.snapshot` — :class:`Snapshot` and :class:`SetSnapshot`, NanoVDB grids
  written and read with numpy;
- :mod:`hyprvdb.ops` — the delta inside the matmul on a GPU (CuPy) or the CPU
  (``hyprvdb._cpu``, no OpenVDB);
- :mod:`hyprvdb.jax` and :mod:`hyprvdb.serve` — the JAX bridge and serving.

Importing hyprvdb loads neither OpenVDB, JAX nor a GPU library: the OpenVDB core is imported
the first time a write-path object (such as :class:`SparseAdapter`) is created, and JAX the
first time ``hyprvdb.Follower`` (:class:`hyprvdb.serve.Follower`, a serving replica) is named.
"""

from ._errors import CorruptFileError, ForeignFileError, HyprVDBError, MissingExtensionError
from .adapter import AdapterSet, SparseAdapter, enforce_sparsity, fuse_adapters
from .history import (CorrelatedPair, DeltaDetector, HistoryRecoveryWarning, TemporalAdapter,
                      TemporalGroup)
from .snapshot import SetSnapshot, Snapshot

__version__ = "0.1.0"

__all__ = [
    "AdapterSet",
    "CorrelatedPair",
    "CorruptFileError",
    "DeltaDetector",
    "Follower",
    "ForeignFileError",
    "HistoryRecoveryWarning",
    "HyprVDBError",
    "MissingExtensionError",
    "SetSnapshot",
    "Snapshot",
    "SparseAdapter",
    "TemporalAdapter",
    "TemporalGroup",
    "enforce_sparsity",
    "fuse_adapters",
    "__version__",
]


def __getattr__(name: str) -> object:
    if name == "Follower":  # serving: imports JAX, so only when asked for
        from .serve import Follower
        return Follower
    raise AttributeError(f"module 'hyprvdb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Follower"})
