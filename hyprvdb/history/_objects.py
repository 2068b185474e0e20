"""A history on an fsspec filesystem (``memory://``, ``file://``, ``s3://``, ``gs://`` ...):
the same header and record bytes as a history file, as immutable objects.

Object stores have no append, so a history under ``URL`` is four kinds of object::

    URL/manifest                         the committed state: the superblock a history file
                                         would hold (sequence, record count, end, newest
                                         step, CRC32 chain over the header and the counted
                                         records), the generation G (uint64), the segment
                                         ends (uint32 count, uint64 each) and a CRC32 of all
    URL/G/header                         the file's header (magic, version, JSON, CRC32); G
                                         in six digits
    URL/G/records/000000000042           record 42, the same bytes a history file holds
    URL/G/segments/000000000000-000000000128
                                         records 0 to 127, their bytes one after another

The manifest alone says what the history is: its segments cover records ``0 .. ends[-1]``,
one object per record covers the rest up to its count. A commit writes its record object,
then the manifest; each is one PUT, which object stores make atomic, so a reader sees the
state before the commit or after it, never a part. A record object past the manifest's count
(a commit interrupted between its two PUTs) is not part of the history: loading drops it with
a :class:`HistoryRecoveryWarning` and the next commit overwrites it.

Compaction (after a commit, once ``segment_every`` records are loose) writes those records
as one segment object, merged with the segments before it while the one before is no larger
(a binary counter: a history of n records is O(log n) segments, each record rewritten O(log
n) times), then a manifest naming it, and only then removes the objects it replaces. Every
manifest names each record exactly once, so a reader sees no step twice and misses none; a
reader holding an older manifest whose objects were just removed reads the manifest again
and retries. A crash leaves objects no manifest names; the next writer to open the history
removes them. A new follower reads a few segments and the tail, not one object per step.

Saving a whole history (``save`` over an existing one) writes a new generation as one
segment, then the manifest that names it, then removes the old generation's objects: a crash
at any point leaves the old history or the new one. Loading assembles the bytes of the
equivalent history file and reads them with the file's own reader, so every check it makes
(chain, record checksums, replay) applies unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._errors import CorruptFileError
from ._file import _REC_HEAD, SB_SIZE, HistoryFile, Slice, _header_bytes, _newest_step, \
    _read_superblock, _record, _recover, _superblock, encode_base, encode_step

__all__ = ["HistoryObjects", "is_url"]

MANIFEST = "manifest"
LEASE = "lease"
HEADER = "header"
RECORDS = "records"
SEGMENTS = "segments"
SEGMENT_EVERY = 64   # loose record objects that make a segment
_GEN = struct.Struct("<QI")  # generation, segment count
_LEGACY_SIZE = SB_SIZE + 8 + 4  # the first manifests: no segment list
_RETRIES = 8  # re-reads of a manifest whose objects a compaction removed meanwhile

Manifest = tuple[tuple[int, int, int, int, int], int, list[int]]  # superblock, gen, ends


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


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached (a refused or timed-out
    connection: Python's own errors, or a client library's, such as botocore's
    EndpointConnectionError)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any("Connection" in k.__name__ or "Timeout" in k.__name__
               for k in type(exc).__mro__ if k.__module__.split(".")[0] != "builtins")


@contextlib.contextmanager
def _reaching(url: str, fs: Any, root: str) -> Iterator[None]:
    """Errors of the store, said of the history: an unreachable store, a missing bucket."""
    try:
        yield
    except (CorruptFileError, FileExistsError, ValueError, TypeError):
        raise
    except FileNotFoundError:
        if not getattr(fs, "local_file", False) and "/" in root:
            bucket = root.split("/", 1)[0]
            try:
                there = fs.exists(bucket)
            except Exception:  # noqa: BLE001 - the original error says more
                there = True
            if not there:
                raise FileNotFoundError(f"{url!r}: the bucket {bucket!r} does not exist") \
                    from None
        raise
    except Exception as exc:
        if _unreachable(exc):
            raise ConnectionError(f"{url!r}: the store cannot be reached ({exc})") from exc
        raise


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
            if isinstance(v, Exception) and not isinstance(v, FileNotFoundError):
                raise v
            try:
                v = fs.cat_file(k)
            except FileNotFoundError:
                v = None
        out[k] = v
    return out


def _rm(fs: Any, keys: list[str]) -> None:
    """Remove objects no manifest names any more (those already gone are no matter)."""
    if not keys:
        return
    try:
        fs.rm(keys)
    except FileNotFoundError:
        for k in keys:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(k)


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
    with contextlib.suppress(FileNotFoundError):
        if fs.cat_file(key) == token:
            fs.rm(key)


def _gen_root(root: str, gen: int) -> str:
    return f"{root}/{gen:06d}"


def _record_key(groot: str, i: int) -> str:
    return f"{groot}/{RECORDS}/{i:012d}"


def _segment_key(groot: str, start: int, end: int) -> str:
    return f"{groot}/{SEGMENTS}/{start:012d}-{end:012d}"


def _manifest_bytes(sb: bytes, gen: int, ends: list[int]) -> bytes:
    body = sb + _GEN.pack(gen, len(ends)) + struct.pack(f"<{len(ends)}Q", *ends)
    return body + struct.pack("<I", zlib.crc32(body))


def _parse_manifest(raw: bytes) -> Manifest | None:
    """(superblock, generation, segment ends) of a manifest's bytes; None if damaged."""
    if len(raw) < _LEGACY_SIZE or zlib.crc32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
        return None
    sb = _read_superblock(raw[:SB_SIZE])
    if sb is None:
        return None
    if len(raw) == _LEGACY_SIZE:
        return sb, struct.unpack_from("<Q", raw, SB_SIZE)[0], []
    gen, n = _GEN.unpack_from(raw, SB_SIZE)
    if len(raw) != SB_SIZE + _GEN.size + 8 * n + 4:
        return None
    ends = list(struct.unpack_from(f"<{n}Q", raw, SB_SIZE + _GEN.size))
    if any(b <= a for a, b in zip([0] + ends, ends)) or (ends and ends[-1] > sb[1]):
        return None
    return sb, gen, ends


