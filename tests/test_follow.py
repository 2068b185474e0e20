"""Followers: read-only replicas of a history another writer commits to (a local file or a
URL). Their merged weights are a merge from scratch of the writer's ``weights_at_time``, bit
for bit, at every step they serve, through commits, rollbacks and prunes, whether they poll
after every commit or after many; a late follower catches up; the background thread moves
them; an AdaptiveEncoder that follows serves what the learning one served.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

jax = pytest.importorskip("jax")
ml_dtypes = pytest.importorskip("ml_dtypes")
pytest.importorskip("fsspec")
import jax.numpy as jnp  # noqa: E402

import hyprvdb  # noqa: E402
from hyprvdb import TemporalGroup  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder, Follower, MiniLM  # noqa: E402
from test_merged import DTYPES, SHAPES, assert_merged  # noqa: E402


def where(kind: str, tmp_path) -> str:
    return f"memory://hyprvdb-follow/{uuid.uuid4().hex}" if kind == "url" \
        else str(tmp_path / "h.hvh")


def commit(g: TemporalGroup, rng: np.random.Generator) -> int:
    deltas = {}
    for name, (r, c) in SHAPES.items():
        n = int(rng.integers(0, 12))
        deltas[name] = (rng.integers(0, r, n), rng.integers(0, c, n),
                        rng.standard_normal(n).astype(np.float32))
    return g.store_deltas(g.latest + 1, deltas)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kind", ["url", "file"])
def test_a_follower_serves_the_writers_steps_bit_for_bit(tmp_path, kind, dtype):
    rng = np.random.default_rng(0)
    path = where(kind, tmp_path)
    writer = TemporalGroup(SHAPES)
    writer.save(path, **({"segment_every": 5} if kind == "url" else {}))
    commit(writer, rng)
    pre = {n: rng.standard_normal(s).astype(DTYPES[dtype]) for n, s in SHAPES.items()}
    f = hyprvdb.Follower(path, {n: jnp.asarray(w) for n, w in pre.items()}, scale=0.5)
    assert f.step == 1
    assert_merged(f.merged, pre, writer, 0.5, "at the start")
    for k in range(80):
        for _ in range(int(rng.integers(0, 4))):
            commit(writer, rng)
        if k % 17 == 5 and writer.latest > 3:
            writer.rollback(writer.latest - int(rng.integers(1, 3)))
            commit(writer, rng)  # the step numbers after a rollback are committed again
        if k % 23 == 11:
            writer.prune_history(int(rng.integers(0, 5)))
        before = f.step
        new = f.poll()
        assert f.step == writer.latest
        assert (new == []) == (f.step == before and k % 17 != 5)
        with f.reading():
            assert_merged(f.merged, pre, writer, 0.5, f"poll {k}")
    late = Follower(path, {n: jnp.asarray(w) for n, w in pre.items()}, scale=0.5)
    assert late.step == writer.latest
    assert_merged(late.merged, pre, writer, 0.5, "a late follower")
    assert late.history.steps == writer.steps


def test_a_follower_without_weights_and_its_refusals(tmp_path):
    path = str(tmp_path / "h.hvh")
    writer = TemporalGroup(SHAPES)
    writer.save(path)
    f = Follower(path)
    commit(writer, np.random.default_rng(1))
    assert f.poll() == [1] and f.step == 1 and f.poll() == []
    with pytest.raises(ValueError, match="given no weights"):
        f.weights
    with pytest.raises(ValueError, match="read-only"):
        f.history.store_deltas(2, {})
    with pytest.raises(ValueError, match="mode='r'"):
        Follower(TemporalGroup.load(path, mode="a"))
    with pytest.raises(TypeError, match="history must be a path, a URL or a TemporalGroup"):
        Follower(3)
    with pytest.raises(ValueError, match="interval must be > 0"):
        f.start(0)


def test_the_background_thread_moves_the_weights(tmp_path):
    path = f"memory://hyprvdb-follow/{uuid.uuid4().hex}"
    writer = TemporalGroup(SHAPES)
    writer.save(path)
    pre = {n: np.ones(s, np.float32) for n, s in SHAPES.items()}
    seen = []
    with Follower(path, {n: jnp.asarray(w) for n, w in pre.items()}) as f:
        f.start(0.01, on_step=lambda step, new: seen.append((step, new)))
        rng = np.random.default_rng(2)
        for _ in range(10):
            commit(writer, rng)
            time.sleep(0.005)
        deadline = time.monotonic() + 30
        while f.step != writer.latest and time.monotonic() < deadline:
            time.sleep(0.01)
        assert f.step == writer.latest == 10
        with f.reading():
            assert_merged(f.merged, pre, writer, 1.0, "after the thread's polls")
        assert sorted(t for _, new in seen for t in new) == list(range(1, 11))
        with pytest.raises(RuntimeError, match="polling already"):
            f.start(0.01)
    assert f._thread is None


def test_a_failed_poll_is_kept_and_retried(tmp_path, monkeypatch):
    path = str(tmp_path / "h.hvh")
    writer = TemporalGroup(SHAPES)
    writer.save(path)
    f = Follower(path)
    real = f.history.fetch_commits
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("the store cannot be reached")
        return real()

    monkeypatch.setattr(f.history, "fetch_commits", flaky)
    commit(writer, np.random.default_rng(3))
    with pytest.warns(RuntimeWarning, match="polling failed .*cannot be reached.*serving step 0"):
        f.start(0.01)
        deadline = time.monotonic() + 30
        while f.step != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    f.stop()
    assert f.step == 1 and f.error is None and len(calls) >= 3


def test_a_following_encoder_serves_what_the_learner_served(tmp_path):
    """A learning encoder commits to a URL; a following encoder (its own copy of the model)
    polls it and serves the same step with the same embeddings, and the same past steps;
    it refuses to learn."""
    def model():
        return MiniLM.random(0, layers=1, hidden=32, heads=2, intermediate=64, vocab=512)

    url = f"memory://hyprvdb-follow/{uuid.uuid4().hex}"
    learner = AdaptiveEncoder(model(), url, query_tokens=8, doc_tokens=8,
                              update_fraction=0.01)
    follower = AdaptiveEncoder(model(), url, follow=True, follow_interval=60)
    texts = ["a b c", "d e f g"]
    pairs = [("q one", "doc one"), ("q two", "doc two")]
    served = {0: learner.encode(texts)[0]}
    for _ in range(3):
        served[learner.adapt(pairs)["step"]] = learner.encode(texts)[0]
    assert follower.step == 0
    assert follower.poll() == [1, 2, 3]
    emb, step = follower.encode(texts)
    assert step == 3 and np.array_equal(emb, served[3])
    for t in (0, 1, 2):
        e, s = follower.encode(texts, step=t)
        np.testing.assert_allclose(e, served[t], atol=1e-5)
    learner.rollback(1)
    learner.adapt(pairs)  # step 2 again, another one
    served[2] = learner.encode(texts)[0]
    assert follower.poll() == [2]
    assert np.array_equal(follower.encode(texts)[0], served[2])
    assert follower.history_summary()["following"] is True
    for refused in (lambda: follower.adapt(pairs), lambda: follower.rollback(0),
                    lambda: follower.commit({})):
        with pytest.raises(ValueError, match=r"follows .* \(read-only\)"):
            refused()
    with pytest.raises(ValueError, match="does not follow"):
        learner.poll()
    with pytest.raises(ValueError, match="follow=True needs history"):
        AdaptiveEncoder(model(), None, follow=True)
    with pytest.raises(FileNotFoundError, match="no hyprvdb history"):
        AdaptiveEncoder(model(), f"memory://hyprvdb-follow/{uuid.uuid4().hex}", follow=True)
    follower.close()
    learner.close()


def test_requests_during_follower_moves_see_whole_steps():
    """Forward passes run while the follower's thread moves the weights: each response is
    one whole committed step's (never a donated buffer, never half a step)."""
    def model():
        return MiniLM.random(0, layers=1, hidden=32, heads=2, intermediate=64, vocab=512)

    url = f"memory://hyprvdb-follow/{uuid.uuid4().hex}"
    learner = AdaptiveEncoder(model(), url, query_tokens=8, doc_tokens=8, update_fraction=0.05)
    follower = AdaptiveEncoder(model(), url, follow=True, follow_interval=0.001)
    texts = ["x y z"]
    served = {0: learner.encode(texts)[0]}
    errors, got = [], []
    stop = threading.Event()

    def client() -> None:
        try:
            while not stop.is_set():
                got.append(follower.encode(texts))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(8):
        served[learner.adapt([("q a", "d a"), ("q b", "d b")])["step"]] = \
            learner.encode(texts)[0]
    deadline = time.monotonic() + 60
    while follower.step != learner.step and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    follower.close()
    learner.close()
    assert not errors, errors[0]
    assert follower.step == 8
    for emb, step in got:
        assert np.array_equal(emb, served[step]), f"a response at step {step} is not that step's"


