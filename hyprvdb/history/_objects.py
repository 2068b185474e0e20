"""A history on an fsspec filesystem (``memory://``, ``file://``, ``s3://``, ``gs://`` ...):
the same header and record bytes as a history file, as immutable objects.

Object stores have no append, so a history under ``URL`` is three kinds of object::

    URL/manifest                   60 bytes: the superblock of the committed state (sequence,
                                   record count, end, newest step, CRC32 chain over the header
                                   and the counted records, its own CRC32), the generation
                                   (uint64) and a CRC32 of both
    URL/G/header                   the file's header (magic, version, JSON, CRC32), G the
                                   generation in six digits
    URL/G/records/000000000042     record 42, the same bytes a history file holds; never
                                   rewritten once a manifest counts it

A commit writes its record object, then the manifest; each is one PUT, which object stores
make atomic, so a reader sees the state before the commit or after it, never a part. A
record object past the manifest's count (a commit interrupted between its two PUTs) is not
part of the history: loading drops it with a :class:`HistoryRecoveryWarning` and the next
commit overwrites it. Saving a whole history (``save`` over an existing one) writes a new
generation, then the manifest that names it, then removes the old generation's objects: a
crash at any point leaves the old history or the new one. Loading assembles the bytes of the equivalent history file and reads
them with the file's own reader, so every check it makes (chain, record checksums, replay)
applies unchanged.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import uuid
import zlib
from typing import Any

import numpy as np

from .._errors import CorruptFileError
from ._file import SB_SIZE, HistoryFile, Slice, _header_bytes, _newest_step, _read_superblock, \
    _record, _recover, _superblock, encode_base, encode_step

__all__ = ["HistoryObjects", "is_url"]

MANIFEST = "manifest"
LEASE = "lease"
HEADER = "header"
RECORDS = "records"
_GEN = struct.Struct("<Q")


def is_url(path: Any) -> bool:
    """Whether ``path`` names a location on an fsspec filesystem (``scheme://...``)."""
    return isinstance(path, str) and "://" in path


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"{url!r}: histories on URLs need fsspec (pip install fsspec, and the "
                          f"filesystem's own package, such as s3fs for s3://)") from None
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"{url!r}: no usable fsspec filesystem ({exc})") from None
    return fs, root.rstrip("/")


def _put(fs: Any, key: str, data: bytes) -> None:
    """One whole object: a PUT on an object store; on a local filesystem a temporary file
    renamed over the key, so that a crash leaves the old object or the new one."""
    if getattr(fs, "local_file", False):
        tmp = f"{key}.tmp-{os.getpid()}"
        fs.pipe(tmp, data)
        os.replace(tmp, key)  # keys under a local root are plain paths
    else:
        fs.pipe(key, data)


def _cat_all(fs: Any, keys: list[str]) -> dict[str, bytes | None]:
    """The objects ``keys`` (None for a missing one), fetched together where the filesystem
    can; listings it cached are dropped first, since another process may have added keys."""
    if not keys:
        return {}
    fs.invalidate_cache()
    try:
        got = fs.cat(keys, on_error="return")
    except FileNotFoundError:
        got = {}
    out: dict[str, bytes | None] = {}
    for k in keys:
        v = got.get(k)
        if not isinstance(v, bytes):
            try:
                v = fs.cat_file(k)
            except FileNotFoundError:
                v = None
        out[k] = v
    return out


def _acquire(fs: Any, root: str, url: str, take_over: bool) -> bytes:
    """Become the history's one writer: create ``URL/lease`` only if it does not exist
    (``open(..., "xb")``: a conditional PUT on S3, exclusive creation elsewhere), naming this
    process; read it back to be sure. ``take_over`` replaces a lease that a writer which is
    gone (killed) left behind."""
    token = json.dumps({"token": uuid.uuid4().hex, "host": socket.gethostname(),
                        "pid": os.getpid(), "since": time.time()}).encode()
    key = f"{root}/{LEASE}"
    if getattr(fs, "local_file", False):
        fs.makedirs(root, exist_ok=True)
    try:
        with fs.open(key, "xb") as f:
            f.write(token)
    except FileExistsError:
        if not take_over:
            try:
                held = json.loads(fs.cat_file(key))
                who = (f"{held.get('host')} pid {held.get('pid')} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(held.get('since', 0)))}"
                       f" UTC")
            except (FileNotFoundError, ValueError, TypeError, AttributeError):
                who = "another process"
            raise ValueError(f"{url!r} has a writer already ({who}; its lease is {key!r}): a "
                             f"history has one writer at a time. Load it with mode='r' to "
                             f"follow it, or, if that writer is gone, with take_over=True") \
                from None
        _put(fs, key, token)
    if fs.cat_file(key) != token:
        raise ValueError(f"{url!r}: another writer took its lease at the same moment")
    return token


