"""The read path's snapshots, written and read with numpy alone: a sparse matrix's active
weights as one NanoVDB index grid (:class:`Snapshot`), and the matrices of a whole adapter set
as one grid of 64-column cells (:class:`SetSnapshot`)."""

from ._set import SetSnapshot
from ._snapshot import Snapshot

__all__ = ["SetSnapshot", "Snapshot"]
