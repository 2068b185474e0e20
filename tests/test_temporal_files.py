"""The history file under crashes, truncation, damage and foreign input.

A real child process is killed with SIGKILL mid-stream; every step it reported committed must
load back, with the values a replay from the same seed gives. Truncating a file at any byte
keeps every record before the cut; damage to the header is an error; files that are not
histories are refused with the HyprVDBError family.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib

import numpy as np
import pytest

from hyprvdb import (CorruptFileError, ForeignFileError, HistoryRecoveryWarning, HyprVDBError,
                     SparseAdapter, TemporalAdapter)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

# ---------------------------------------------------------------------------- crash safety
# Shared by the child and the parent, so both derive the same data from (seed, t).
STEP_DATA = r'''
import numpy as np

ROWS, COLS = 16, 24


def base_data(seed):
    rng = np.random.default_rng([seed, 0])
    n = 30
    return (rng.integers(0, ROWS, n), rng.integers(0, COLS, n),
            (rng.integers(-64, 65, n) / 16).astype(np.float32))


def step_data(seed, t):
    """Dyadic values keep every float64 sum exact, so the replay is order-independent."""
    rng = np.random.default_rng([seed, t])
    n = int(rng.integers(1, 30))
    return (rng.integers(0, ROWS, n), rng.integers(0, COLS, n),
            (rng.integers(-64, 65, n) / 16).astype(np.float32), rng.random(n) < 0.1)
'''

CHILD = STEP_DATA + r'''
import os
import sys
import warnings

from hyprvdb import TemporalAdapter

path, seed = sys.argv[1], int(sys.argv[2])
if os.path.exists(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn tail from the previous kill
        h = TemporalAdapter.load(path)
else:
    h = TemporalAdapter(ROWS, COLS, compact_every=4)
    r, c, v = base_data(seed)
    h.store_base(rows=r, cols=c, values=v)
    h.save(path)
sys.stdout.write(f"ready {h.latest}\n")
sys.stdout.flush()
t = h.latest
while t < 100000:
    t += 1
    r, c, d, reset = step_data(seed, t)
    h.store_delta(t, r, c, d, reset=reset)
    sys.stdout.write(f"{t}\n")  # only after store_delta returned
    sys.stdout.flush()
'''


class Replay:
    """Dense float64 states of the child's history, step by step."""

    def __init__(self, seed: int) -> None:
        ns: dict = {}
        exec(STEP_DATA, ns)  # noqa: S102 - the same code the child runs
        self.step_data = ns["step_data"]
        self.seed = seed
        base = np.zeros((ns["ROWS"], ns["COLS"]), np.float64)
        for r, c, v in zip(*ns["base_data"](seed)):
            base[r, c] += float(v)
        self.states = [base]

    def state(self, t: int) -> np.ndarray:
        while len(self.states) <= t:
            s = len(self.states)
            state = self.states[-1].copy()
            merged: dict = {}
            for r, c, d, rs in zip(*self.step_data(self.seed, s)):
                was, v = merged.get((r, c), (False, 0.0))
                merged[(r, c)] = (True, float(d)) if rs else (was, v + float(d))
            for (r, c), (rs, v) in merged.items():
                v = float(np.float32(v))
                state[r, c] = v if rs else state[r, c] + v
            self.states.append(state)
        return self.states[t]


