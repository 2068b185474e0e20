"""Histories on fsspec filesystems (hyprvdb/history/_objects.py): a header object, one
immutable object per commit and a manifest. Checked against the same operations on a local
history file (every step's weights equal), for interrupted commits (a record object past the
manifest), missing and damaged objects, and for saving over a longer history.
"""

from __future__ import annotations

import uuid
import warnings

import numpy as np
import pytest

from hyprvdb import CorruptFileError, HistoryRecoveryWarning, TemporalAdapter, TemporalGroup

fsspec = pytest.importorskip("fsspec")

SHAPES = {"q": (24, 40), "ff": (64, 24)}


def url() -> str:
    return f"memory://hyprvdb-tests/{uuid.uuid4().hex}"


def mem_path(u: str) -> str:
    return u[len("memory://"):]


def records_dir(u: str) -> str:
    """The record objects' folder of the generation the manifest names."""
    fs = fsspec.filesystem("memory")
    gens = [p.rsplit("/", 1)[-1] for p in fs.ls(mem_path(u), detail=False)]
    (gen,) = [g for g in gens if g.isdigit()]
    return f"{mem_path(u)}/{gen}/records"


def play(g: TemporalGroup, rng: np.random.Generator, steps: int, start: int = 1) -> None:
    for t in range(start, start + steps):
        deltas = {}
        for name, (r, c) in SHAPES.items():
            n = int(rng.integers(1, 30))
            deltas[name] = (rng.integers(0, r, n), rng.integers(0, c, n),
                            rng.standard_normal(n))
        g.store_deltas(t, deltas)


def assert_same(a: TemporalGroup, b: TemporalGroup) -> None:
    assert a.steps == b.steps
    for t in a.steps:
        for name in SHAPES:
            for x, y in zip(a[name].active_weights(t), b[name].active_weights(t)):
                np.testing.assert_array_equal(x, y)


def test_remote_history_matches_a_local_file(tmp_path):
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    local, remote = TemporalGroup(SHAPES), TemporalGroup(SHAPES)
    local.save(tmp_path / "h.hvh")
    u = url()
    remote.save(u)
    assert remote.path == u
    for g, rng in ((local, rng_a), (remote, rng_b)):
        play(g, rng, 12)
        g.rollback(9)
        play(g, rng, 5, start=10)
        g.prune_history(8)
    assert_same(local, remote)
    remote.close()  # gives up the writer lease
    back = TemporalGroup.open(u, "a")
    assert_same(back, TemporalGroup.open(tmp_path / "h.hvh", "r"))
    play(back, np.random.default_rng(2), 3, start=back.latest + 1)  # commits go on
    assert_same(back, TemporalGroup.load(u, mode="r"))


def test_file_urls_and_single_adapters(tmp_path):
    a = TemporalAdapter(10, 10)
    a.save(f"file://{tmp_path}/one")
    a.store_delta(1, [1, 2], [3, 4], [0.5, -0.5])
    a.close()
    b = TemporalAdapter.load(f"file://{tmp_path}/one")
    np.testing.assert_array_equal(b.get_weights([1, 2], [3, 4], t=1), [0.5, -0.5])
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["000000", "lease",
                                                                   "manifest"]
    assert sorted(p.name for p in (tmp_path / "one" / "000000").iterdir()) == [
        "header", "records", "segments"]


def test_an_interrupted_commit_is_not_part_of_the_history():
    u = url()
    g = TemporalGroup(SHAPES)
    g.save(u)
    play(g, np.random.default_rng(3), 4)
    fs = fsspec.filesystem("memory")
    records = sorted(fs.ls(records_dir(u), detail=False))
    after = int(records[-1].rsplit("/", 1)[-1]) + 1
    fs.pipe(f"{records_dir(u)}/{after:012d}", fs.cat_file(records[-1]))
    with warnings.catch_warnings():  # to a follower it may be a commit in flight
        warnings.simplefilter("error")
        assert TemporalGroup.load(u, strict=True, mode="r").latest == 4
    g.close()
    with pytest.raises(CorruptFileError, match="record object"):
        TemporalGroup.load(u, strict=True)
    with pytest.warns(HistoryRecoveryWarning, match="1 record object"):
        h = TemporalGroup.load(u)
    assert h.latest == 4
    play(h, np.random.default_rng(4), 1, start=5)  # overwrites the stray object
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TemporalGroup.load(u, mode="r").latest == 5


