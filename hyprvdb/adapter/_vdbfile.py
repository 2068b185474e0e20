"""Checksummed, atomically written ``.vdb`` files.

OpenVDB's file format has no checksum, so a flipped byte can turn into a wrong weight, or into
a crash inside the reader. hyprvdb stores a CRC32 of the whole file (with the checksum's own
eight hex digits left out) as file-level metadata named ``hyprvdb_crc32``, and checks it before
OpenVDB parses anything. OpenVDB's own tools ignore that metadata and read the file as usual.

Files are written by :func:`hyprvdb._atomic.atomic_write` with :func:`stamp_checksum`.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO

from .._errors import CorruptFileError, ForeignFileError

CRC_KEY = "hyprvdb_crc32"
_CRC_PREFIX = b"crc32:"
CRC_PLACEHOLDER = "crc32:00000000"
# An OpenVDB file starts with the magic number 0x56444220 as a little-endian int64.
VDB_MAGIC = (0x56444220).to_bytes(8, "little")


def _file_metadata(data: bytes, shown: str) -> tuple[dict[bytes, tuple[int, bytes]], bool]:
    """OpenVDB's file header and file-level metadata: ``{name: (offset of value, value)}``
    and whether the file ended inside them (then it is truncated).

    Header: int64 magic, u32 file version, u32 library major and minor, u8 has-grid-offsets,
    36 characters of UUID, then u32 count and per entry: u32 length + name, u32 length + type
    name, u32 length + value.
    """
    meta: dict[bytes, tuple[int, bytes]] = {}
    pos = 8 + 4 + 8 + 1 + 36
    if len(data) < pos + 4:
        return meta, True
    (count,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if count > 4096:  # OpenVDB writes a handful; a huge count is damage, not a foreign file
        raise CorruptFileError(f"{shown}: file metadata claims {count} entries")
    for _ in range(count):
        fields = []
        for _ in range(3):
            if len(data) < pos + 4:
                return meta, True
            (n,) = struct.unpack_from("<I", data, pos)
            pos += 4
            if n > 1 << 20:
                raise CorruptFileError(f"{shown}: a file metadata field claims {n} bytes")
            if len(data) < pos + n:
                return meta, True
            fields.append((pos, data[pos:pos + n]))
            pos += n
        (_, name), _, (voff, value) = fields
        meta[name] = (voff, value)
    return meta, False


def _crc_field(data: bytes, path: os.PathLike | str) -> tuple[int, dict[bytes, bytes]]:
    """Offset of the eight hex digits of the checksum, and the file metadata."""
    shown = repr(os.fspath(path))
    meta, truncated = _file_metadata(data, shown)
    values = {k: v for k, (_, v) in meta.items()}
    key = CRC_KEY.encode()
    entry = meta.get(key)
    if entry is None:
        # One damaged byte in our key's name is damage, not another writer's file.
        entry = next(((o, v) for name, (o, v) in meta.items()
                      if len(name) == len(key) and sum(a != b for a, b in zip(name, key)) == 1),
                     None)
    if entry is None:
        if truncated:
            raise CorruptFileError(f"{shown} is truncated: it ends inside OpenVDB's file header")
        if data.find(key, 0, 1 << 16) >= 0:
            raise CorruptFileError(f"{shown}: the file metadata holding {CRC_KEY!r} is damaged")
        raise ForeignFileError(f"{shown} was not written by hyprvdb: it has no "
                               f"{CRC_KEY!r} file metadata")
    off, value = entry
    if not value.startswith(_CRC_PREFIX) or len(value) != len(CRC_PLACEHOLDER):
        raise CorruptFileError(f"{shown}: the {CRC_KEY!r} metadata is damaged")
    return off + len(_CRC_PREFIX), values


def _crc_without_field(data: bytes | bytearray, field: int) -> int:
    return zlib.crc32(data[field + 8:], zlib.crc32(data[:field])) & 0xFFFFFFFF


def check_vdb_bytes(data: bytes, path: os.PathLike | str) -> str:
    """Raise unless ``data`` is a complete, undamaged hyprvdb ``.vdb`` file; return its
    ``hyprvdb_format`` (empty if absent)."""
    shown = repr(os.fspath(path))
    if len(data) < len(VDB_MAGIC) or data[: len(VDB_MAGIC)] != VDB_MAGIC:
        if len(data) == 0:
            raise CorruptFileError(f"{shown} is empty")
        if VDB_MAGIC.startswith(data):
            raise CorruptFileError(f"{shown} is truncated: {len(data)} bytes, inside the magic "
                                   "number")
        raise ForeignFileError(f"{shown} is not an OpenVDB file (bad magic number "
                               f"{data[:8].hex()}, expected {VDB_MAGIC.hex()})")
    field, meta = _crc_field(data, path)
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
    return meta.get(b"hyprvdb_format", b"").decode("utf-8", "replace")


def stamp_checksum(f: BinaryIO, shown: str) -> None:
    """Write the CRC32 of a freshly written ``.vdb`` file into its checksum field (the stamp
    hyprvdb's atomic writer applies before the rename)."""
    data = bytearray(f.read())
    field, _ = _crc_field(bytes(data), shown)
    f.seek(field)
    f.write(b"%08x" % _crc_without_field(data, field))
