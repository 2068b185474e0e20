"""Checksummed, atomically written ``.vdb`` files.

OpenVDB's file format has no checksum, so a flipped byte can turn into a wrong weight, or into
a crash inside the reader. hyprvdb stores a CRC32 of the whole file (with the checksum's own
eight hex digits left out) as file-level metadata named ``hyprvdb_crc32``, and checks it before
OpenVDB parses anything. OpenVDB's own tools ignore that metadata and read the file as usual.

Writes go to a temporary file in the target's folder, are flushed to disk, and are renamed
over the target, so a crash mid-save leaves the old file intact.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ._errors import CorruptFileError, ForeignFileError

CRC_KEY = "hyprvdb_crc32"
_CRC_PREFIX = b"crc32:"
CRC_PLACEHOLDER = "crc32:00000000"
# An OpenVDB file starts with the magic number 0x56444220 as a little-endian int64.
VDB_MAGIC = (0x56444220).to_bytes(8, "little")


def _crc_field(data: bytes, path: os.PathLike | str) -> int:
    """Offset of the eight hex digits of the checksum field."""
    key = data.find(CRC_KEY.encode(), 0, 1 << 16)
    if key < 0:
        raise ForeignFileError(f"{os.fspath(path)!r} was not written by hyprvdb: it has no "
                               f"{CRC_KEY!r} file metadata")
    at = data.find(_CRC_PREFIX, key, key + 128)
    if at < 0 or at + len(CRC_PLACEHOLDER) > len(data):
        raise CorruptFileError(f"{os.fspath(path)!r}: the {CRC_KEY!r} metadata is damaged")
    return at + len(_CRC_PREFIX)


def _crc_without_field(data: bytes | bytearray, field: int) -> int:
    return zlib.crc32(data[field + 8:], zlib.crc32(data[:field])) & 0xFFFFFFFF


def check_vdb_bytes(data: bytes, path: os.PathLike | str) -> None:
    """Raise unless ``data`` is a complete, undamaged hyprvdb ``.vdb`` file."""
    shown = repr(os.fspath(path))
    if len(data) < len(VDB_MAGIC) or data[: len(VDB_MAGIC)] != VDB_MAGIC:
        if len(data) == 0:
            raise CorruptFileError(f"{shown} is empty")
        raise ForeignFileError(f"{shown} is not an OpenVDB file (bad magic number "
                               f"{data[:8].hex()}, expected {VDB_MAGIC.hex()})")
    field = _crc_field(data, path)
    stored = data[field: field + 8]
    try:
        expected = int(stored, 16)
    except ValueError:
        raise CorruptFileError(f"{shown}: checksum field {stored!r} is not hexadecimal") from None
    actual = _crc_without_field(data, field)
    if actual != expected:
        raise CorruptFileError(
            f"{shown} is truncated or damaged: CRC32 is {actual:08x}, the file says {expected:08x}"
        )


def atomic_write(path: os.PathLike | str, write: Callable[[str], None],
                 *, checksum: bool = True) -> None:
    """Call ``write(tmp_path)``, stamp the checksum, fsync, and rename over ``path``."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {os.fspath(path)!r}: folder {str(folder)!r} "
                                "does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "r+b") as f:
            if checksum:
                data = bytearray(f.read())
                field = _crc_field(bytes(data), tmp)
                f.seek(field)
                f.write(b"%08x" % _crc_without_field(data, field))
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


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