def _release(fs: Any, root: str, token: bytes) -> None:
    key = f"{root}/{LEASE}"
    try:
        if fs.cat_file(key) == token:
            fs.rm(key)
    except FileNotFoundError:
        pass


def _gen_root(root: str, gen: int) -> str:
    return f"{root}/{gen:06d}"


def _record_key(groot: str, i: int) -> str:
    return f"{groot}/{RECORDS}/{i:012d}"


def _manifest_bytes(sb: bytes, gen: int) -> bytes:
    body = sb + _GEN.pack(gen)
    return body + struct.pack("<I", zlib.crc32(body))


class HistoryObjects(HistoryFile):
    """An open history on an fsspec filesystem that commits are written to as objects."""

    fs: Any = None
    root: str = ""
    gen: int = 0
    lease: bytes | None = None

    @property
    def _groot(self) -> str:
        return _gen_root(self.root, self.gen)

    @classmethod
    def create(cls, path: Any, header: dict[str, Any],
               bases: list[tuple[int, int, np.ndarray, np.ndarray]],
               steps: list[tuple[int, list[Slice]]], *, sync: bool = False,
               take_over: bool = False) -> HistoryObjects:
        """Write a whole history under the URL ``path``: header and records first, then the
        manifest that makes them the history, then old record objects past them are
        removed."""
        fs, root = _fs(path)
        lease = _acquire(fs, root, path, take_over)
        try:
            out = cls._create(fs, root, path, header, bases, steps, sync)
        except BaseException:
            _release(fs, root, lease)
            raise
        out.lease = lease
        return out

    @classmethod
    def _create(cls, fs: Any, root: str, path: str, header: dict[str, Any], bases: list,
                steps: list, sync: bool) -> HistoryObjects:
        head = _header_bytes(header)
        records = [("base", b[1], _record("base", encode_base(*b))) for b in bases]
        records += [("step", t, _record("step", encode_step(t, sl))) for t, sl in steps]
        fs.invalidate_cache()  # listings another process may have changed since
        old = cls._manifest(fs, root, path, missing_ok=True)
        gen = 0 if old is None else old[1] + 1
        groot = _gen_root(root, gen)
        if fs.exists(groot):  # left by a save that crashed before its manifest
            fs.rm(groot, recursive=True)
        if getattr(fs, "local_file", False):  # a local filesystem wants its folders made
            fs.makedirs(f"{groot}/{RECORDS}", exist_ok=True)
        _put(fs, f"{groot}/{HEADER}", head)
        for i, (_, _, rec) in enumerate(records):
            _put(fs, _record_key(groot, i), rec)
        chain = zlib.crc32(head)
        for _, _, rec in records:
            chain = zlib.crc32(rec, chain)
        end = len(head) + 2 * SB_SIZE + sum(len(r) for _, _, r in records)
        newest = _newest_step(records)
        seq = 0 if old is None else old[0][0] + 1
        _put(fs, f"{root}/{MANIFEST}",
             _manifest_bytes(_superblock(seq, len(records), end, newest, chain), gen))
        if old is not None:
            try:
                fs.rm(_gen_root(root, old[1]), recursive=True)
            except FileNotFoundError:
                pass
        out = cls(path, header_end=len(head), end=end, records=len(records), seq=seq,
                  newest=newest, chain=chain,
                  only_bases=all(kind == "base" for kind, _, _ in records), version=2,
                  sync=sync)
        out.fs, out.root, out.gen = fs, root, gen
        return out

    @classmethod
    def open(cls, path: Any, *, strict: bool = False, sync: bool = False, writer: bool = True,
             take_over: bool = False
             ) -> tuple[dict[str, Any], list[tuple[str, int, Any, int]], HistoryObjects]:
        """Read a history from the URL ``path``: its header, its committed records and the
        history opened for commits (``writer``: holding its lease) or for following."""
        fs, root = _fs(path)
        lease = _acquire(fs, root, path, take_over) if writer else None
        try:
            header, records, out = cls._open(fs, root, path, strict, sync)
        except BaseException:
            if lease is not None:
                _release(fs, root, lease)
            raise
        out.lease = lease
        return header, records, out

    @classmethod
    def _open(cls, fs: Any, root: str, path: str, strict: bool, sync: bool
              ) -> tuple[dict[str, Any], list[tuple[str, int, Any, int]], HistoryObjects]:
        shown = repr(path)
        sb, gen = cls._manifest(fs, root, path, missing_ok=False)
        groot = _gen_root(root, gen)
        try:
            head = fs.cat_file(f"{groot}/{HEADER}")
        except FileNotFoundError:
            raise CorruptFileError(f"{shown}: its manifest names a history whose header object "
                                   f"is missing") from None
        count = sb[1]
        keys = [_record_key(groot, i) for i in range(count)]
        got = _cat_all(fs, keys)
        missing = [k for k in keys if got[k] is None]
        if missing:
            raise CorruptFileError(f"{shown}: its manifest counts {count} records, but the "
                                   f"object {missing[0]!r} is missing")
        extra = cls._records_from(fs, groot, count)
        if extra:
            _recover(f"{shown} holds {len(extra)} record object(s) after its {count} committed "
                     f"ones (a commit interrupted before it returned); they are not part of "
                     f"the history", strict)
        data = b"".join([head, _superblock(*sb), bytes(SB_SIZE)] + [got[k] for k in keys])
        header, records, out = cls.from_bytes(data, path, shown, strict=strict, sync=sync)
        out.fs, out.root, out.gen = fs, root, gen
        return header, records, out

    def poll(self) -> list[tuple[str, int, Any, int]] | None:
        """The records committed since this history was read or last polled, fetching only
        their objects; [] if none; None when the history was written anew: load it again."""
        sb, gen = self._manifest(self.fs, self.root, self.path, missing_ok=False)
        if gen != self.gen:
            return None
        if sb[0] == self._seq:
            return []
        keys = [_record_key(self._groot, i) for i in range(self._records,
                                                           max(self._records, sb[1]))]
        got = _cat_all(self.fs, keys)
        missing = [k for k in keys if got[k] is None]
        if missing:
            raise CorruptFileError(f"{self.path!r}: its manifest counts {sb[1]} records, but "
                                   f"the object {missing[0]!r} is missing")
        return self._continue(sb, b"".join(got[k] for k in keys), repr(self.path))

    # ---------------------------------------------------------------- commits
    def _append(self, record: bytes, kind: str, t: int) -> None:
        sb, state = self._next(record, kind, t)
        _put(self.fs, _record_key(self._groot, self._records), record)
        _put(self.fs, f"{self.root}/{MANIFEST}", _manifest_bytes(sb, self.gen))
        self._take(state)

    def close(self) -> None:
        """Give up the lease (a follower holds none)."""
        if self.lease is not None:
            _release(self.fs, self.root, self.lease)
            self.lease = None

    # ---------------------------------------------------------------- objects
    @staticmethod
    def _manifest(fs: Any, root: str, url: str, *, missing_ok: bool
                  ) -> tuple[tuple[int, int, int, int, int], int] | None:
        """(the committed state's superblock, the generation), or None where there is no
        manifest and ``missing_ok``."""
        try:
            raw = fs.cat_file(f"{root}/{MANIFEST}")
        except FileNotFoundError:
            if missing_ok:
                return None
            raise FileNotFoundError(f"no hyprvdb history at {url!r} (no {MANIFEST} object "
                                    f"there)") from None
        sb = _read_superblock(raw[:SB_SIZE])
        if sb is None or len(raw) != SB_SIZE + _GEN.size + 4 \
                or zlib.crc32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
            raise CorruptFileError(f"{url!r}: its manifest is damaged ({len(raw)} bytes failing "
                                   f"their checksum): what was committed is unknown")
        return sb, _GEN.unpack_from(raw, SB_SIZE)[0]

    @staticmethod
    def _records_from(fs: Any, groot: str, first: int) -> list[str]:
        try:
            names = fs.ls(f"{groot}/{RECORDS}", detail=False)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            tail = name.rstrip("/").rsplit("/", 1)[-1]
            if tail.isdigit() and int(tail) >= first:
                out.append(name)
        return sorted(out)
