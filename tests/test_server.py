"""hyprvdb.server over real HTTP: uvicorn on a loopback socket, clients in threads.

- Hot swap: 16 client threads post /embed in a loop while the main thread commits steps with
  /adapt. Every answer must equal the embedding recomputed offline at the step it reports
  (``encoder.encode(texts, step=step)``, within 1e-5): a request sees one
  whole committed step, never a mix of two. Steps differ by far more than the tolerance
  (checked), the answers cover several steps, and each client sees steps in order.
- Bad requests get a 4xx and ``{"error": message}`` naming the problem; nothing changes.
- /metrics is Prometheus text; /history reflects the commits; /rollback then /embed reports
  the rolled-back step; the history file holds every committed step.

The server and its encoder are shared by the module (the first /adapt compiles the
gradient); every /adapt posts four pairs, so that it is compiled once.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import dense_at, wait_for_healthz  # noqa: E402
from hyprvdb import TemporalGroup  # noqa: E402
from hyprvdb.serve import MiniLM, create_app  # noqa: E402
from hyprvdb.serve._app import MAX_TEXT_CHARS, MAX_TEXTS  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder  # noqa: E402

QUERY_TOKENS, DOC_TOKENS = 16, 32
LR = 0.5  # large steps: consecutive steps' embeddings differ by far more than EMB_TOL
EMB_TOL = 1e-5
CLIENTS = 16
PAIRS = [
    ["os path join", "Join two or more pathname components, inserting '/' as needed."],
    ["json dumps", "Serialize obj to a JSON formatted str."],
    ["math sqrt", "Return the square root of x."],
    ["re compile", "Compile a regular expression pattern, returning a Pattern object."],
]
MORE_PAIRS = [
    ["shutil rmtree", "Recursively delete a directory tree."],
    ["heapq heappush", "Push item onto heap, maintaining the heap invariant."],
    ["base64 b64encode", "Encode the bytes-like object s using Base64 and return a bytes object."],
    ["uuid uuid4", "Generate a random UUID."],
    ["glob glob", "Return a list of paths matching a pathname pattern."],
    ["textwrap dedent", "Remove any common leading whitespace from every line in text."],
]
BATCHES = [
    ["the cat sat on the mat"],
    ["json dumps serializes an object", "Return the square root of x."],
    ["os path join", "a regular expression", "hashing with sha256"],
    ["zip files", "temporary directories", "parse a url", "random numbers", "sorting"],
]


# ----------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("server") / "history.hvh"
    enc = AdaptiveEncoder(MiniLM.load(), path, query_tokens=QUERY_TOKENS,
                          doc_tokens=DOC_TOKENS)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    srv = uvicorn.Server(uvicorn.Config(create_app(enc), log_level="warning",
                                        lifespan="off", timeout_keep_alive=30))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    wait_for_healthz(url, thread.is_alive, 60)
    with httpx.Client(base_url=url, timeout=600) as client:
        yield SimpleNamespace(url=url, enc=enc, path=path, client=client, committed=[])
    srv.should_exit = True
    thread.join(30)
    sock.close()
    enc.close()


def adapt(server, lr: float = LR) -> int:
    # Other pairs each step, so that every step moves the embeddings well past EMB_TOL.
    n = len(server.committed)
    pool = PAIRS + MORE_PAIRS
    pairs = [pool[(4 * n + i) % len(pool)] for i in range(4)]
    r = server.client.post("/adapt", json={"pairs": pairs, "lr": lr})
    assert r.status_code == 200, f"/adapt answered {r.status_code}: {r.text[:500]}"
    body = r.json()
    assert set(body) == {"step", "loss", "changes", "swap_ms"}
    server.committed.append(body["step"])
    return body["step"]


def embed(client, texts) -> tuple[np.ndarray, int]:
    r = client.post("/embed", json={"texts": texts})
    assert r.status_code == 200, f"/embed answered {r.status_code}: {r.text[:500]}"
    body = r.json()
    assert set(body) == {"step", "embeddings"}
    return np.asarray(body["embeddings"], np.float32), body["step"]


def offline(enc, texts, step) -> np.ndarray:
    return enc.encode(texts, step=step)[0]


def metrics(server) -> dict[str, float]:
    r = server.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) hyprvdb_\w+ .+", line), line
            continue
        m = re.fullmatch(r'(hyprvdb_\w+(?:\{endpoint="[^"]+"\})?) (-?[0-9.eE+-]+)', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out[m.group(1)] = float(m.group(2))
    return out


# ----------------------------------------------------------------------------- hot swap
def test_hot_swap_every_answer_is_one_whole_step(server):
    enc = server.enc
    for texts in BATCHES:  # trace the forward pass for each batch shape before timing matters
        enc.encode(texts)
    adapt(server)  # compiles the gradient; the clients run while later steps are committed

    stop = threading.Event()
    answers: list[tuple[int, int, int, np.ndarray]] = []   # (client, batch, step, embeddings)
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 240

    def client_loop(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for i in range(400):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                b = (k + i) % len(BATCHES)
                try:
                    r = c.post("/embed", json={"texts": BATCHES[b]})
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"client {k}: {exc!r}")
                    return
                with lock:
                    if r.status_code != 200:
                        failures.append(f"client {k}: {r.status_code} {r.text[:200]}")
                        return
                    body = r.json()
                    answers.append((k, b, body["step"],
                                    np.asarray(body["embeddings"], np.float32)))

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()

    def answered() -> int:
        with lock:
            return len(answers)

    try:
        steps = []
        for _ in range(3):
            seen = answered()
            while answered() < seen + 2 * CLIENTS and time.monotonic() < deadline:
                time.sleep(0.02)
            steps.append(adapt(server))
        seen = answered()
        while answered() < seen + 2 * CLIENTS and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert not failures, failures[:5]
    assert steps == [steps[0], steps[0] + 1, steps[0] + 2]

    reported = sorted({s for _, _, s, _ in answers})
    assert len(reported) > 1, f"every answer reported step {reported}: no swap was observed"
    assert set(reported) <= set(enc.history.steps)

    # Each client's answers come in step order (its requests are sequential).
    for k in range(CLIENTS):
        mine = [s for c, _, s, _ in answers if c == k]
        assert mine == sorted(mine), f"client {k} saw steps {mine}"

    refs = {(b, s): offline(enc, BATCHES[b], s) for b in range(len(BATCHES)) for s in reported}
    # The check can tell steps apart: neighbouring steps differ by far more than EMB_TOL.
    for b in range(len(BATCHES)):
        for s0, s1 in zip(reported, reported[1:]):
            gap = float(np.max(np.abs(refs[b, s0] - refs[b, s1])))
            assert gap > 100 * EMB_TOL, f"batch {b}: steps {s0} and {s1} differ by {gap:.3g}"
    bad = []
    for k, b, s, emb in answers:
        assert emb.shape == (len(BATCHES[b]), 384)
        err = float(np.max(np.abs(emb - refs[b, s])))
        if err > EMB_TOL:
            bad.append(f"client {k}, batch {b}, step {s}: off by {err:.3g}")
    assert not bad, f"{len(bad)} of {len(answers)} answers are not one whole step: {bad[:5]}"


# ----------------------------------------------------------------------------- persistence
def test_history_file_holds_every_committed_step(server):
    adapt(server)
    g = TemporalGroup.load(server.path)
    try:
        assert set(server.committed) <= set(g.steps)
        assert g.steps == server.enc.history.steps and g.latest == server.enc.step
        for name in ("layer.0.attention.self.query", "layer.5.output.dense"):
            for t in server.committed:
                np.testing.assert_array_equal(
                    dense_at(g[name], t), dense_at(server.enc.history[name], t),
                    err_msg=f"{name} at step {t}: file != memory")
    finally:
        g.close()


# ----------------------------------------------------------------------------- bad requests
BAD_REQUESTS = [
    ("embed: no texts", "/embed", {"json": {}}, 422, ["texts", "required"]),
    ("embed: texts a string", "/embed", {"json": {"texts": "hello"}}, 422, ["texts", "list"]),
    ("embed: texts of ints", "/embed", {"json": {"texts": [1, 2]}}, 422, ["texts", "string"]),
    ("embed: empty list", "/embed", {"json": {"texts": []}}, 422, ["texts", "at least 1"]),
    ("embed: too many texts", "/embed", {"json": {"texts": ["x"] * (MAX_TEXTS + 1)}}, 422,
     ["texts", f"at most {MAX_TEXTS}"]),
    ("embed: blank text", "/embed", {"json": {"texts": ["ok", "  "]}}, 400,
     ["texts[1]", "empty"]),
    ("embed: text too long", "/embed", {"json": {"texts": ["a" * (MAX_TEXT_CHARS + 1)]}}, 400,
     ["texts[0]", str(MAX_TEXT_CHARS)]),
    ("embed: not JSON", "/embed",
     {"content": b"texts=hello", "headers": {"content-type": "application/json"}}, 422,
     ["JSON"]),
    ("embed: truncated JSON", "/embed",
     {"content": b'{"texts": ["a"', "headers": {"content-type": "application/json"}}, 422,
     ["JSON"]),
    ("embed: a list body", "/embed", {"json": ["a"]}, 422, ["body"]),
    ("adapt: one pair", "/adapt", {"json": {"pairs": PAIRS[:1]}}, 422,
     ["pairs", "at least 2"]),
    ("adapt: no pairs field", "/adapt", {"json": {"lr": 0.1}}, 422, ["pairs", "required"]),
    ("adapt: pair of one", "/adapt", {"json": {"pairs": [["q"]] + PAIRS[1:]}}, 422,
     ["pairs.0"]),
    ("adapt: empty positive", "/adapt", {"json": {"pairs": PAIRS[:3] + [["q", ""]]}}, 400,
     ["pairs[3]", "non-empty"]),
    ("adapt: lr 0", "/adapt", {"json": {"pairs": PAIRS, "lr": 0}}, 422, ["lr", "greater than 0"]),
    ("adapt: lr a string", "/adapt", {"json": {"pairs": PAIRS, "lr": "fast"}}, 422, ["lr"]),
    ("rollback: unknown step", "/rollback", {"json": {"step": 10_000}}, 400,
     ["10000", "unknown"]),
    ("rollback: no step", "/rollback", {"json": {}}, 422, ["step", "required"]),
    ("rollback: step a string", "/rollback", {"json": {"step": "two"}}, 422,
     ["step", "integer"]),
    ("rollback: fractional step", "/rollback", {"json": {"step": 1.5}}, 422,
     ["step", "integer"]),
    ("rollback: step true", "/rollback", {"json": {"step": True}}, 422, ["step", "integer"]),
    ("embed: step true", "/embed", {"json": {"texts": ["a"], "step": True}}, 422,
     ["step", "integer"]),
    ("embed: step a string", "/embed", {"json": {"texts": ["a"], "step": "1"}}, 422,
     ["step", "integer"]),
    ("embed: unknown step", "/embed", {"json": {"texts": ["a"], "step": 10_000}}, 400,
     ["10000", "unknown"]),
    ("embed: a lone surrogate", "/embed",
     {"content": b'{"texts": ["a \\ud800 b"]}', "headers": {"content-type": "application/json"}},
     400, ["texts[0]", "not valid unicode"]),
    ("adapt: lr 1e30", "/adapt", {"json": {"pairs": PAIRS, "lr": 1e30}}, 400,
     ["non-finite", "nothing was committed"]),
    ("adapt: lr infinite", "/adapt", {"content": b'{"pairs": [["a", "b"], ["c", "d"]], '
                                                  b'"lr": Infinity}',
                                      "headers": {"content-type": "application/json"}}, 422,
     ["lr"]),
]


@pytest.mark.parametrize("what,path,kwargs,status,words", BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_4xx_and_a_json_error(server, what, path, kwargs, status, words):
    enc = server.enc
    step, steps, size = enc.step, list(enc.history.steps), os.path.getsize(server.path)
    r = server.client.post(path, **kwargs)
    assert r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for w in words:
        assert w.lower() in body["error"].lower(), f"{what}: {w!r} not in {body['error']!r}"
    assert enc.step == step and enc.history.steps == steps
    assert os.path.getsize(server.path) == size


@pytest.mark.parametrize("method,path,status", [("GET", "/no-such-endpoint", 404),
                                                ("GET", "/embed", 405),
                                                ("POST", "/healthz", 405)])
def test_unknown_routes_get_a_json_error(server, method, path, status):
    r = server.client.request(method, path)
    assert r.status_code == status
    assert list(r.json()) == ["error"]


# ----------------------------------------------------------------------------- metrics
def test_metrics_count_requests_and_show_the_step(server):
    before = metrics(server)
    ok, bad = 3, 2
    for _ in range(ok):
        embed(server.client, BATCHES[0])
    assert server.client.post("/embed", json={"texts": []}).status_code == 422
    assert server.client.post("/embed", json={"texts": [" "]}).status_code == 400
    after = metrics(server)
    key = 'hyprvdb_requests_total{endpoint="/embed"}'
    err = 'hyprvdb_request_errors_total{endpoint="/embed"}'
    assert after[key] - before.get(key, 0) == ok + bad
    assert after[err] - before.get(err, 0) == bad
    assert after["hyprvdb_step"] == server.enc.step
    for name in ("hyprvdb_history_changes", "hyprvdb_history_bytes",
                 "hyprvdb_embedded_texts_total", "hyprvdb_adapt_steps_total",
                 "hyprvdb_last_swap_seconds"):
        assert name in after, f"{name} missing from /metrics"
    assert after["hyprvdb_history_changes"] == server.enc.history.change_count()
    assert after["hyprvdb_history_bytes"] == server.enc.history.history_bytes()


# ----------------------------------------------------------------------------- history, rollback
def test_history_reflects_commits(server):
    c = server.client
    h0 = c.get("/history").json()
    t = adapt(server)
    h1 = c.get("/history").json()
    assert h1["latest"] == t == h0["latest"] + 1 == h1["serving_step"]
    assert h1["steps"] == h0["steps"] + [t] == server.enc.history.steps
    assert h1["changes"] > h0["changes"]
    assert h1["base_step"] == 0
    assert os.path.samefile(h1["path"], server.path)
    assert c.get("/healthz").json() == {"status": "ok", "step": t}


def test_rollback_then_embed_reports_the_rolled_back_step(server):
    c = server.client
    while server.enc.step < 2:
        adapt(server)
    latest = server.enc.step
    t = latest - 1
    texts = BATCHES[1]
    expected = offline(server.enc, texts, t)
    r = c.post("/rollback", json={"step": t})
    assert r.status_code == 200 and r.json() == {"step": t}
    emb, step = embed(c, texts)
    assert step == t
    err = float(np.max(np.abs(emb - expected)))
    assert err <= EMB_TOL, f"after /rollback {t}: off by {err:.3g}"
    h = c.get("/history").json()
    assert h["latest"] == t == h["serving_step"] and latest not in h["steps"]
    assert c.get("/healthz").json()["step"] == t
    assert metrics(server)["hyprvdb_step"] == t
    g = TemporalGroup.load(server.path)
    try:
        assert g.latest == t and latest not in g.steps
    finally:
        g.close()
    assert adapt(server) == t + 1
    assert embed(c, texts)[1] == t + 1


def test_embed_a_past_step_leaves_the_live_step(server):
    c = server.client
    while server.enc.step < 2:
        adapt(server)
    live = server.enc.step
    texts = ["time travel while serving"]
    r = c.post("/embed", json={"texts": texts, "step": live - 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["step"] == live - 1
    err = np.max(np.abs(np.asarray(body["embeddings"], np.float32)
                        - offline(server.enc, texts, live - 1)))
    assert err <= EMB_TOL
    assert embed(c, texts)[1] == live == server.enc.step
    assert c.get("/healthz").json() == {"status": "ok", "step": live}