def test_missing_and_damaged_objects():
    fs = fsspec.filesystem("memory")
    with pytest.raises(FileNotFoundError, match="no hyprvdb history"):
        TemporalGroup.load(url(), mode="r")
    u = url()
    g = TemporalGroup(SHAPES)
    g.save(u)
    play(g, np.random.default_rng(5), 3)
    root = mem_path(u)
    rec = f"{records_dir(u)}/{2:012d}"
    kept = fs.cat_file(rec)
    fs.rm(rec)
    with pytest.raises(CorruptFileError, match="000000000002' is missing"):
        TemporalGroup.load(u, mode="r")
    fs.pipe(rec, kept[:-1] + bytes([kept[-1] ^ 1]))
    with pytest.raises(CorruptFileError):
        TemporalGroup.load(u, strict=True, mode="r")
    fs.pipe(rec, kept)
    manifest = fs.cat_file(f"{root}/manifest")
    fs.pipe(f"{root}/manifest", manifest[:-1] + bytes([manifest[-1] ^ 1]))
    with pytest.raises(CorruptFileError, match="manifest is damaged"):
        TemporalGroup.load(u, mode="r")
    fs.pipe(f"{root}/manifest", manifest)
    assert TemporalGroup.load(u, mode="r").latest == 3


def test_saving_over_a_longer_history_removes_its_extra_objects():
    u = url()
    g = TemporalGroup(SHAPES)
    g.save(u)
    play(g, np.random.default_rng(6), 10)
    g.close()
    short = TemporalGroup(SHAPES)
    play(short, np.random.default_rng(7), 2)
    short.save(u)
    fs = fsspec.filesystem("memory")
    # a new generation, its records in one segment; the old one's objects are gone
    assert records_dir(u).endswith("/000001/records")
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(mem_path(u), detail=False)
            if p.rsplit("/", 1)[-1].isdigit()] == ["000001"]
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(f"{mem_path(u)}/000001/segments",
                                                detail=False)] == [
        "000000000000-000000000004"]  # two bases, two steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(TemporalGroup.load(u, mode="r"), short)


@pytest.mark.parametrize("where", ["url", "file"])
def test_a_follower_applies_the_writers_new_commits(tmp_path, where):
    """A reader loaded with mode='r' refreshes to the writer's state after every commit,
    rollback and prune, reading only what is new; it refuses every write."""
    path = url() if where == "url" else str(tmp_path / "h.hvh")
    writer = TemporalGroup(SHAPES)
    writer.save(path)
    play(writer, np.random.default_rng(8), 3)
    follower = TemporalGroup.load(path, mode="r")
    rng = np.random.default_rng(9)
    for round_ in range(6):
        play(writer, rng, 4, start=writer.latest + 1)
        if round_ == 2:
            writer.rollback(writer.latest - 2)
        if round_ == 4:
            writer.prune_history(3)
        before = follower.latest
        new = follower.refresh()
        assert new == [t for t in writer.steps if t > before] or round_ in (2, 4)
        assert_same(follower, writer)
    assert follower.refresh() == []
    for write in (lambda: follower.store_deltas(follower.latest + 1, {}),
                  lambda: follower.commit(), lambda: follower.rollback(follower.latest),
                  lambda: follower.prune_history(1), lambda: follower.save(path),
                  lambda: follower.accumulate("q", [0], [0], [1.0]),
                  lambda: follower["q"].store_base(rows=[0], cols=[0], values=[1.0])):
        with pytest.raises(ValueError, match="read-only"):
            write()
    writer.save(path)  # written anew: the follower must load it again
    with pytest.raises(CorruptFileError, match="written anew"):
        follower.refresh()


@pytest.mark.parametrize("crash_after", [0, 1, 2])
def test_a_save_that_crashes_leaves_the_old_history(monkeypatch, crash_after):
    """Saving over a history writes a new generation before the manifest names it: a crash
    after any number of its PUTs leaves the old history whole."""
    from hyprvdb.history import _objects
    u = url()
    g = TemporalGroup(SHAPES)
    g.save(u)
    play(g, np.random.default_rng(10), 4)
    g.close()
    other = TemporalGroup(SHAPES)
    play(other, np.random.default_rng(11), 2)
    real, calls = _objects._put, []

    def put(fs, key, data):
        if len(calls) == crash_after:
            raise OSError("the writer was killed")
        calls.append(key)
        real(fs, key, data)

    monkeypatch.setattr(_objects, "_put", put)
    with pytest.raises(OSError, match="killed"):
        other.save(u)
    monkeypatch.setattr(_objects, "_put", real)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(TemporalGroup.load(u, mode="r"), g)
    short = TemporalGroup(SHAPES)  # a later save succeeds and replaces it, leaving nothing
    play(short, np.random.default_rng(12), 1)  # of the crashed one behind
    short.save(u)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(TemporalGroup.load(u, mode="r"), short)


