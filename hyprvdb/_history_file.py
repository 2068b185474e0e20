"""The history file: a header, then one checksummed record per commit, appended.

Layout (little-endian)::

    header  b"HYPRVDBZ" | u16 version | u32 n | n bytes of JSON | u32 CRC32(JSON)
    record  b"ZR" | u8 kind | u32 n | u32 CRC32(kind byte + body) | n bytes of body

Record kinds: 1 base, 2 slice, 3 fold (prune_history), 4 rollback. Loading replays them in
order through the same code the live object ran, so the state after a load equals the state
before the save.

Slice body: i64 t | u32 n | u8 gap width | u32 resets | u32 z | z bytes of zlib holding the
gaps between the sorted linear indices (row * cols + col), the float32 deltas split into
four byte planes (sign and exponent bytes compress; random mantissas do not), and the reset
positions as u32. Base body: i64 t | u32 n | u8 gap width | u32 z | zlib(gaps, float64
values in eight byte planes).

A commit is one ``write`` of a whole record followed by fsync, so a crash leaves at most a
torn final record; loading keeps every record before the first one that is incomplete or
fails its checksum.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._errors import CorruptFileError, ForeignFileError
from ._vdbfile import atomic_write

MAGIC = b"HYPRVDBZ"
VERSION = 1
REC = b"ZR"
KINDS = {1: "base", 2: "slice", 3: "fold", 4: "rollback"}
_KIND_CODE = {v: k for k, v in KINDS.items()}
_REC_HEAD = struct.Struct("<2sBII")


class HistoryRecoveryWarning(UserWarning):
    """A history file had a torn or damaged tail; the steps before it were kept."""


def _narrow_gaps(idx: np.ndarray) -> tuple[np.ndarray, int]:
    gaps = np.diff(idx, prepend=0) if len(idx) else idx
    top = int(gaps.max()) if len(gaps) else 0
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if top <= np.iinfo(dt).max:
            return gaps.astype(dt), np.dtype(dt).itemsize
    raise AssertionError("unreachable")


def _planes(a: np.ndarray) -> bytes:
    return a.view(np.uint8).reshape(len(a), a.itemsize).T.tobytes()


def _unplanes(b: bytes, n: int, dtype: Any) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(b, np.uint8).reshape(size, n).T.copy().view(dtype).ravel()


def encode_slice(t: int, idx: np.ndarray, d32: np.ndarray, reset: np.ndarray) -> bytes:
    gaps, width = _narrow_gaps(idx)
    resets = np.flatnonzero(reset).astype(np.uint32)
    z = zlib.compress(gaps.tobytes() + _planes(d32.astype(np.float32)) + resets.tobytes(), 6)
    return struct.pack("<qIBII", t, len(idx), width, len(resets), len(z)) + z


def decode_slice(body: bytes) -> tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    t, n, width, nres, zlen = struct.unpack_from("<qIBII", body)
    raw = zlib.decompress(body[21:21 + zlen])
    gdt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
    if len(raw) != n * width + 4 * n + 4 * nres:
        raise ValueError("slice payload has the wrong size")
    idx = np.cumsum(np.frombuffer(raw, gdt, n), dtype=np.int64)
    d = _unplanes(raw[n * width:n * width + 4 * n], n, np.float32)
    reset = np.zeros(n, bool)
    reset[np.frombuffer(raw, np.uint32, nres, n * width + 4 * n)] = True
    return t, (idx, d.astype(np.float64), reset)


def encode_base(t: int, idx: np.ndarray, val: np.ndarray) -> bytes:
    gaps, width = _narrow_gaps(idx)
    z = zlib.compress(gaps.tobytes() + _planes(val.astype(np.float64)), 6)
    return struct.pack("<qIBI", t, len(idx), width, len(z)) + z


def decode_base(body: bytes) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
    t, n, width, zlen = struct.unpack_from("<qIBI", body)
    raw = zlib.decompress(body[17:17 + zlen])
    gdt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width]
    if len(raw) != n * width + 8 * n:
        raise ValueError("base payload has the wrong size")
    idx = np.cumsum(np.frombuffer(raw, gdt, n), dtype=np.int64)
    return t, (idx, _unplanes(raw[n * width:], n, np.float64))


def _record(kind: str, body: bytes) -> bytes:
    code = _KIND_CODE[kind]
    crc = zlib.crc32(bytes([code]) + body) & 0xFFFFFFFF
    return _REC_HEAD.pack(REC, code, len(body), crc) + body


def _header_bytes(header: dict[str, Any]) -> bytes:
    js = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<HI", VERSION, len(js)) + js + struct.pack(
        "<I", zlib.crc32(js) & 0xFFFFFFFF)


class HistoryFile:
    """An open history file that commits are appended to."""

    def __init__(self, path: str, end: int, sync: bool) -> None:
        self.path = path
        self._end = end  # offset just after the last good record
        self.sync = sync
        self._f: BinaryIO | None = None

    @classmethod
    def create(cls, path: str | os.PathLike, header: dict[str, Any], base_step: int,
               base_idx: np.ndarray, base_val: np.ndarray,
               slices: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
               *, sync: bool = True) -> HistoryFile:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        parts = [_header_bytes(header), _record("base", encode_base(base_step, base_idx,
                                                                    base_val))]
        parts += [_record("slice", encode_slice(*s)) for s in slices]
        data = b"".join(parts)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        atomic_write(path, write, checksum=False)
        return cls(os.fspath(path), len(data), sync)

    @classmethod
    def open(cls, path: str | os.PathLike, *, strict: bool = False, sync: bool = True
             ) -> tuple[dict[str, Any], list[tuple[str, int, Any]], HistoryFile]:
        path = os.fspath(path)
        data = Path(path).read_bytes()
        shown = repr(path)
        if not data.startswith(MAGIC):
            if len(data) < len(MAGIC) and MAGIC.startswith(data):
                raise CorruptFileError(f"{shown} is truncated inside its header")
            raise ForeignFileError(f"{shown} is not a hyprvdb history file (it starts with "
                                   f"{data[:8]!r}, expected {MAGIC!r})")
        try:
            version, n = struct.unpack_from("<HI", data, 8)
            js = data[14:14 + n]
            (crc,) = struct.unpack_from("<I", data, 14 + n)
        except struct.error:
            raise CorruptFileError(f"{shown} is truncated inside its header") from None
        if version != VERSION:
            raise ForeignFileError(f"{shown} has history format version {version}; this "
                                   f"hyprvdb reads version {VERSION}")
        if zlib.crc32(js) & 0xFFFFFFFF != crc:
            raise CorruptFileError(f"{shown}: the header fails its checksum")
        header = json.loads(js)
        pos = 18 + n
        records: list[tuple[str, int, Any]] = []
        damage = None
        while pos < len(data):
            try:
                magic, code, size, crc = _REC_HEAD.unpack_from(data, pos)
            except struct.error:
                damage = f"a torn record header at byte {pos}"
                break
            body = data[pos + _REC_HEAD.size: pos + _REC_HEAD.size + size]
            if magic != REC or code not in KINDS:
                damage = f"an unreadable record at byte {pos}"
                break
            if len(body) != size:
                damage = f"a torn record at byte {pos} ({len(body)} of {size} bytes)"
                break
            if zlib.crc32(bytes([code]) + body) & 0xFFFFFFFF != crc:
                damage = f"a record failing its checksum at byte {pos}"
                break
            kind = KINDS[code]
            try:
                if kind == "slice":
                    t, payload = decode_slice(body)
                elif kind == "base":
                    t, payload = decode_base(body)
                else:
                    (t,), payload = struct.unpack("<q", body), None
            except (ValueError, zlib.error, struct.error, IndexError) as exc:
                damage = f"a malformed {kind} record at byte {pos} ({exc})"
                break
            records.append((kind, t, payload))
            pos += _REC_HEAD.size + size
        if not records or records[0][0] != "base":
            raise CorruptFileError(f"{shown} has no readable base record"
                                   + (f": {damage}" if damage else ""))
        if damage:
            steps = [t for k, t, _ in records if k == "slice"]
            last = steps[-1] if steps else records[0][1]
            msg = (f"{shown} ends with {damage}; kept every record before it "
                   f"(newest step {last}), dropped {len(data) - pos} bytes")
            if strict:
                raise CorruptFileError(msg)
            warnings.warn(msg + "; the next commit overwrites them", HistoryRecoveryWarning,
                          stacklevel=3)
        return header, records, cls(path, pos, sync)

    def _append(self, record: bytes) -> None:
        if self._f is None:
            self._f = open(self.path, "r+b")
            self._f.truncate(self._end)
            self._f.seek(self._end)
        self._f.write(record)
        self._f.flush()
        if self.sync:
            os.fsync(self._f.fileno())
        self._end += len(record)

    def append_base(self, t: int, idx: np.ndarray, val: np.ndarray) -> None:
        self._append(_record("base", encode_base(t, idx, val)))

    def append_slice(self, t: int, idx: np.ndarray, d32: np.ndarray, reset: np.ndarray) -> None:
        self._append(_record("slice", encode_slice(t, idx, d32, reset)))

    def append_fold(self, cut: int) -> None:
        self._append(_record("fold", struct.pack("<q", cut)))

    def append_rollback(self, t: int) -> None:
        self._append(_record("rollback", struct.pack("<q", t)))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
