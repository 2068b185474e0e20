"""hyprvdb: sparse LoRA adapters and the history of their weights in VDB sparse grids.

Importing hyprvdb loads neither OpenVDB nor a GPU library: the OpenVDB core is imported the
first time a write-path object (such as :class:`SparseAdapter`) is created.
"""

from ._errors import CorruptFileError, ForeignFileError, HyprVDBError, MissingExtensionError
from .adapter import SparseAdapter, enforce_sparsity, fuse_adapters

__version__ = "0.1.0"

__all__ = [
    "CorruptFileError",
    "ForeignFileError",
    "HyprVDBError",
    "MissingExtensionError",
    "SparseAdapter",
    "enforce_sparsity",
    "fuse_adapters",
    "__version__",
]
