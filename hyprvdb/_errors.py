"""The exception family of hyprvdb.

Bad arguments raise builtins (``ValueError`` for bad values and shapes, ``TypeError`` for
wrong kinds, ``IndexError`` for coordinates outside the matrix). Files that cannot be read
raise :class:`HyprVDBError` or one of its subclasses.
"""

from __future__ import annotations


class HyprVDBError(Exception):
    """Base class for errors about hyprvdb files and stored state."""


class CorruptFileError(HyprVDBError):
    """A file is truncated, damaged, or fails its checksum."""


class ForeignFileError(HyprVDBError):
    """A file is readable but was not written by hyprvdb (or by a newer format version)."""


class MissingExtensionError(ImportError):
    """The compiled OpenVDB core is not built; the write path needs it."""