def test_one_writer_at_a_time():
    """A second writer is refused, naming the first; close gives the lease up; take_over
    replaces the lease a killed writer left; followers need none; a load that fails leaves
    no lease behind."""
    u = url()
    first = TemporalGroup(SHAPES)
    first.save(u)
    with pytest.raises(ValueError, match=r"has a writer already \(.* pid \d+ since .*mode='r'"):
        TemporalGroup.load(u)
    with pytest.raises(ValueError, match="has a writer already"):
        TemporalGroup(SHAPES).save(u)
    follower = TemporalGroup.load(u, mode="r")  # needs no lease
    play(first, np.random.default_rng(13), 2)
    assert follower.refresh() == [1, 2]
    first.close()
    second = TemporalGroup.load(u)
    play(second, np.random.default_rng(14), 1, start=3)
    # a writer killed without closing: its lease stays until someone takes over
    third = TemporalGroup.load(u, take_over=True)
    assert third.latest == 3
    third.close()
    fs = fsspec.filesystem("memory")
    assert not fs.exists(f"{mem_path(u)}/lease")
    fs.rm(records_dir(u).replace("/records", "/segments/000000000000-000000000002"))
    with pytest.raises(CorruptFileError, match="000002' is missing"):
        TemporalGroup.load(u)
    assert not fs.exists(f"{mem_path(u)}/lease")


def objects(u: str, sub: str) -> list[str]:
    """The names of the objects in ``records`` or ``segments`` of the current generation."""
    fs = fsspec.filesystem("memory")
    try:
        return sorted(p.rsplit("/", 1)[-1]
                      for p in fs.ls(records_dir(u).replace("/records", f"/{sub}"),
                                     detail=False))
    except FileNotFoundError:
        return []


