"""hyprvdb: sparse LoRA adapters and the history of their weights in VDB sparse grids.

Importing hyprvdb loads neither OpenVDB nor a GPU library: the OpenVDB core is imported the
first time a write-path object (such as :class:`SparseAdapter`) is created.
"""

from ._errors import CorruptFileError, ForeignFileError, HyprVDBError, MissingExtensionError
from ._history_file import HistoryRecoveryWarning
from .adapter import SparseAdapter, enforce_sparsity, fuse_adapters
from .snapshot import Snapshot
from .temporal import CorrelatedPair, DeltaDetector, TemporalAdapter, TemporalGroup

__version__ = "0.1.0"

__all__ = [
    "CorrelatedPair",
    "CorruptFileError",
    "DeltaDetector",
    "ForeignFileError",
    "HistoryRecoveryWarning",
    "HyprVDBError",
    "MissingExtensionError",
    "Snapshot",
    "SparseAdapter",
    "TemporalAdapter",
    "TemporalGroup",
    "enforce_sparsity",
    "fuse_adapters",
    "__version__",
]
