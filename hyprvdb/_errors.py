"""The exception family of hyprvdb.

Bad arguments raise builtins (``ValueError`` for bad values and shapes, ``TypeError`` for
wrong kinds, ``IndexError`` for coordinates outside the matrix). Files that cannot be read
raise :class:`HyprVDBError` or one of its subclasses.
"""

from __future__ import annotations


class HyprVDBError(Exception):
    """Base class for errors about hyprvdb files and stored state.

    Examples
    --------
    >>> import hyprvdb
    >>> issubclass(hyprvdb.CorruptFileError, hyprvdb.HyprVDBError)
    True
    """


class CorruptFileError(HyprVDBError):
    """A file is truncated, damaged, or fails its checksum.

    Examples
    --------
    >>> import hyprvdb
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "h.hvh")
    >>> hyprvdb.TemporalGroup({"w": (4, 4)}).save(path)
    >>> data = bytearray(open(path, "rb").read())
    >>> data[20] ^= 0xFF  # a byte of the header's JSON
    >>> _ = open(path, "wb").write(bytes(data))
    >>> try:
    ...     hyprvdb.TemporalGroup.load(path)
    ... except hyprvdb.CorruptFileError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    the header fails its checksum
    """


class ForeignFileError(HyprVDBError):
    """A file is readable but was not written by hyprvdb (or by a newer format version).

    Examples
    --------
    >>> import hyprvdb
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> _ = open(path, "wb").write(b"not a history")
    >>> try:
    ...     hyprvdb.TemporalGroup.load(path)
    ... except hyprvdb.ForeignFileError as exc:
    ...     print(exc)
    '...notes.txt' is not a hyprvdb history file (it starts with b'not a hi', expected b'HYPRVDBZ')
    """


class MissingExtensionError(ImportError):
    """The compiled OpenVDB core is not built; the write path needs it.

    Examples
    --------
    >>> import hyprvdb
    >>> issubclass(hyprvdb.MissingExtensionError, ImportError)
    True
    """