def test_compaction_keeps_every_step_once():
    """Loose record objects become segments every ``segment_every`` commits, merged like a
    binary counter; the manifest names every record once; followers refreshing at every
    commit and a late one all see the writer's steps, and what a compaction replaced is
    gone."""
    u = url()
    writer = TemporalGroup(SHAPES)
    writer.save(u, segment_every=3)
    follower = TemporalGroup.load(u, mode="r")
    rng = np.random.default_rng(20)
    for t in range(1, 61):
        play(writer, rng, 1, start=writer.latest + 1)
        if t == 30:
            writer.rollback(writer.latest - 4)
        if t == 45:
            writer.prune_history(10)
        follower.refresh()
        assert_same(follower, writer)
    records = writer._file._records
    ends = writer._file.ends
    assert records - ends[-1] < 3
    assert len(ends) <= 1 + (records // 3).bit_length()
    segs = objects(u, "segments")
    starts = [0] + ends[:-1]
    assert segs == [f"{a:012d}-{b:012d}" for a, b in zip(starts, ends)]
    assert objects(u, "records") == [f"{i:012d}" for i in range(ends[-1], records)]
    late = TemporalGroup.load(u, mode="r")
    assert_same(late, writer)
    writer.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(TemporalGroup.load(u), writer)


def test_a_reader_whose_objects_a_compaction_removed_reads_again(monkeypatch):
    """A follower that read a manifest just before a compaction removed the objects it names
    reads the new manifest and gets the same records; a manifest that stays the newest while
    naming a missing object is an error."""
    from hyprvdb.history._objects import HistoryObjects
    u = url()
    writer = TemporalGroup(SHAPES)
    writer.save(u, segment_every=4)
    follower = TemporalGroup.load(u, mode="r")
    stale = HistoryObjects._manifest(follower._file.fs, follower._file.root, u,
                                     missing_ok=False)
    play(writer, np.random.default_rng(21), 2)
    stale = HistoryObjects._manifest(follower._file.fs, follower._file.root, u,
                                     missing_ok=False)
    play(writer, np.random.default_rng(22), 5, start=3)  # compacts: records 2, 3 are gone
    assert objects(u, "records") == [f"{i:012d}" for i in range(6, 9)]
    real, served = HistoryObjects._manifest, []

    def manifest(fs, root, path, *, missing_ok):
        if not served:
            served.append(1)
            return stale
        return real(fs, root, path, missing_ok=missing_ok)

    monkeypatch.setattr(HistoryObjects, "_manifest", staticmethod(manifest))
    assert follower.refresh() == [1, 2, 3, 4, 5, 6, 7]
    assert len(served) == 1
    monkeypatch.setattr(HistoryObjects, "_manifest", staticmethod(real))
    assert_same(follower, writer)
    fs = fsspec.filesystem("memory")
    fs.rm(f"{records_dir(u)}/{7:012d}")
    with pytest.raises(CorruptFileError, match="000000000007' is missing"):
        TemporalGroup.load(u, mode="r")


@pytest.mark.filterwarnings("ignore::hyprvdb.HistoryRecoveryWarning")  # the stray record
@pytest.mark.parametrize("crash_at", range(6))
def test_a_writer_killed_inside_a_compaction(monkeypatch, crash_at):
    """A commit that compacts makes five store calls (its record, the manifest, the segment,
    the manifest naming it, the removal): killed before any of them, every step that a
    commit returned for is there once, a writer that takes over continues, and the objects no
    manifest names are removed. (KeyboardInterrupt stands for the kill: a compaction that
    fails with an error is retried at the next commit, see below.)"""
    from hyprvdb.history import _objects
    u = url()
    g = TemporalGroup(SHAPES)
    g.save(u, segment_every=4)
    play(g, np.random.default_rng(23), 3)
    calls = []
    real_put, real_rm = _objects._put, _objects._rm

    def counted(real):
        def call(*args):
            if len(calls) == crash_at:
                raise KeyboardInterrupt("the writer was killed")
            calls.append(args[1])
            real(*args)
        return call

    monkeypatch.setattr(_objects, "_put", counted(real_put))
    monkeypatch.setattr(_objects, "_rm", counted(real_rm))
    returned = g.latest
    try:
        play(g, np.random.default_rng(24), 1, start=4)  # the 4th loose record: compacts
        returned = 4
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(_objects, "_put", real_put)
    monkeypatch.setattr(_objects, "_rm", real_rm)
    assert len(calls) == min(crash_at, 5)
    back = TemporalGroup.load(u, take_over=True)
    # a commit is made by its manifest (the second call): the compaction after it is not
    # part of it
    assert back.latest == (4 if crash_at >= 2 else 3)
    assert returned in (back.latest, 3)
    expect = TemporalGroup(SHAPES)
    rng = np.random.default_rng(23)
    play(expect, rng, 3)
    if back.latest == 4:
        play(expect, np.random.default_rng(24), 1, start=4)
    assert_same(back, expect)
    # the manifest names each object left; nothing else of this generation remains
    f = back._file
    named = {k.rsplit("/", 1)[-1] for k, _ in _objects._layout(f._groot, f.ends, 0,
                                                                 f._records)}
    assert set(objects(u, "segments")) | {x for x in objects(u, "records")
                                          if int(x) < f._records} == named
    play(back, np.random.default_rng(25), 6, start=back.latest + 1)
    back.close()
    assert_same(TemporalGroup.load(u, mode="r"), back)


def test_url_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="segment_every must be an int >= 1, got 0"):
        TemporalGroup(SHAPES).save(url(), segment_every=0)
    with pytest.raises(ValueError, match="segment_every: only a history on a URL"):
        TemporalGroup(SHAPES).save(tmp_path / "h.hvh", segment_every=4)
    with pytest.raises(ValueError, match="take_over: only a history on a URL"):
        TemporalGroup.load(tmp_path / "h.hvh", take_over=True)


def test_a_compaction_that_fails_does_not_fail_its_commit(monkeypatch):
    """The commit is made by its manifest; a store error in the compaction after it is a
    warning, and the next commit compacts again."""
    from hyprvdb.history import _objects
    u = url()
    g = TemporalGroup(SHAPES)
    g.save(u, segment_every=2)
    real = _objects._put

    def put(fs, key, data):
        if "/segments/" in key:
            raise OSError("the store refused the PUT")
        real(fs, key, data)

    monkeypatch.setattr(_objects, "_put", put)
    with pytest.warns(RuntimeWarning, match="compaction failed .*refused the PUT.*stands"):
        play(g, np.random.default_rng(26), 2)
    assert g.latest == 2 and g._file.ends == [2]
    monkeypatch.setattr(_objects, "_put", real)
    play(g, np.random.default_rng(27), 1, start=3)
    assert g._file.ends == [5] and objects(u, "records") == []
    assert_same(TemporalGroup.load(u, mode="r"), g)
