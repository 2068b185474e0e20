"""The read path's snapshots: a sparse matrix's active weights as one NanoVDB index grid
(:class:`Snapshot`), written and read with numpy alone."""

from ._snapshot import Snapshot

__all__ = ["Snapshot"]
