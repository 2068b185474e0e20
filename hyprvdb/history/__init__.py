"""The history of sparse adapters, with time as the Z axis: :class:`TemporalGroup` (the owner
of a history: its steps, its file, commits and surgery), :class:`TemporalAdapter` (one
matrix's history: a group of one, or a view of a group's member) and :class:`DeltaDetector`.

Reading a history (loading, time travel, windows, snapshots) needs no OpenVDB; only
:meth:`TemporalAdapter.accumulate` and the methods that return SparseAdapters do.
"""

from ._detector import DeltaDetector
from ._file import HistoryRecoveryWarning
from ._group import TemporalGroup
from ._matrix import ChangeLog, CorrelatedPair
from ._objects import is_url
from ._temporal import TemporalAdapter

__all__ = ["ChangeLog", "CorrelatedPair", "DeltaDetector", "HistoryRecoveryWarning",
           "TemporalAdapter", "TemporalGroup", "is_url"]
