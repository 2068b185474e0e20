"""The write path: :class:`SparseAdapter`, a sparse LoRA delta whose live structure is an
OpenVDB tree (``hyprvdb._core``), :class:`AdapterSet`, many of them in one tree, and the
functions that combine adapters."""

from ._set import AdapterSet
from ._sparse import SparseAdapter, enforce_sparsity, fuse_adapters

__all__ = ["AdapterSet", "SparseAdapter", "enforce_sparsity", "fuse_adapters"]
