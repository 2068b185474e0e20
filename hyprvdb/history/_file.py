"""The history file: a header, then one checksummed record per commit, appended.

One file holds the histories of one or more matrices (a :class:`TemporalGroup`; a lone
:class:`TemporalAdapter` is a group of one) committed together: a step is one record for all
of them, so its fixed costs are paid once per step, not once per matrix.

Layout (little-endian)::

    header      b"HYPRVDBZ" | u16 version (2) | u32 n | n bytes of JSON | u32 CRC32(JSON)
    superblock  2 x 48 bytes: b"HVSB" | u64 seq | u64 records | u64 end | i64 newest step
                | u32 chain | u32 0 | u32 CRC32(the 44 bytes before it)
    record      b"ZR" | u8 kind | u32 n | u32 CRC32(kind byte + body) | n bytes of body

The JSON lists the members (name, shape, settings). Record kinds: 1 base, 2 step, 3 fold
(prune_history), 4 rollback. Loading replays them in order through the same code the live
objects ran, so the state after a load equals the state before the save.

Step body: i64 t | u32 m | u8 gap width | u32 resets | raw deflate of: the m member numbers
(u32), their change counts (u32), every member's gaps between its sorted linear indices
(row * cols + col; the first gap counts from 0) split into byte planes, the float32 deltas
split into four byte planes (sign and exponent bytes compress, random mantissas do not), and
the reset positions (u32). Base body: u32 member | i64 t | u32 n | u8 gap width | raw
deflate of the gap planes and the float64 values' eight byte planes.

The superblocks say what was committed: after each record, the next superblock (they
alternate: sequence number ``seq`` goes to slot ``seq % 2``, as LMDB and SQLite alternate their
meta pages) is written with the committed record count, where they end, the newest step they
leave, and ``chain``, the CRC32 of the header and every committed record in order. Loading
takes the valid superblock with the higher sequence number and checks the records against it:

- fewer complete records than it says (a file cut at a record boundary, or damaged inside one)
  means committed steps were lost: a :class:`HistoryRecoveryWarning` names them and every
  record before the damage is kept (``strict=True`` raises :class:`CorruptFileError`);
- a record beyond it was written but never committed (a process killed between the record and
  its superblock, before the commit returned): it is dropped with a warning;
- a chain that does not match means a record or the header was changed after it was written
  (a faulty writer, or a forged file whose record checksums were stamped again): the file is
  refused with :class:`CorruptFileError`;
- a damaged superblock (written once, now failing its checksum) is reported with a warning:
  the other one may be older, and the records after it may have been cut off with it.

A commit writes its record in one ``write``, then its superblock, and returns: it survives a
killed process. With ``sync=True`` each of the two is also fsynced (durable across power
loss). Replaying the records validates each one (steps increasing, coordinates inside the
matrices, counts that add up, finite values): a record that breaks a rule is named in a
:class:`CorruptFileError`.

Version 1 files (no superblocks) are read as before: every complete record is kept. The first
commit appended to one rewrites it, atomically, as version 2.
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
VERSION = 2
VERSIONS = (1, 2)  # read; version 1 has no superblocks
REC = b"ZR"
SB_MAGIC = b"HVSB"
_SB = struct.Struct("<4sQQQqII")
SB_SIZE = _SB.size + 4
KINDS = {1: "base", 2: "step", 3: "fold", 4: "rollback"}
_KIND_CODE = {v: k for k, v in KINDS.items()}
_REC_HEAD = struct.Struct("<2sBII")


class HistoryRecoveryWarning(UserWarning):
    """A history file had a torn or damaged tail; the steps before it were kept.

    Examples
    --------
    >>> import hyprvdb
    >>> import os, tempfile, warnings
    >>> path = os.path.join(tempfile.mkdtemp(), "h.hvh")
    >>> g = hyprvdb.TemporalGroup({"w": (4, 4)})
    >>> g.save(path)
    >>> _ = g.store_deltas(1, {"w": ([0], [0], [1.0])})
    >>> _ = open(path, "ab").write(b"ZR")  # a torn record after the last commit
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     back = hyprvdb.TemporalGroup.load(path)
    >>> caught[0].category.__name__, back.latest
    ('HistoryRecoveryWarning', 1)
    """


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


def _header_bytes(header: dict[str, Any], version: int = VERSION) -> bytes:
    js = json.dumps(header, sort_keys=True).encode()
    return _header_of(js, version)


def _header_of(js: bytes, version: int) -> bytes:
    return MAGIC + struct.pack("<HI", version, len(js)) + js + struct.pack(
        "<I", zlib.crc32(js) & 0xFFFFFFFF)


def _superblock(seq: int, records: int, end: int, newest: int, chain: int) -> bytes:
    body = _SB.pack(SB_MAGIC, seq, records, end, newest, chain, 0)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def _read_superblock(raw: bytes) -> tuple[int, int, int, int, int] | None:
    """(seq, records, end, newest, chain), or None for a slot that is empty, torn or damaged."""
    if len(raw) != SB_SIZE:
        return None
    body = raw[:_SB.size]
    (crc,) = struct.unpack_from("<I", raw, _SB.size)
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        return None
    magic, seq, records, end, newest, chain, _ = _SB.unpack(body)
    return (seq, records, end, newest, chain) if magic == SB_MAGIC else None


def _after(newest: int, kind: str, t: int, only_bases: bool) -> int:
    """The newest step after a record: a step or a rollback makes its step the newest; a base
    sets it while only bases have come; a fold leaves it."""
    if kind in ("step", "rollback") or (kind == "base" and only_bases):
        return t
    return newest


def _newest_step(records: list) -> int:
    """The newest step the records leave: :func:`_after` over each of them in turn."""
    newest, only_bases = 0, True
    for kind, t, *_ in records:
        newest = _after(newest, kind, t, only_bases)
        only_bases &= kind == "base"
    return newest


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


def parse_records(data: bytes, pos: int, base: int = 0
                  ) -> tuple[list[tuple[str, int, Any, int]], list[bytes], int, str | None]:
    """The complete, checksummed records of ``data`` from ``pos`` on: ``(kind, t, payload,
    byte offset + base)`` each, their raw bytes, where reading stopped, and what stopped it
    (None at the end of the data)."""
    records: list[tuple[str, int, Any, int]] = []
    raw: list[bytes] = []
    damage = None
    while pos < len(data):
        at = pos + base
        try:
            magic, code, size, crc = _REC_HEAD.unpack_from(data, pos)
        except struct.error:
            damage = f"a torn record header at byte {at}"
            break
        body = data[pos + _REC_HEAD.size: pos + _REC_HEAD.size + size]
        if magic != REC or code not in KINDS:
            damage = f"an unreadable record at byte {at}"
            break
        if len(body) != size:
            damage = f"a torn record at byte {at} ({len(body)} of {size} bytes)"
            break
        if zlib.crc32(bytes([code]) + body) & 0xFFFFFFFF != crc:
            damage = f"a record failing its checksum at byte {at}"
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
            damage = f"a malformed {kind} record at byte {at} ({exc})"
            break
        records.append((kind, t, payload, at))
        raw.append(data[pos:pos + _REC_HEAD.size + size])
        pos += _REC_HEAD.size + size
    return records, raw, pos, damage


class HistoryFile:
    """An open history file that commits are appended to."""

    def __init__(self, path: str, *, header_end: int, end: int, records: int, seq: int,
                 newest: int, chain: int, only_bases: bool, version: int, sync: bool) -> None:
        self.path = path
        self._header_end = header_end  # superblocks follow (version 2)
        self._end = end                # offset just after the last committed record
        self._records, self._seq, self._newest, self._chain = records, seq, newest, chain
        self._only_bases = only_bases
        self._version = version
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
        head = _header_bytes(header)
        records = [("base", b[1], _record("base", encode_base(*b))) for b in bases]
        records += [("step", t, _record("step", encode_step(t, sl))) for t, sl in steps]
        return cls._write_whole(os.fspath(path), head, records, sync)

    @classmethod
    def _write_whole(cls, path: str, head: bytes, records: list[tuple[str, int, bytes]],
                     sync: bool) -> HistoryFile:
        chain = zlib.crc32(head)
        for _, _, rec in records:
            chain = zlib.crc32(rec, chain)
        newest = _newest_step(records)
        only_bases = all(kind == "base" for kind, _, _ in records)
        header_end = len(head)
        end = header_end + 2 * SB_SIZE + sum(len(r) for _, _, r in records)
        sb = _superblock(0, len(records), end, newest, chain)
        write_bytes(path, head, sb, bytes(SB_SIZE), *(r for _, _, r in records))
        return cls(path, header_end=header_end, end=end, records=len(records), seq=0,
                   newest=newest, chain=chain, only_bases=only_bases, version=VERSION,
                   sync=sync)

    @classmethod
    def open(cls, path: str | os.PathLike, *, strict: bool = False, sync: bool = False
             ) -> tuple[dict[str, Any], list[tuple[str, int, Any, int]], HistoryFile]:
        """Read a history file: its header, its committed records as ``(kind, t, payload,
        byte offset)``, and the file opened for appending."""
        path = os.fspath(path)
        return cls.from_bytes(Path(path).read_bytes(), path, repr(path), strict=strict, sync=sync)

    @classmethod
    def from_bytes(cls, data: bytes, path: str, shown: str, *, strict: bool = False,
                   sync: bool = False) -> tuple[dict[str, Any], list[tuple[str, int, Any, int]],
                                                HistoryFile]:
        """:meth:`open` of a history's bytes; ``path`` is where commits will go."""
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
        if version not in VERSIONS:
            raise ForeignFileError(f"{shown} has history format version {version}; this "
                                   f"hyprvdb reads versions {', '.join(map(str, VERSIONS))}")
        if zlib.crc32(js) & 0xFFFFFFFF != crc:
            raise CorruptFileError(f"{shown}: the header fails its checksum")
        try:
            header = json.loads(js.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError(f"{shown}: the header is not JSON ({exc})") from None
        _check_header(header, shown)
        header_end = 18 + n
        sb = None
        pos = header_end
        if version >= 2:
            slots = [_read_superblock(data[header_end + k * SB_SIZE:
                                           header_end + (k + 1) * SB_SIZE]) for k in (0, 1)]
            valid = [x for x in slots if x is not None]
            if not valid:
                if len(data) < header_end + 2 * SB_SIZE:
                    raise CorruptFileError(f"{shown} is truncated inside its superblocks "
                                           f"({len(data)} bytes): what was committed is "
                                           f"unknown")
                raise CorruptFileError(f"{shown}: both superblocks are damaged: what was "
                                       f"committed is unknown")
            sb = max(valid)
            pos = header_end + 2 * SB_SIZE
            for k, slot in enumerate(slots):
                raw_slot = data[header_end + k * SB_SIZE:header_end + (k + 1) * SB_SIZE]
                if slot is None and len(raw_slot) == SB_SIZE and any(raw_slot):
                    # Written once, now damaged: what it said is unknown, so the other one
                    # may be behind it (with the records after it cut off, too).
                    _recover(f"{shown}: superblock {k} is damaged; read the other one "
                             f"(sequence {sb[0]}, {sb[1]} committed records), which may be "
                             f"older than the damaged one", strict)
        records, raw, pos, damage = parse_records(data, pos)
        head = data[:header_end]
        if sb is None:  # version 1: every complete record counts
            return header, *cls._open_v1(path, shown, head, records, raw, pos, damage,
                                         len(data), strict, sync)
        seq, committed, end, newest, chain = sb
        kept = min(len(records), committed)
        check = zlib.crc32(head)
        for r in raw[:kept]:
            check = zlib.crc32(r, check)
        if kept == committed:
            at = header_end + 2 * SB_SIZE + sum(len(r) for r in raw[:kept])
            if check != chain or at != end or _newest_step(records[:kept]) != newest:
                raise CorruptFileError(f"{shown}: its header and records do not match what "
                                       f"its superblock says was committed (chain "
                                       f"{check:08x}, end {at}, newest step "
                                       f"{_newest_step(records[:kept])}; the superblock says "
                                       f"{chain:08x}, {end}, {newest}): the file was changed "
                                       f"after it was written")
            if len(records) > committed:
                _recover(f"{shown} holds {len(records) - committed} record(s) after its "
                         f"{committed} committed ones (a commit interrupted before it "
                         f"returned); dropped them, the newest committed step is "
                         f"{_newest_step(records[:kept])}", strict)
            elif damage:
                _recover(f"{shown} ends with {damage} after its {committed} committed "
                         f"records (a commit interrupted before it returned); dropped "
                         f"{len(data) - pos} bytes", strict)
        else:
            last = _newest_step(records[:kept])
            why = damage or f"the file ends at byte {len(data)}"
            _recover(f"{shown} lost {committed - kept} of its {committed} committed records "
                     f"({why}): it now ends at step {last}, its superblock says step "
                     f"{newest} was committed; kept every record before the damage "
                     f"(newest step {last})", strict)
        records = records[:kept]
        end = header_end + 2 * SB_SIZE + sum(len(r) for r in raw[:kept])
        only_bases = all(r[0] == "base" for r in records)
        return header, records, cls(path, header_end=header_end, end=end, records=kept,
                                    seq=seq, newest=_newest_step(records), chain=check,
                                    only_bases=only_bases, version=2, sync=sync)

    @classmethod
    def _open_v1(cls, path: str, shown: str, head: bytes, records: list, raw: list[bytes],
                 pos: int, damage: str | None, size: int, strict: bool, sync: bool
                 ) -> tuple[list, HistoryFile]:
        if damage and not records:
            raise CorruptFileError(f"{shown}: {damage}, before any complete record")
        if damage:
            _recover(f"{shown} ends with {damage}; kept every record before it (newest step "
                     f"{_newest_step(records)}), dropped {size - pos} bytes", strict)
        f = cls(path, header_end=len(head), end=pos, records=len(records), seq=0,
                newest=_newest_step(records), chain=0,
                only_bases=all(r[0] == "base" for r in records), version=1, sync=sync)
        f._v1 = (head, [(r[0], r[1], b) for r, b in zip(records, raw)])
        return records, f

    def _upgrade(self) -> None:
        """Rewrite a version 1 file as version 2 (atomically), before its first new commit."""
        head, records = self._v1
        js = head[14:-4]
        new = self._write_whole(self.path, _header_of(js, VERSION), records, self.sync)
        self.__dict__.update({k: v for k, v in new.__dict__.items() if k != "_f"})
        del self._v1

    def _append(self, record: bytes, kind: str, t: int) -> None:
        if self._version == 1:
            self._upgrade()
        if self._f is None:
            self._f = open(self.path, "r+b")
            self._f.truncate(self._end)
        f = self._f
        f.seek(self._end)
        f.write(record)
        f.flush()
        if self.sync:
            os.fsync(f.fileno())
        sb, state = self._next(record, kind, t)
        f.seek(self._header_end + (state[3] % 2) * SB_SIZE)
        f.write(sb)
        f.flush()
        if self.sync:
            os.fsync(f.fileno())
        self._take(state)

    def _next(self, record: bytes, kind: str, t: int) -> tuple[bytes, tuple]:
        """The superblock that commits ``record`` appended, and the state it commits (taken
        by :meth:`_take` once the superblock is written)."""
        end = self._end + len(record)
        chain = zlib.crc32(record, self._chain)
        newest = _after(self._newest, kind, t, self._only_bases)
        seq, records = self._seq + 1, self._records + 1
        return (_superblock(seq, records, end, newest, chain),
                (end, chain, newest, seq, records, self._only_bases and kind == "base"))

    def _take(self, state: tuple) -> None:
        (self._end, self._chain, self._newest, self._seq, self._records,
         self._only_bases) = state

    def _continue(self, sb: tuple[int, int, int, int, int], new: bytes, shown: str
                  ) -> list[tuple[str, int, Any, int]] | None:
        """The records ``new`` (the bytes after this history's committed end) that the
        superblock ``sb`` commits, validated as a continuation of what was read before; None
        when ``sb`` does not continue it (the history was written anew): read it again."""
        seq, count, end, newest, chain = sb
        if count < self._records or end < self._end or seq < self._seq:
            return None
        records, raw, _, damage = parse_records(new, 0, self._end)
        take = count - self._records
        if len(records) < take:
            raise CorruptFileError(f"{shown}: its superblock commits {take} new record(s), "
                                   f"{len(records)} could be read ({damage or 'none more'})")
        check = self._chain
        for r in raw[:take]:
            check = zlib.crc32(r, check)
        at = self._end + sum(len(r) for r in raw[:take])
        if check != chain or at != end:
            return None
        self._take((end, chain, newest, seq, count,
                    self._only_bases and all(r[0] == "base" for r in records[:take])))
        return records[:take]

    def poll(self) -> list[tuple[str, int, Any, int]] | None:
        """The records committed since this history was read or last polled (each checked
        as on loading), [] if none; None when the file was written anew (by ``save``): load
        it again."""
        with open(self.path, "rb") as f:
            f.seek(self._header_end)
            slots = [_read_superblock(f.read(SB_SIZE)) for _ in (0, 1)]
            valid = [x for x in slots if x is not None]
            if not valid:
                return None
            sb = max(valid)
            if sb[0] == self._seq:
                return []
            f.seek(self._end)
            new = f.read(max(0, sb[2] - self._end))
        return self._continue(sb, new, repr(self.path))

    def append_base(self, member: int, t: int, idx: np.ndarray, val: np.ndarray) -> None:
        self._append(_record("base", encode_base(member, t, idx, val)), "base", t)

    def append_step(self, t: int, slices: list[Slice]) -> None:
        self._append(_record("step", encode_step(t, slices)), "step", t)

    def append_fold(self, cut: int) -> None:
        self._append(_record("fold", struct.pack("<q", cut)), "fold", cut)

    def append_rollback(self, t: int) -> None:
        self._append(_record("rollback", struct.pack("<q", t)), "rollback", t)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _recover(msg: str, strict: bool) -> None:
    if strict:
        raise CorruptFileError(msg)
    warnings.warn(msg + "; the next commit overwrites what was dropped", HistoryRecoveryWarning,
                  stacklevel=4)