def load_quietly(path, **kwargs) -> tuple[TemporalAdapter, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = TemporalAdapter.load(path, **kwargs)
    return h, [w for w in caught if issubclass(w.category, HistoryRecoveryWarning)]


def run_child(path, seed: int, rng: random.Random) -> tuple[bool, list[int], int | None]:
    """Start the child, kill it at a random moment; return (saw ready, committed steps it
    reported, latest it started from)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, os.fspath(path), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        if rng.random() < 0.25:
            # Kill blind, at any moment: starting up, loading, saving, or committing.
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            line = proc.stdout.readline()
            assert line.startswith("ready"), proc.stderr.read()
            lines.append(line)
            for _ in range(rng.randrange(0, 25)):
                line = proc.stdout.readline()
                assert line.endswith("\n"), proc.stderr.read()
                lines.append(line)
            time.sleep(rng.uniform(0.0, 0.02))
        os.kill(proc.pid, signal.SIGKILL)
        # Read through the same buffered pipe as readline() (communicate() would skip what
        # readline() already buffered); the child is dead, so these reach EOF.
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err
    lines += out.splitlines(keepends=True)
    complete = [ln.strip() for ln in lines if ln.endswith("\n")]
    ready = [ln for ln in complete if ln.startswith("ready")]
    steps = [int(ln) for ln in complete if not ln.startswith("ready")]
    start = int(ready[0].split()[1]) if ready else None
    return bool(ready), steps, start


def test_killed_writer_loses_no_reported_commit(tmp_path):
    seed = 20261121
    rng = random.Random(seed)
    replay = Replay(seed)
    path = tmp_path / "crash.hvz"
    verified = None  # latest step of the file as last loaded
    kills_with_commits = 0
    for _ in range(8):
        ready, reported, start = run_child(path, seed, rng)
        if not path.exists():
            assert not ready and verified is None  # killed before save() completed
            continue
        if start is not None:
            assert start == (verified or 0)
        newest_reported = max(reported, default=verified or 0)
        assert reported == list(range((start or 0) + 1, (start or 0) + 1 + len(reported)))
        h, _ = load_quietly(path)
        # Every reported step is there, and at most one commit that was not yet reported.
        assert newest_reported <= h.latest <= newest_reported + 1
        assert h.steps == list(range(h.latest + 1))
        for t in h.steps:
            np.testing.assert_array_equal(h.weights_at_time(t).to_dense(),
                                          replay.state(t).astype(np.float32))
        h.close()
        kills_with_commits += bool(reported)
        verified = h.latest
    assert verified is not None and verified > 10
    assert kills_with_commits >= 3


# ---------------------------------------------------------------------------- truncation
def small_history(path) -> tuple[list[int], list[dict]]:
    """A history with one record of every kind; returns the record boundaries (the file
    size after the base and after each later record) and the state at each boundary."""
    h = TemporalAdapter(3, 4, compact_every=2)
    h.store_base(rows=[0, 1, 2], cols=[0, 1, 3], values=[1.0, 2.0, 0.5])

    def snap() -> dict:
        return {"steps": h.steps,
                "states": {t: h.weights_at_time(t).to_dense() for t in h.steps}}

    h.save(path, sync=False)
    bounds, snaps = [os.path.getsize(path)], [snap()]
    ops = [
        lambda: h.store_delta(1, [0, 0, 2], [0, 2, 1], [1.5, -2.0, 4.0]),
        lambda: h.store_delta(2, [0, 1], [0, 1], [7.0, 0.0], reset=np.array([True, True])),
        lambda: (h.accumulate([2, 2], [3, 3], [0.25, 0.25]), h.commit(4)),
        lambda: h.prune_history(2),  # folds step 1: a fold record
        lambda: h.store_delta(5, [1], [2], [3.0]),
        lambda: h.rollback(4),  # a rollback record
        lambda: h.store_delta(6, [0, 1, 2], [3, 3, 3], [1.0, 2.0, 3.0]),
    ]
    for op in ops:
        op()
        bounds.append(os.path.getsize(path))
        snaps.append(snap())
    assert bounds == sorted(set(bounds))  # every operation appended one record
    h.close()
    return bounds, snaps


def assert_snap(h: TemporalAdapter, snap: dict) -> None:
    assert h.steps == snap["steps"]
    for t, d in snap["states"].items():
        np.testing.assert_array_equal(h.weights_at_time(t).to_dense(), d)


def header_end_of(data: bytes) -> int:
    return 18 + struct.unpack_from("<I", data, 10)[0]


SB = 48  # bytes per superblock; two follow the header


def test_truncation_at_every_byte(tmp_path):
    """Cut anywhere, a load returns every committed step, or warns naming what was lost and
    keeps every record before the cut, or raises: it never returns fewer steps silently."""
    src = tmp_path / "full.hvz"
    bounds, snaps = small_history(src)
    data = src.read_bytes()
    assert len(data) == bounds[-1]
    header_end = header_end_of(data)
    cut = tmp_path / "cut.hvz"
    for k in range(len(data) + 1):
        cut.write_bytes(data[:k])
        if k < header_end + SB:
            # The header, or both superblocks (the newest one is the second), are cut: what
            # was committed is unknown.
            for strict in (False, True):
                with pytest.raises(CorruptFileError):
                    TemporalAdapter.load(cut, strict=strict)
            continue
        if k == len(data):
            h, caught = load_quietly(cut)
            assert caught == []
            assert_snap(h, snaps[-1])
            h.close()
            continue
        # Committed records are missing: a warning names the newest committed step (that of
        # the older superblock where the newer one, the second, is cut).
        j = max([i for i, b in enumerate(bounds) if b <= k], default=-1)
        h, caught = load_quietly(cut)
        assert len(caught) == 1, k
        msg = str(caught[0].message)
        newest = snaps[-2 if k < header_end + 2 * SB else -1]["steps"][-1]
        assert "lost" in msg and f"step {newest} was committed" in msg, msg
        if j >= 0:
            assert_snap(h, snaps[j])
        else:  # not even the base record: an empty history, and the warning says so
            assert h.steps == [0] and h.change_count() == 0
        h.close()
        with pytest.raises(CorruptFileError, match="lost"):
            TemporalAdapter.load(cut, strict=True)


def thirty_steps(path) -> TemporalAdapter:
    rng = np.random.default_rng(30)
    h = TemporalAdapter(9, 13, compact_every=4)
    h.store_base(rows=[0, 4, 8], cols=[0, 6, 12], values=[1.0, -2.0, 3.0])
    h.save(path)
    for t in range(1, 31):
        n = int(rng.integers(1, 6))
        flat = np.unique(rng.integers(0, 9 * 13, n))
        h.store_delta(t, flat // 13, flat % 13, rng.standard_normal(len(flat)),
                      reset=rng.random(len(flat)) < 0.2)
    return h


def states_of(h: TemporalAdapter) -> dict:
    return {t: h.active_weights(t) for t in h.steps}


def same_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        all(np.array_equal(x, y) for x, y in zip(a[t], b[t])) for t in a)


def test_a_thirty_step_file_cut_at_every_byte_never_loses_steps_silently(tmp_path):
    src = tmp_path / "thirty.hvz"
    h = thirty_steps(src)
    want = states_of(h)
    h.close()
    data = src.read_bytes()
    cut = tmp_path / "cut.hvz"
    outcomes = {"all": 0, "warned": 0, "refused": 0}
    for k in range(len(data) + 1):
        cut.write_bytes(data[:k])
        try:
            g, caught = load_quietly(cut)
        except CorruptFileError:
            outcomes["refused"] += 1
            continue
        got = states_of(g)
        g.close()
        if caught:
            assert "lost" in str(caught[0].message)
            assert len(got) < len(want)
            if g.change_count() or len(got[g.base_step][0]):  # unless even the base is lost
                assert all(t in want and same_states({t: got[t]}, {t: want[t]}) for t in got)
            outcomes["warned"] += 1
            with pytest.raises(CorruptFileError):
                TemporalAdapter.load(cut, strict=True)
        else:
            assert same_states(got, want), f"cut at {k} of {len(data)}: fewer steps, silently"
            outcomes["all"] += 1
    assert outcomes["all"] == 1 and outcomes["warned"] > 0 and outcomes["refused"] > 0, outcomes


def crc_regions(data: bytes) -> list[tuple[int, int, int, int]]:
    """(start, end, crc offset, crc covers from) of every checksummed part: the header JSON,
    the two superblocks, each record (its CRC covers the kind byte and the body)."""
    header_end = header_end_of(data)
    out = [(0, header_end, header_end - 4, 14)]
    for k in (0, 1):
        a = header_end + k * SB
        out.append((a, a + SB, a + SB - 4, a))
    pos = header_end + 2 * SB
    while pos < len(data):
        _, _, size, _ = struct.unpack_from("<2sBII", data, pos)
        out.append((pos, pos + 11 + size, pos + 7, pos))
        pos += 11 + size
    return out


def restamp(data: bytearray, region: tuple[int, int, int, int], is_record: bool) -> None:
    start, end, crc_at, covers = region
    if is_record:
        size = struct.unpack_from("<I", data, start + 3)[0]
        body = bytes(data[start + 2:start + 3]) + bytes(data[start + 11:start + 11 + size])
    else:
        body = bytes(data[covers:crc_at])
    struct.pack_into("<I", data, crc_at, zlib.crc32(body) & 0xFFFFFFFF)


def test_forged_records_are_never_silently_wrong(tmp_path):
    """Flip a byte anywhere and stamp the checksum that covers it again (a faulty writer, or a
    forged file): the load refuses the file, or warns, or returns exactly the history as it
    was written; never another history without a word."""
    src = tmp_path / "small.hvz"
    bounds, snaps = small_history(src)
    g = TemporalAdapter.load(src)
    want = states_of(g)
    g.close()
    data = src.read_bytes()
    regions = crc_regions(data)
    bad = tmp_path / "forged.hvz"
    silent = []
    for k in range(len(data)):
        forged = bytearray(data)
        forged[k] ^= 0x04
        for i, region in enumerate(regions):
            if region[0] <= k < region[1] and not region[2] <= k < region[2] + 4:
                try:
                    restamp(forged, region, is_record=i >= 3)
                except struct.error:
                    pass
        bad.write_bytes(bytes(forged))
        try:
            h, caught = load_quietly(bad)
        except HyprVDBError:
            continue
        got = states_of(h)
        h.close()
        if not caught and not same_states(got, want):
            silent.append(k)
    assert silent == [], f"silently wrong histories at offsets {silent[:10]}"


def test_the_cut_reported_in_the_issue_warns(tmp_path):
    """Cut at a record boundary, a file used to load as an older history without a word."""
    p = tmp_path / "h.hvz"
    h = TemporalAdapter(8, 8)
    h.store_base(rows=[0], cols=[0], values=[1.0])
    h.save(p)
    sizes = []
    for t in (1, 2, 3):
        h.store_delta(t, [t], [t], [0.5])
        sizes.append(os.path.getsize(p))
    h.close()
    p.write_bytes(p.read_bytes()[:sizes[1]])  # the file as it stood after step 2
    with pytest.raises(CorruptFileError, match=r"lost 1 of its 4 committed records"):
        TemporalAdapter.load(p, strict=True)
    g, caught = load_quietly(p)
    assert g.steps == [0, 1, 2] and len(caught) == 1
    assert "step 3 was committed" in str(caught[0].message)
    g.close()


def as_version_1(data: bytes) -> bytes:
    """The same history in format version 1: no superblocks."""
    header_end = header_end_of(data)
    return (data[:8] + struct.pack("<H", 1) + data[10:header_end]
            + data[header_end + 2 * SB:])


def test_version_1_files_load_and_are_upgraded_on_their_first_commit(tmp_path):
    src = tmp_path / "v2.hvz"
    bounds, snaps = small_history(src)
    old = tmp_path / "v1.hvz"
    old.write_bytes(as_version_1(src.read_bytes()))
    h, caught = load_quietly(old)
    assert caught == []
    assert_snap(h, snaps[-1])
    t = h.latest + 1
    h.store_delta(t, [2], [2], [1.25])
    want = states_of(h)
    h.close()
    data = old.read_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == 2, "the first commit upgrades the file"
    g = TemporalAdapter.load(old, strict=True)
    assert same_states(states_of(g), want)
    g.close()
    # A version 1 file cut inside a record still keeps what it has, as before.
    v1 = as_version_1(src.read_bytes())
    old.write_bytes(v1[:-3])
    h, caught = load_quietly(old)
    assert len(caught) == 1 and h.steps == snaps[-2]["steps"]
    h.close()


def test_recovery_warning_names_the_newest_kept_step(tmp_path):
    """After a rollback record the newest kept step is the one rolled back to."""
    src = tmp_path / "full.hvz"
    bounds, snaps = small_history(src)
    cut = tmp_path / "cut.hvz"
    for j in range(len(bounds) - 1):
        cut.write_bytes(src.read_bytes()[:bounds[j] + 3])
        h, caught = load_quietly(cut)
        assert h.latest == snaps[j]["steps"][-1]
        assert f"(newest step {h.latest})" in str(caught[0].message), j
        h.close()


def test_byte_flips_in_the_middle_record_keep_the_steps_before_it(tmp_path):
    src = tmp_path / "full.hvz"
    bounds, snaps = small_history(src)
    data = src.read_bytes()
    m = len(bounds) // 2  # the record from bounds[m - 1] to bounds[m]
    bad = tmp_path / "bad.hvz"
    for k in range(bounds[m - 1], bounds[m]):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[k] ^= mask
            bad.write_bytes(bytes(damaged))
            h, caught = load_quietly(bad)
            assert_snap(h, snaps[m - 1])
            assert len(caught) == 1 and f"byte {bounds[m - 1]}" in str(caught[0].message)
            h.close()
            with pytest.raises(CorruptFileError, match=rf"byte {bounds[m - 1]}\b"):
                TemporalAdapter.load(bad, strict=True)


def test_byte_flips_in_the_header_are_errors(tmp_path):
    src = tmp_path / "full.hvz"
    small_history(src)
    data = src.read_bytes()
    (n,) = struct.unpack_from("<I", data, 10)
    bad = tmp_path / "bad.hvz"
    for k in range(18 + n):
        damaged = bytearray(data)
        damaged[k] ^= 0x20
        bad.write_bytes(bytes(damaged))
        expected = ForeignFileError if k < 10 else CorruptFileError  # magic, version: foreign
        with pytest.raises(expected):
            TemporalAdapter.load(bad)


@pytest.mark.parametrize("cut_into", ["torn", "flipped"])
def test_commit_after_recovery_appends_and_reloads(tmp_path, cut_into):
    src = tmp_path / "full.hvz"
    bounds, snaps = small_history(src)
    data = bytearray(src.read_bytes())
    if cut_into == "torn":
        data = data[:bounds[3] + 7]  # a crash mid-way through the fourth record
    else:
        data[bounds[3] + 12] ^= 0xFF  # damage inside the fourth record; later ones follow
    path = tmp_path / "h.hvz"
    path.write_bytes(bytes(data))
    h, caught = load_quietly(path)
    assert len(caught) == 1
    assert_snap(h, snaps[3])
    expected = {t: h.weights_at_time(t).to_dense() for t in h.steps}
    t = h.latest + 1
    h.store_delta(t, [1, 2], [1, 0], [0.5, -1.0])
    expected[t] = h.current().to_dense()
    h.close()
    assert os.path.getsize(path) > bounds[3]
    g, caught = load_quietly(path)
    assert caught == []
    assert g.steps == snaps[3]["steps"] + [t]
    for s, d in expected.items():
        np.testing.assert_array_equal(g.weights_at_time(s).to_dense(), d)
    want = snaps[3]["states"][snaps[3]["steps"][-1]].copy()
    want[1, 1] += 0.5
    want[2, 0] += -1.0
    np.testing.assert_array_equal(g.current().to_dense(), want)
    g.close()


# ---------------------------------------------------------------------------- foreign files
def header_bytes(js: bytes, version: int = 2) -> bytes:
    return (b"HYPRVDBZ" + struct.pack("<HI", version, len(js)) + js
            + struct.pack("<I", zlib.crc32(js) & 0xFFFFFFFF))


def test_foreign_files_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    noise = bytes([0]) + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    adapter = SparseAdapter(8, 8)
    adapter.batch_update([1, 2], [3, 4], [1.0, 2.0])
    adapter.save(tmp_path / "adapter.vdb")
    cases = {
        "noise.bin": (noise, ForeignFileError),
        "notes.txt": (b"step,row,col,delta\n1,0,0,0.5\n", ForeignFileError),
        "adapter.vdb": ((tmp_path / "adapter.vdb").read_bytes(), ForeignFileError),
        "empty.hvz": (b"", CorruptFileError),
        "magic.hvz": (b"HYPRVDBZ", CorruptFileError),
        "half_magic.hvz": (b"HYPR", CorruptFileError),
        "future.hvz": (header_bytes(b"{}", version=3), ForeignFileError),
    }
    for name, (content, exc) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(exc) as info:
            TemporalAdapter.load(p)
        assert isinstance(info.value, HyprVDBError)
        assert name in str(info.value)
    with pytest.raises(ForeignFileError, match=r"version 3"):
        TemporalAdapter.load(tmp_path / "future.hvz")


MEMBER = {"rows": 3, "cols": 4, "name": "lora_delta", "max_history": None,
          "compact_every": 2, "tiers": None}


@pytest.mark.parametrize("js", [
    b"this is not json",
    b"\xff\xfe not utf-8",
    b"[1, 2, 3]",
    b'{"hello": 1}',
    json.dumps({"members": []}).encode(),
    json.dumps({"members": [7]}).encode(),
    json.dumps({"members": [{"rows": 3}]}).encode(),
    json.dumps({"members": [{**MEMBER, "rows": -3}]}).encode(),
    json.dumps({"members": [{**MEMBER, "tiers": [[5, 2], [3, 1]]}]}).encode(),
])
def test_checksummed_but_invalid_header_is_a_hyprvdb_error(tmp_path, js):
    """A header whose checksum holds but whose content is not a history header is a
    corrupt (or foreign) file, not a bare JSON, key or argument error."""
    src = tmp_path / "full.hvz"
    small_history(src)
    data = src.read_bytes()
    (n,) = struct.unpack_from("<I", data, 10)
    p = tmp_path / "odd.hvz"
    p.write_bytes(header_bytes(js) + data[18 + n:])
    with pytest.raises(HyprVDBError):
        TemporalAdapter.load(p)


# ---------------------------------------------------------------------------- replay rules
def forged_file(path, records, members=None):
    """A file whose every checksum (records, chain, superblock) is right, holding whatever
    records the test wrote: what a faulty writer, or a forger who stamps everything, leaves."""
    from hyprvdb.history import _file as F
    header = {"members": members or [dict(MEMBER)]}
    raw = []
    for kind, t, body in records:
        raw.append((kind, t, F._record(kind, body)))
    F.HistoryFile._write_whole(os.fspath(path), F._header_bytes(header), raw, False)


def base_rec(member=0, t=0, idx=(0,), val=(1.0,)):
    from hyprvdb.history import _file as F
    return ("base", t, F.encode_base(member, t, np.asarray(idx, np.int64),
                                     np.asarray(val, np.float64)))


def step_rec(t, slices):
    from hyprvdb.history import _file as F
    return ("step", t, F.encode_step(t, [(m, np.asarray(i, np.int64), np.asarray(d, np.float32),
                                          np.asarray(r, bool)) for m, i, d, r in slices]))


def mark_rec(kind, t):
    return (kind, t, struct.pack("<q", t))


@pytest.mark.parametrize("records,message", [
    ([base_rec(), step_rec(2, [(0, [1], [0.5], [False])]),
      step_rec(1, [(0, [2], [0.5], [False])])], r"record 2 \(step.*step 1 does not follow step 2"),
    ([base_rec(), step_rec(1, [(0, [12], [0.5], [False])])],
     r"record 1 \(step.*index outside 'lora_delta' \(3 x 4\)"),
    ([base_rec(), step_rec(1, [(1, [2], [0.5], [False])])], r"names matrix 1, the file has 1"),
    ([base_rec(), step_rec(1, [(0, [2], [0.5], [False]), (0, [3], [1.0], [False])])],
     r"its matrices \[0, 0\] are not in order"),
    ([base_rec(), step_rec(1, [(0, [2], [np.inf], [False])])], "not finite"),
    ([base_rec(), step_rec(1, [(0, [2], [3e38], [False])]), step_rec(2, [(0, [2], [3e38], [False])])],
     r"record 2 \(step.*not finite"),
    ([base_rec(idx=(13,))], r"record 0 \(base.*index outside"),
    ([base_rec(), step_rec(1, [(0, [2], [0.5], [False])]), mark_rec("fold", 7)],
     r"record 2 \(fold.*step 7 is not a stored step"),
    ([base_rec(), step_rec(1, [(0, [2], [0.5], [False])]), mark_rec("rollback", 5)],
     r"record 2 \(rollback.*step 5 is not a stored step"),
    ([base_rec(), step_rec(1, [(0, [2], [0.5], [False])]), base_rec()],
     r"record 2 \(base.*a base record after the first step"),
    ([base_rec(), step_rec(2**31, [(0, [2], [0.5], [False])])], r"step 2147483648 does not"),
], ids=["steps out of order", "index outside", "unknown matrix", "matrix twice", "inf value",
        "sum overflows", "base index outside", "fold of no step", "rollback to no step",
        "base after a step", "step too large"])
def test_replay_refuses_records_that_break_the_rules(tmp_path, records, message):
    p = tmp_path / "forged.hvz"
    forged_file(p, records)
    for strict in (False, True):
        with pytest.raises(CorruptFileError, match=message):
            TemporalAdapter.load(p, strict=strict)


def test_the_same_rules_hold_a_well_formed_forged_file(tmp_path):
    """The control for the test above: records that keep the rules load."""
    p = tmp_path / "fine.hvz"
    forged_file(p, [base_rec(), step_rec(1, [(0, [2, 5], [0.5, -1.0], [False, True])]),
                    step_rec(3, [(0, [11], [2.0], [False])]), mark_rec("rollback", 1),
                    step_rec(4, [(0, [0], [1.0], [False])]), mark_rec("fold", 1)])
    h = TemporalAdapter.load(p, strict=True)
    assert h.steps == [1, 4]
    assert h.get_weights([0, 0, 1], [0, 2, 1]).tolist() == [2.0, 0.5, -1.0]
    h.close()
