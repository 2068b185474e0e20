"""The write path: :class:`SparseAdapter`, a sparse LoRA delta whose live structure is an
OpenVDB tree (``hyprvdb._core``), and the functions that combine adapters."""

from ._sparse import SparseAdapter, enforce_sparsity, fuse_adapters

__all__ = ["SparseAdapter", "enforce_sparsity", "fuse_adapters"]
