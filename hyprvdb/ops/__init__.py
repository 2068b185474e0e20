"""The read path's operations: the sparse delta inside the matmul, gather, merge/unmerge,
and time windows, on ``device="cuda"`` (CuPy raw kernels) or ``"cpu"``.

On the CPU the same per-thread logic as the CUDA kernels runs compiled by g++
(``hyprvdb._cpu``, no OpenVDB needed); where that extension is not built, numpy computes the
same results. Nothing here imports CuPy or touches a GPU until a ``"cuda"`` delta is used.

Tolerances against a float64 reference: float32 relative 1e-5 of the row's magnitude;
float16 and bfloat16 results are the float32 result rounded once to the output dtype.
"""

from .._native import cuda_available
from ._delta import (DeviceDelta, delta_matmul, delta_matmul_segments,
                     delta_matmul_segments_csr, fused_linear, gather, gpu_plan, merge,
                     merge_layers, resolve_device, segment_tiles, unmerge)
from ._history import DeviceHistory, window_weights
from ._set import DeviceSetSnapshot, gather_set

__all__ = ["DeviceDelta", "DeviceHistory", "DeviceSetSnapshot", "cuda_available",
           "delta_matmul", "delta_matmul_segments", "delta_matmul_segments_csr", "fused_linear",
           "gather", "gather_set", "gpu_plan", "merge", "merge_layers",
           "resolve_device", "segment_tiles", "unmerge", "window_weights"]
