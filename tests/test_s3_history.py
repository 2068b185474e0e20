"""Histories on a real S3-compatible server: moto's standalone server, started here on
127.0.0.1 with throwaway credentials, and s3fs as the client. The same checks as on
``memory://`` (tests/test_remote_history.py): a history written and read back step for step,
a follower refreshing from the writer's new records, and a save that crashes leaving the old
history whole.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from test_remote_history import SHAPES, assert_same, play

from hyprvdb import CorruptFileError, TemporalGroup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _s3  # noqa: E402  (bench/_s3.py: the local server, shared with bench/follow.py)

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto")
fsspec = pytest.importorskip("fsspec")

BUCKET = "hyprvdb-tests"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The endpoint of a moto S3 server of this test module's own (bench/_s3.py), with one
    bucket; s3fs configured for it through fsspec's configuration."""
    if _s3.moto_server() is None:
        pytest.skip("moto's standalone server (pip install 'moto[server]') is not installed")
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "wb")
    proc, endpoint = _s3.start(log)
    saved = _s3.configure(endpoint)
    try:
        _s3.make_bucket(BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        _s3.restore(saved)


def s3_url() -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


def test_a_history_on_s3_reads_back_step_for_step(s3, tmp_path):
    u = s3_url()
    g = TemporalGroup(SHAPES)
    g.save(u)
    play(g, np.random.default_rng(1), 10)
    g.rollback(7)
    play(g, np.random.default_rng(2), 3, start=8)
    with pytest.raises(ValueError, match="has a writer already"):  # S3's conditional PUT
        TemporalGroup.load(u)
    g.close()
    back = TemporalGroup.load(u)
    assert_same(back, g)
    play(back, np.random.default_rng(3), 2, start=back.latest + 1)
    assert_same(TemporalGroup.load(u, mode="r"), back)


def test_a_follower_on_s3(s3):
    u = s3_url()
    writer = TemporalGroup(SHAPES)
    writer.save(u)
    follower = TemporalGroup.load(u, mode="r")
    rng = np.random.default_rng(4)
    for _ in range(5):
        play(writer, rng, 3, start=writer.latest + 1)
        follower.refresh()
        assert_same(follower, writer)
    writer.save(u)
    with pytest.raises(CorruptFileError, match="written anew"):
        follower.refresh()


def test_saving_over_a_history_on_s3_keeps_one_generation(s3):
    u = s3_url()
    g = TemporalGroup(SHAPES)
    g.save(u)
    play(g, np.random.default_rng(5), 4)
    g.save(u)
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(u[len("s3://"):], detail=False))
    assert names == ["000001", "lease", "manifest"]
    assert_same(TemporalGroup.load(u, mode="r"), g)


def test_missing_bucket_and_missing_history(s3):
    with pytest.raises(FileNotFoundError, match="no hyprvdb history"):
        TemporalGroup.load(s3_url(), mode="r")
    with pytest.raises(FileNotFoundError):
        TemporalGroup.load(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/h", mode="r")


def test_store_errors_are_named(s3):
    """A missing bucket, an unreachable endpoint, a second writer: each error names the URL
    and what is wrong."""
    with pytest.raises(FileNotFoundError, match="the bucket 'no-such-bucket' does not exist"):
        TemporalGroup.load("s3://no-such-bucket/h", mode="r")
    with pytest.raises(FileNotFoundError, match="the bucket 'no-such-bucket' does not exist"):
        TemporalGroup(SHAPES).save("s3://no-such-bucket/h")
    u = s3_url()
    with pytest.raises(FileNotFoundError, match="no hyprvdb history at"):
        TemporalGroup.load(u, mode="r")
    g = TemporalGroup(SHAPES)
    g.save(u)
    with pytest.raises(ValueError, match="has a writer already"):
        TemporalGroup(SHAPES).save(u)
    g.close()
    saved = fsspec.config.conf["s3"]
    fsspec.config.conf["s3"] = {**saved, "endpoint_url": f"http://127.0.0.1:{_s3.free_port()}",
                                "config_kwargs": {"connect_timeout": 1,
                                                  "retries": {"max_attempts": 1}}}
    try:
        with pytest.raises(ConnectionError, match=f"{u!r}: the store cannot be reached"):
            TemporalGroup.load(u, mode="r")
    finally:
        fsspec.config.conf["s3"] = saved
