"""The history file: a header, then one checksummed record per commit, appended.

One file holds the histories of one or more matrices (a :class:`TemporalGroup`; a lone
:class:`TemporalAdapter` is a group of one) committed together: a step is one record for all
of them, so its fixed costs are paid once per step, not once per matrix.

Layout (little-endian)::

    header  b"HYPRVDBZ" | u16 version | u32 n | n bytes of JSON | u32 CRC32(JSON)
    record  b"ZR" | u8 kind | u32 n | u32 CRC32(kind byte + body) | n bytes of body

The JSON lists the members (name, shape, settings). Record kinds: 1 base, 2 step, 3 fold
(prune_history), 4 rollback. Loading replays them in order through the same code the live
objects ran, so the state after a load equals the state before the save.

Step body: i64 t | u32 m | u8 gap width | u32 resets | raw deflate of: the m member numbers
(u32), their change counts (u32), every member's gaps between its sorted linear indices
(row * cols + col; the first gap counts from 0) split into byte planes, the float32 deltas
split into four byte planes (sign and exponent bytes compress, random mantissas do not), and
the reset positions (u32). Base body: u32 member | i64 t | u32 n | u8 gap width | raw
deflate of the gap planes and the float64 values' eight byte planes.

A commit is one ``write`` of a whole record, so a killed process leaves at most a torn final
record; loading keeps every record before the first one that is incomplete or fails its
checksum. With ``sync=True`` every record is also fsynced (durable across power loss).
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

from .._errors import CorruptFileError, ForeignFileError
from .._atomic import write_bytes

MAGIC = b"HYPRVDBZ"
VERSION = 1
REC = b"ZR"
KINDS = {1: "base", 2: "step", 3: "fold", 4: "rollback"}
_KIND_CODE = {v: k for k, v in KINDS.items()}
_REC_HEAD = struct.Struct("<2sBII")


class HistoryRecoveryWarning(UserWarning):
    """A history file had a torn or damaged tail; the steps before it were kept."""


def _gap_width(gaps: np.ndarray) -> int:
    top = int(gaps.max()) if len(gaps) else 0
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if top <= np.iinfo(dt).max:
            return np.dtype(dt).itemsize
    raise AssertionError("unreachable")


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _planes(a: np.ndarray) -> bytes:
    return a.view(np.uint8).reshape(len(a), a.itemsize).T.tobytes()


def _unplanes(b: bytes, n: int, dtype: Any) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    return np.frombuffer(b, np.uint8).reshape(size, n).T.copy().view(dtype).ravel()


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, -15)  # raw deflate: no zlib header or trailer
    return c.compress(data) + c.flush()


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15)
    out = d.decompress(data)
    if not d.eof or d.unused_data:
        raise ValueError("compressed payload is incomplete or has trailing bytes")
    return out


Slice = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # member, idx, float32 d, reset


def encode_step(t: int, slices: list[Slice]) -> bytes:
    members = np.array([s[0] for s in slices], np.uint32)
    counts = np.array([len(s[1]) for s in slices], np.uint32)
    gaps = np.concatenate([np.diff(s[1], prepend=0) for s in slices]) if slices else \
        np.zeros(0, np.int64)
    width = _gap_width(gaps)
    d = np.concatenate([s[2] for s in slices]).astype(np.float32) if slices else \
        np.zeros(0, np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)[:-1]]) if slices else []
    resets = np.concatenate([np.flatnonzero(s[3]) + o for s, o in zip(slices, offsets)]) \
        if slices else np.zeros(0, np.int64)
    z = _deflate(members.tobytes() + counts.tobytes() + _planes(gaps.astype(_UINT[width]))
                 + _planes(d) + resets.astype(np.uint32).tobytes())
    return struct.pack("<qIBI", t, len(slices), width, len(resets)) + z


def decode_step(body: bytes) -> tuple[int, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]]:
    t, m, width, nres = struct.unpack_from("<qIBI", body)
    raw = _inflate(body[17:])
    members = np.frombuffer(raw, np.uint32, m, 0)
    counts = np.frombuffer(raw, np.uint32, m, 4 * m).astype(np.int64)
    n = int(counts.sum())
    if width not in _UINT or len(raw) != 8 * m + n * width + 4 * n + 4 * nres:
        raise ValueError("step payload has the wrong size")
    at = 8 * m
    gaps = _unplanes(raw[at:at + n * width], n, _UINT[width]).astype(np.int64)
    at += n * width
    d = _unplanes(raw[at:at + 4 * n], n, np.float32).astype(np.float64)
    reset = np.zeros(n, bool)
    reset[np.frombuffer(raw, np.uint32, nres, at + 4 * n)] = True
    out = []
    start = 0
    for member, c in zip(members.tolist(), counts.tolist()):
        sl = slice(start, start + c)
        out.append((member, np.cumsum(gaps[sl]), d[sl], reset[sl]))
        start += c
    return t, out


def encode_base(member: int, t: int, idx: np.ndarray, val: np.ndarray) -> bytes:
    gaps = np.diff(idx, prepend=0) if len(idx) else idx
    width = _gap_width(gaps)
    z = _deflate(_planes(gaps.astype(_UINT[width])) + _planes(val.astype(np.float64)))
    return struct.pack("<IqIB", member, t, len(idx), width) + z


def decode_base(body: bytes) -> tuple[int, tuple[int, np.ndarray, np.ndarray]]:
    member, t, n, width = struct.unpack_from("<IqIB", body)
    raw = _inflate(body[17:])
    if width not in _UINT or len(raw) != n * width + 8 * n:
        raise ValueError("base payload has the wrong size")
    idx = np.cumsum(_unplanes(raw[:n * width], n, _UINT[width]).astype(np.int64))
    return t, (member, idx, _unplanes(raw[n * width:], n, np.float64))


def _record(kind: str, body: bytes) -> bytes:
    code = _KIND_CODE[kind]
    crc = zlib.crc32(bytes([code]) + body) & 0xFFFFFFFF
    return _REC_HEAD.pack(REC, code, len(body), crc) + body


def _header_bytes(header: dict[str, Any]) -> bytes:
    js = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<HI", VERSION, len(js)) + js + struct.pack(
        "<I", zlib.crc32(js) & 0xFFFFFFFF)


def _newest_step(records: list[tuple[str, int, Any]]) -> int:
    """The newest step the records leave, rollbacks and folds included."""
    steps: list[int] = []
    base = 0
    for kind, t, _ in records:
        if kind == "base":
            base, steps = t, []
        elif kind == "step":
            steps.append(t)
        elif kind == "rollback":
            steps = [s for s in steps if s <= t]
        elif kind == "fold":
            base, steps = t, [s for s in steps if s > t]
    return steps[-1] if steps else base


_MEMBER_KEYS = {"rows": int, "cols": int, "name": str, "compact_every": int}


def _check_header(header: Any, shown: str) -> None:
    """Raise CorruptFileError unless the header describes members hyprvdb can build."""
    def bad(why: str) -> CorruptFileError:
        return CorruptFileError(f"{shown}: the header {why}")

    if not isinstance(header, dict) or not isinstance(header.get("members"), list) \
            or not header["members"]:
        raise bad("lists no matrices")
    for i, m in enumerate(header["members"]):
        if not isinstance(m, dict):
            raise bad(f"entry {i} is not an object")
        for key, kind in _MEMBER_KEYS.items():
            v = m.get(key)
            if not isinstance(v, kind) or isinstance(v, bool):
                raise bad(f"entry {i} has no valid {key!r} (got {v!r})")
        if m["rows"] <= 0 or m["cols"] <= 0 or m["compact_every"] <= 0:
            raise bad(f"entry {i} has a non-positive size")
        mh = m.get("max_history")
        if mh is not None and (not isinstance(mh, int) or isinstance(mh, bool) or mh <= 0):
            raise bad(f"entry {i} has an invalid max_history {mh!r}")


class HistoryFile:
    """An open history file that commits are appended to."""

    def __init__(self, path: str, end: int, sync: bool) -> None:
        self.path = path
        self._end = end  # offset just after the last good record
        self.sync = sync
        self._f: BinaryIO | None = None

    @classmethod
    def create(cls, path: str | os.PathLike, header: dict[str, Any],
               bases: list[tuple[int, int, np.ndarray, np.ndarray]],
               steps: list[tuple[int, list[Slice]]], *, sync: bool = False) -> HistoryFile:
        """Write a whole history atomically: ``bases`` as (member, t, idx, val), then
        ``steps`` as (t, slices)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        parts = [_header_bytes(header)]
        parts += [_record("base", encode_base(*b)) for b in bases]
        parts += [_record("step", encode_step(t, sl)) for t, sl in steps]
        write_bytes(path, *parts)
        return cls(os.fspath(path), sum(len(p) for p in parts), sync)

    @classmethod
    def open(cls, path: str | os.PathLike, *, strict: bool = False, sync: bool = False
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
        try:
            header = json.loads(js.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError(f"{shown}: the header is not JSON ({exc})") from None
        _check_header(header, shown)
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
                if kind == "step":
                    t, payload = decode_step(body)
                elif kind == "base":
                    t, payload = decode_base(body)
                else:
                    (t,), payload = struct.unpack("<q", body), None
            except (ValueError, zlib.error, struct.error, IndexError) as exc:
                damage = f"a malformed {kind} record at byte {pos} ({exc})"
                break
            records.append((kind, t, payload))
            pos += _REC_HEAD.size + size
        if damage and not records:
            raise CorruptFileError(f"{shown}: {damage}, before any complete record")
        if damage:
            last = _newest_step(records)
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

    def append_base(self, member: int, t: int, idx: np.ndarray, val: np.ndarray) -> None:
        self._append(_record("base", encode_base(member, t, idx, val)))

    def append_step(self, t: int, slices: list[Slice]) -> None:
        self._append(_record("step", encode_step(t, slices)))

    def append_fold(self, cut: int) -> None:
        self._append(_record("fold", struct.pack("<q", cut)))

    def append_rollback(self, t: int) -> None:
        self._append(_record("rollback", struct.pack("<q", t)))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