@pytest.mark.slow
def test_hyprvdb_serve_follow_is_a_read_only_replica(tmp_path):
    """``hyprvdb serve --follow PATH`` in its own process serves the steps this process
    commits to PATH (the embedded MiniLM's shapes), with the embeddings an in-process
    follower computes, and answers /adapt with 400."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    import socket
    import subprocess
    import sys

    from conftest import wait_for_healthz

    shapes = MiniLM.load().linear_shapes()
    path = str(tmp_path / "h.hvh")
    writer = TemporalGroup(shapes)
    writer.save(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "hyprvdb", "serve", "--follow", path,
                             "--port", str(port), "--follow-interval", "0.05"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_healthz(url, lambda: proc.poll() is None, 180,
                         lambda: (tmp_path / "serve.log").read_text()[-2000:])
        rng = np.random.default_rng(5)
        for t in (1, 2, 3):
            writer.store_deltas(t, {n: (rng.integers(0, r, 50), rng.integers(0, c, 50),
                                        rng.standard_normal(50).astype(np.float32) * 0.05)
                                    for n, (r, c) in shapes.items()})
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/healthz").json()["step"] != 3:
            assert time.monotonic() < deadline, "the replica did not reach step 3"
            time.sleep(0.05)
        texts = ["a replica of a learning model", "json dumps"]
        r = httpx.post(f"{url}/embed", json={"texts": texts}, timeout=60).json()
        assert r["step"] == 3
        local = AdaptiveEncoder(None, path, follow=True, follow_interval=60)
        assert local.step == 3
        np.testing.assert_allclose(np.asarray(r["embeddings"], np.float32),
                                   local.encode(texts)[0], atol=1e-5)
        local.close()
        a = httpx.post(f"{url}/adapt", json={"pairs": [["a", "b"], ["c", "d"]]}, timeout=60)
        assert a.status_code == 400 and "read-only" in a.json()["error"]
        assert httpx.get(f"{url}/history").json()["following"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_replicas_across_processes_and_a_killed_writer(tmp_path):
    """bench/follow.py --quick: a writer process and two follower processes over a local S3
    server (every reported step bitwise equal to weights_at_time; a late follower catches
    up); then the writer SIGKILLed at 4 random moments of its commits and compactions and
    restarted (no returned commit lost or duplicated, followers never serve a partial step).
    The full run (500 steps, 3 followers, 50 kills) is the benchmark's."""
    pytest.importorskip("s3fs")
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import _s3
    if _s3.moto_server() is None:
        pytest.skip("moto's standalone server (pip install 'moto[server]') is not installed")
    script = Path(__file__).resolve().parents[1] / "bench" / "follow.py"
    out = tmp_path / "follow.json"
    r = subprocess.run([sys.executable, str(script), "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("PASS"), r.stdout + r.stderr
    import json
    res = json.loads(out.read_text())["results"]
    assert res["replicas"]["all_reached"] and not res["replicas"]["hashes"]["mismatches"]
    assert res["replicas"]["hashes"]["checked"] >= 2
    assert res["kills"]["kills"] == 4 and not res["kills"]["problems"]
