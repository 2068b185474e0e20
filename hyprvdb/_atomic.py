"""The one atomic writer of hyprvdb's three file formats (``.vdb``, ``.nvdb``, history files).

A file is written to a temporary file in the target's folder, optionally stamped (the ``.vdb``
checksum is computed over the bytes written), flushed to disk and renamed over the target, and
the folder is fsynced: a crash mid-save leaves the old file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: os.PathLike | str, write: Callable[[str], None], *,
                 stamp: Callable[[BinaryIO, str], None] | None = None) -> None:
    """Call ``write(tmp_path)``, then ``stamp(file, tmp_path)`` on the file opened ``r+b``,
    fsync, and rename over ``path``."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {os.fspath(path)!r}: folder {str(folder)!r} "
                                "does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # what open() would give: mkstemp makes it 0600
    try:
        write(tmp)
        with open(tmp, "r+b") as f:
            if stamp is not None:
                stamp(f, tmp)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes(path: os.PathLike | str, *parts: bytes | memoryview) -> None:
    """Atomically write the concatenation of ``parts`` to ``path``."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            for p in parts:
                f.write(p)

    atomic_write(path, write)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