def _layout(groot: str, ends: list[int], lo: int, hi: int) -> list[tuple[str, int]]:
    """The objects that hold records ``lo .. hi - 1`` under a manifest with segment
    ``ends``, in order, each with the number of its leading records to skip."""
    out, start = [], 0
    for end in ends:
        if end > lo and start < hi:
            out.append((_segment_key(groot, start, end), max(0, lo - start)))
        start = end
    out += [(_record_key(groot, i), 0) for i in range(max(lo, start), hi)]
    return out


def _skip(data: bytes, k: int, key: str) -> bytes:
    """``data`` (records one after another) without its first ``k`` records."""
    pos = 0
    for _ in range(k):
        try:
            _, _, size, _ = _REC_HEAD.unpack_from(data, pos)
        except struct.error:
            raise CorruptFileError(f"{key!r} holds fewer records than its name says") from None
        pos += _REC_HEAD.size + size
    return data[pos:]


class HistoryObjects(HistoryFile):
    """An open history on an fsspec filesystem that commits are written to as objects."""

    fs: Any = None
    root: str = ""
    gen: int = 0
    lease: bytes | None = None
    segment_every: int = SEGMENT_EVERY

    def _init_objects(self, fs: Any, root: str, gen: int, ends: list[int],
                      loose: list[bytes]) -> None:
        self.fs, self.root, self.gen = fs, root, gen
        self.ends = ends          # the manifest's segment ends
        self._loose = loose       # the bytes of the records after them (the writer's)

    @property
    def _groot(self) -> str:
        return _gen_root(self.root, self.gen)

    @classmethod
    def create(cls, path: Any, header: dict[str, Any],
               bases: list[tuple[int, int, np.ndarray, np.ndarray]],
               steps: list[tuple[int, list[Slice]]], *, sync: bool = False,
               take_over: bool = False, segment_every: int = SEGMENT_EVERY
               ) -> HistoryObjects:
        """Write a whole history under the URL ``path``: header and one segment of all its
        records first, then the manifest that makes them the history, then the old
        generation's objects are removed."""
        segment_every = _segment_every(segment_every)
        fs, root = _fs(path)
        with _reaching(path, fs, root):
            lease = _acquire(fs, root, path, take_over)
            try:
                out = cls._create(fs, root, path, header, bases, steps, sync)
            except BaseException:
                _release(fs, root, lease)
                raise
        out.lease = lease
        out.segment_every = segment_every
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
            fs.makedirs(f"{groot}/{SEGMENTS}", exist_ok=True)
        _put(fs, f"{groot}/{HEADER}", head)
        ends = [len(records)] if records else []
        if records:
            _put(fs, _segment_key(groot, 0, len(records)), b"".join(r for _, _, r in records))
        chain = zlib.crc32(head)
        for _, _, rec in records:
            chain = zlib.crc32(rec, chain)
        end = len(head) + 2 * SB_SIZE + sum(len(r) for _, _, r in records)
        newest = _newest_step(records)
        seq = 0 if old is None else old[0][0] + 1
        _put(fs, f"{root}/{MANIFEST}",
             _manifest_bytes(_superblock(seq, len(records), end, newest, chain), gen, ends))
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(_gen_root(root, old[1]), recursive=True)
        out = cls(path, header_end=len(head), end=end, records=len(records), seq=seq,
                  newest=newest, chain=chain,
                  only_bases=all(kind == "base" for kind, _, _ in records), version=2,
                  sync=sync)
        out._init_objects(fs, root, gen, ends, [])
        return out

    @classmethod
    def open(cls, path: Any, *, strict: bool = False, sync: bool = False, writer: bool = True,
             take_over: bool = False, segment_every: int = SEGMENT_EVERY
             ) -> tuple[dict[str, Any], list[tuple[str, int, Any, int]], HistoryObjects]:
        """Read a history from the URL ``path``: its header, its committed records and the
        history opened for commits (``writer``: holding its lease) or for following."""
        segment_every = _segment_every(segment_every)
        fs, root = _fs(path)
        with _reaching(path, fs, root):
            lease = _acquire(fs, root, path, take_over) if writer else None
            try:
                header, records, out = cls._open(fs, root, path, strict, sync, writer)
                out.segment_every = segment_every
                if writer:
                    out._collect()
            except BaseException:
                if lease is not None:
                    _release(fs, root, lease)
                raise
        out.lease = lease
        return header, records, out

    @classmethod
    def _open(cls, fs: Any, root: str, path: str, strict: bool, sync: bool, writer: bool
              ) -> tuple[dict[str, Any], list[tuple[str, int, Any, int]], HistoryObjects]:
        shown = repr(path)
        fs.invalidate_cache()
        for _ in range(_RETRIES):
            sb, gen, ends = cls._manifest(fs, root, path, missing_ok=False)
            groot = _gen_root(root, gen)
            try:
                head = fs.cat_file(f"{groot}/{HEADER}")
            except FileNotFoundError:
                if cls._manifest(fs, root, path, missing_ok=False)[1] != gen:
                    continue  # saved anew meanwhile
                raise CorruptFileError(f"{shown}: its manifest names a history whose header "
                                       f"object {groot + '/' + HEADER!r} is missing") from None
            chunks = cls._fetch(fs, root, path, (sb, gen, ends), 0)
            if chunks is not None:
                break
        else:
            raise CorruptFileError(f"{shown}: its objects kept changing while it was read")
        # Record objects past the count: a commit interrupted before it returned, which the
        # next commit overwrites. Only a writer's concern: a follower sees the records its
        # writer has committed since the manifest was read, too.
        extra = cls._records_from(fs, groot, sb[1]) if writer else []
        if extra:
            _recover(f"{shown} holds {len(extra)} record object(s) after its {sb[1]} "
                     f"committed ones (a commit interrupted before it returned); they are not "
                     f"part of the history", strict)
        data = b"".join([head, _superblock(*sb), bytes(SB_SIZE)] + chunks)
        header, records, out = cls.from_bytes(data, path, shown, strict=strict, sync=sync)
        n_loose = sb[1] - (ends[-1] if ends else 0)
        out._init_objects(fs, root, gen, ends, chunks[len(chunks) - n_loose:] if n_loose else [])
        return header, records, out

    @classmethod
    def _fetch(cls, fs: Any, root: str, path: str, manifest: Manifest, lo: int
               ) -> list[bytes] | None:
        """The bytes of records ``lo ..`` that ``manifest`` commits, one chunk per object;
        None when an object is missing because a newer manifest replaced it (read the
        manifest again); CorruptFileError when the manifest is still the newest."""
        sb, gen, ends = manifest
        layout = _layout(_gen_root(root, gen), ends, lo, sb[1])
        got = _cat_all(fs, [k for k, _ in layout])
        missing = [k for k, _ in layout if got[k] is None]
        if missing:
            if cls._manifest(fs, root, path, missing_ok=False) != manifest:
                return None
            raise CorruptFileError(f"{path!r}: its manifest counts {sb[1]} records, but the "
                                   f"object {missing[0]!r} is missing")
        return [_skip(got[k], skip, k) if skip else got[k] for k, skip in layout]

    def poll(self) -> list[tuple[str, int, Any, int]] | None:
        """The records committed since this history was read or last polled, fetching only
        the objects that hold them; [] if none; None when the history was written anew: load
        it again."""
        with _reaching(self.path, self.fs, self.root):
            for _ in range(_RETRIES):
                manifest = self._manifest(self.fs, self.root, self.path, missing_ok=False)
                sb, gen, _ = manifest
                if gen != self.gen:
                    return None
                if sb[0] == self._seq:
                    return []
                if sb[1] < self._records:
                    return None
                chunks = self._fetch(self.fs, self.root, self.path, manifest, self._records)
                if chunks is not None:
                    self.ends = manifest[2]
                    return self._continue(sb, b"".join(chunks), repr(self.path))
        raise CorruptFileError(f"{self.path!r}: its objects kept changing while it was read")

    # ---------------------------------------------------------------- commits
    def _append(self, record: bytes, kind: str, t: int) -> None:
        sb, state = self._next(record, kind, t)
        with _reaching(self.path, self.fs, self.root):
            _put(self.fs, _record_key(self._groot, self._records), record)
            _put(self.fs, f"{self.root}/{MANIFEST}", _manifest_bytes(sb, self.gen, self.ends))
            self._take(state)
        self._loose.append(record)
        if len(self._loose) >= self.segment_every:
            try:
                self.compact()
            except Exception as exc:  # noqa: BLE001 - the commit stands; compaction waits
                warnings.warn(f"{self.path!r}: compaction failed ({exc}); the commit stands, "
                              f"the next commit compacts again", RuntimeWarning, stacklevel=4)

    def compact(self) -> None:
        """Write the loose record objects as one segment (merged with the segments before it
        while the one before is no larger), name it in a new manifest, then remove what it
        replaced. The committed state is the same before and after."""
        if not self._loose:
            return
        with _reaching(self.path, self.fs, self.root):
            ends = list(self.ends)
            first = ends[-1] if ends else 0
            start, parts, replaced = first, [b"".join(self._loose)], []
            while ends:
                before = ends[-2] if len(ends) > 1 else 0
                if ends[-1] - before > self._records - start:
                    break
                key = _segment_key(self._groot, before, ends[-1])
                try:
                    parts.insert(0, self.fs.cat_file(key))
                except FileNotFoundError:
                    raise CorruptFileError(f"{self.path!r}: its manifest names the segment "
                                           f"{key!r}, which is missing") from None
                replaced.append(key)
                start = before
                ends.pop()
            if getattr(self.fs, "local_file", False):
                self.fs.makedirs(f"{self._groot}/{SEGMENTS}", exist_ok=True)
            _put(self.fs, _segment_key(self._groot, start, self._records), b"".join(parts))
            ends.append(self._records)
            sb = _superblock(self._seq, self._records, self._end, self._newest, self._chain)
            _put(self.fs, f"{self.root}/{MANIFEST}", _manifest_bytes(sb, self.gen, ends))
            self.ends, self._loose = ends, []
            _rm(self.fs, replaced + [_record_key(self._groot, i)
                                     for i in range(first, self._records)])

    def _collect(self) -> None:
        """Remove the objects of this generation that its manifest does not name and never
        will again (left by a writer killed inside a compaction): segments not listed, and
        record objects the segments cover."""
        groot = self._groot
        named = {k for k, _ in _layout(groot, self.ends, 0, self._records)}
        stale = []
        for sub in (SEGMENTS, RECORDS):
            for tail in _listing(self.fs, f"{groot}/{sub}"):
                key = f"{groot}/{sub}/{tail}"
                if key not in named and (sub == SEGMENTS or (tail.isdigit()
                                                            and int(tail) < self._records)):
                    stale.append(key)
        _rm(self.fs, stale)

    def close(self) -> None:
        """Give up the lease (a follower holds none)."""
        if self.lease is not None:
            with _reaching(self.path, self.fs, self.root):
                _release(self.fs, self.root, self.lease)
            self.lease = None

    # ---------------------------------------------------------------- objects
    @staticmethod
    def _manifest(fs: Any, root: str, url: str, *, missing_ok: bool) -> Manifest | None:
        """(the committed state's superblock, the generation, the segment ends), or None
        where there is no manifest and ``missing_ok``."""
        try:
            raw = fs.cat_file(f"{root}/{MANIFEST}")
        except FileNotFoundError:
            if missing_ok:
                return None
            with _reaching(url, fs, root):  # a missing bucket is named as such
                raise FileNotFoundError(f"no hyprvdb history at {url!r} (no {MANIFEST} object "
                                        f"there)") from None
        out = _parse_manifest(raw)
        if out is None:
            raise CorruptFileError(f"{url!r}: its manifest is damaged ({len(raw)} bytes failing "
                                   f"their checksum): what was committed is unknown")
        return out

    @staticmethod
    def _records_from(fs: Any, groot: str, first: int) -> list[str]:
        """The record objects numbered ``first`` or later (names within the folder)."""
        return sorted(t for t in _listing(fs, f"{groot}/{RECORDS}")
                      if t.isdigit() and int(t) >= first)


def _listing(fs: Any, folder: str) -> list[str]:
    """The names of the objects in ``folder`` ([] where there is none)."""
    try:
        return [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(folder, detail=False)]
    except FileNotFoundError:
        return []


def _segment_every(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"segment_every must be an int >= 1, got {n!r}")
    return int(n)
