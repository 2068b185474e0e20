"""Replicas that follow one learning history on object storage, across processes.

A real S3-compatible server (moto's standalone server, ``bench/_s3.py``) runs on 127.0.0.1;
s3fs is the client. The workload is the temporal benchmark's (``bench/temporal.py``): the 36
weight matrices of a 6-layer transformer (10,616,832 weights), a base of 1% of each, then
steps changing 0.05% of every matrix (5,308 changes a step), generated once by the parent and
handed to the children in a ``.npz``.

Two runs:

replicas   One writer process commits ``--steps`` steps to ``s3://bench/<id>``
           (``segment_every`` 64); ``--followers`` follower processes serve them: the first
           starts with the writer, the next ones when half the steps are committed, and the
           last after the writer finished (a late replica: it catches up from the segments
           and the tail). Each follower holds float32 pretrained weights (N(0, 0.02), one
           seed) merged with the adapter (``hyprvdb.Follower``), polls every ``--interval``
           seconds and, after each poll that brought steps, reports the step it serves, the
           SHA-256 of its weights and the time. Checked afterwards: every follower reached
           the last step, and every hash it reported equals the hash of ``merge_from_scratch
           (pre, weights_at_time(step))`` of the writer's history read back from the server.
           Timed: commit latency (writer), lag from a commit's return to a follower serving
           it, and the late follower's catch-up (process start to serving the last step, and
           its ``Follower(...)`` construction alone).
kills      The writer is killed with SIGKILL at ``--kills`` random moments during its commits
           and compactions (``segment_every`` 8, so that compactions are frequent; every
           other kill lands at a random moment of a commit that compacts), each time
           restarted with ``take_over=True``; two followers serve throughout. Checked:
           every step a commit returned for (the writer prints it after ``store_deltas``
           returns) is in the history after the restart, and the restart continues right
           after it or after the one step whose commit was in flight; at the end the
           history holds steps 1..N once each, each step's values equal those of a reference
           history built in memory from the same data, and every hash a follower reported
           matches the reference (so no follower served a partial step).

Run:  python bench/follow.py [--quick] [--steps N] [--followers F] [--kills K]
      [--skip-replicas] [--skip-kills] [--json PATH]
``--quick`` is the bounded form the test suite runs: one layer, 40 steps, 2 followers, 4 kills.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import _s3  # noqa: E402

HERE = os.path.abspath(__file__)
BUCKET = "bench"
PRE_SIGMA = 0.02
SEGMENT_EVERY_KILLS = 8  # frequent compactions in the kills run


# ------------------------------------------------------------------------------ data
def write_data(path: str, seed: int, layers: int, steps: int) -> None:
    """The temporal benchmark's trajectory as flat arrays: per matrix its base, per step the
    global linear indices and float32 deltas."""
    import temporal
    tr = temporal.make_trajectory(seed, layers, steps, set())
    np.savez(path, names=np.array([s[0] for s in tr.shapes]),
             rows=np.array([s[1] for s in tr.shapes]), cols=np.array([s[2] for s in tr.shapes]),
             offsets=tr.offsets,
             base_idx=np.concatenate([b[0] for b in tr.base]),
             base_val=np.concatenate([b[1] for b in tr.base]),
             base_n=np.array([len(b[0]) for b in tr.base]),
             step_g=np.concatenate(tr.g), step_d=np.concatenate(tr.d),
             step_n=np.array([len(g) for g in tr.g]))


class Data:
    def __init__(self, path: str) -> None:
        z = np.load(path)
        self.names = [str(n) for n in z["names"]]
        self.shapes = {n: (int(r), int(c)) for n, r, c in zip(self.names, z["rows"], z["cols"])}
        self.offsets = z["offsets"]
        bounds = np.concatenate([[0], np.cumsum(z["base_n"])])
        self.base = {n: (z["base_idx"][bounds[m]:bounds[m + 1]],
                         z["base_val"][bounds[m]:bounds[m + 1]])
                     for m, n in enumerate(self.names)}
        self.g, self.d = z["step_g"], z["step_d"]
        self.step_at = np.concatenate([[0], np.cumsum(z["step_n"])])
        self.steps = len(z["step_n"])

    def step(self, t: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Step t's changes as ``store_deltas`` takes them."""
        g = self.g[self.step_at[t - 1]:self.step_at[t]]
        d = self.d[self.step_at[t - 1]:self.step_at[t]]
        m = np.searchsorted(self.offsets, g, side="right") - 1
        out = {}
        for k, n in enumerate(self.names):
            sel = m == k
            local = g[sel] - self.offsets[k]
            out[n] = (local // self.shapes[n][1], local % self.shapes[n][1], d[sel])
        return out

    def group(self):  # noqa: ANN201
        """A new in-memory history holding the bases."""
        import hyprvdb
        g = hyprvdb.TemporalGroup(self.shapes)
        for n, (idx, val) in self.base.items():
            cols = self.shapes[n][1]
            g[n].store_base(rows=idx // cols, cols=idx % cols, values=val)
        return g

    def pre(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed + 1)
        return {n: (rng.standard_normal(s) * PRE_SIGMA).astype(np.float32)
                for n, s in self.shapes.items()}


def weights_hash(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).view(np.uint8))
    return h.hexdigest()


def reference_hash(g, data: Data, pre: dict, t: int) -> str:  # noqa: ANN001
    """SHA-256 of ``merge_from_scratch(pre, weights_at_time(t))`` over every matrix, in the
    follower's order."""
    from hyprvdb.serve import merge_from_scratch
    out = []
    for n in data.names:
        r, c, v = g[n].active_weights(t)
        dense = np.zeros(data.shapes[n], np.float32)
        dense[r, c] = v
        out.append(merge_from_scratch(pre[n], dense, 1.0))
    return weights_hash(out)


# ------------------------------------------------------------------------------ children
def child_config(endpoint: str) -> None:
    _s3.configure(endpoint)


def run_writer(a: argparse.Namespace) -> int:
    import hyprvdb
    child_config(a.endpoint)
    data = Data(a.data)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as dropped:
        # A killed commit leaves its record object past the manifest's count: loading drops
        # it with a HistoryRecoveryWarning (counted and reported, not printed).
        warnings.simplefilter("always", hyprvdb.HistoryRecoveryWarning)
        g = hyprvdb.TemporalGroup.load(a.url, take_over=True, segment_every=a.segment_every)
    print(f"loaded {g.latest} {time.perf_counter() - t0:.6f} {len(dropped)}", flush=True)
    for t in range(g.latest + 1, a.until + 1):
        step = data.step(t)
        if a.pace:
            time.sleep(a.pace)  # the learner's own work between steps (its gradient)
        s = time.perf_counter()
        g.store_deltas(t, step)
        # the loose record objects after it (the bench aims some kills at compactions)
        loose = len(g._file._loose)
        print(f"committed {t} {time.time():.6f} {time.perf_counter() - s:.6f} {loose}",
              flush=True)
    g.close()
    print("done", flush=True)
    return 0


def run_follower(a: argparse.Namespace) -> int:
    import jax
    jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp

    import hyprvdb
    child_config(a.endpoint)
    data = Data(a.data)
    pre = data.pre(a.seed)
    started = time.time()
    s = time.perf_counter()
    while True:  # the writer may not have saved the history yet
        try:
            f = hyprvdb.Follower(a.url, {n: jnp.asarray(pre[n]) for n in data.names})
            break
        except FileNotFoundError:
            time.sleep(a.interval)
    built = time.perf_counter() - s
    out = open(a.out, "w")

    def report(at: float) -> None:
        with f.reading():
            h = weights_hash([np.asarray(f.weights[n]) for n in data.names])
        out.write(json.dumps({"step": f.step, "hash": h, "time": at}) + "\n")
        out.flush()

    report(time.time())
    out.write(json.dumps({"started": started, "built_s": built}) + "\n")
    out.flush()
    while f.step < a.until:
        if f.poll():
            report(time.time())  # served from now on (the hash is taken after)
        else:
            time.sleep(a.interval)
    out.write(json.dumps({"reached": f.step, "time": time.time()}) + "\n")
    out.close()
    f.close()
    return 0


# ------------------------------------------------------------------------------ parent
class Run:
    def __init__(self, a: argparse.Namespace, tmp: str, endpoint: str) -> None:
        self.a, self.tmp, self.endpoint = a, tmp, endpoint
        self.data_path = os.path.join(tmp, "data.npz")
        self.env = {**os.environ, **_s3.CREDENTIALS}

    def spawn(self, role: str, url: str, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, HERE, "--role", role, "--url", url, "--endpoint", self.endpoint,
               "--data", self.data_path, "--seed", str(self.a.seed), *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE if role == "writer" else None,
                                bufsize=0, env=self.env)

    def follower(self, url: str, until: int, name: str) -> tuple[subprocess.Popen, str]:
        out = os.path.join(self.tmp, f"{name}.jsonl")
        return self.spawn("follower", url, "--until", str(until), "--out", out,
                          "--interval", str(self.a.interval)), out


class Lines:
    """A child's stdout as lines, waiting at most until a deadline for the next one (select on
    the raw pipe: no buffered lines are left unseen)."""

    def __init__(self, pipe) -> None:  # noqa: ANN001
        self.fd, self.buf, self.eof = pipe.fileno(), b"", False

    def next(self, deadline: float | None = None) -> str | None:
        """The next line; "" at the end of the output; None at the deadline."""
        while b"\n" not in self.buf:
            if self.eof:
                rest, self.buf = self.buf, b""
                return rest.decode()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], timeout)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode() + "\n"


def wait_started(procs: dict) -> None:
    """Wait until every follower has built its Follower (its report file says so)."""
    for name, (p, out) in procs.items():
        while not (os.path.exists(out) and read_reports(out)[1]):
            if p.poll() is not None:
                raise RuntimeError(f"follower {name} failed (exit {p.returncode})")
            time.sleep(0.05)


def new_history(data: Data, segment_every: int) -> str:
    """A history on the server holding the bases (written by this process, which then gives
    up the writer's lease)."""
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    g = data.group()
    g.save(url, segment_every=segment_every)
    g.close()
    return url


def read_reports(path: str) -> tuple[list[dict], dict, dict]:
    served, meta, end = [], {}, {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "hash" in r:
                served.append(r)
            elif "started" in r:
                meta = r
            elif "reached" in r:
                end = r
    return served, meta, end


def check_hashes(reports: dict[str, list[dict]], g, data: Data, pre: dict) -> dict:  # noqa: ANN001
    """Every (step, hash) a follower reported against the reference merge of ``g``."""
    cache: dict[int, str] = {}
    bad, checked = [], 0
    for name, served in reports.items():
        for r in served:
            t = r["step"]
            if t not in cache:
                cache[t] = reference_hash(g, data, pre, t)
            checked += 1
            if r["hash"] != cache[t]:
                bad.append((name, t))
    return {"checked": checked, "distinct_steps": len(cache), "mismatches": bad}


def replicas(run: Run, steps: int) -> dict:
    import hyprvdb
    a = run.a
    data = Data(run.data_path)
    url = new_history(data, a.segment_every)
    followers = {}
    early = max(1, a.followers - 1) if a.followers > 1 else 1
    followers["f0"] = run.follower(url, steps, "f0")
    wait_started(followers)
    writer = run.spawn("writer", url, "--until", str(steps), "--segment-every",
                       str(a.segment_every), "--pace", str(a.pace))
    commits, commit_time, started_mid = [], {}, False
    out = Lines(writer.stdout)
    while line := out.next():
        parts = line.split()
        if parts[0] == "committed":
            t = int(parts[1])
            commit_time[t] = float(parts[2])
            commits.append(float(parts[3]))
            if not started_mid and t >= steps // 2:
                started_mid = True
                for k in range(1, early):
                    followers[f"f{k}"] = run.follower(url, steps, f"f{k}")
    if writer.wait() != 0:
        raise RuntimeError(f"the writer failed (exit {writer.returncode})")
    late_name = f"f{a.followers - 1}"
    if a.followers > 1:
        late_start = time.time()
        followers[late_name] = run.follower(url, steps, late_name)
    for name, (p, _) in followers.items():
        if p.wait(timeout=3600) != 0:
            raise RuntimeError(f"follower {name} failed (exit {p.returncode})")
    reports, lags, reached = {}, [], {}
    for name, (_, out) in followers.items():
        served, meta, end = read_reports(out)
        reports[name] = served
        reached[name] = end.get("reached")
        for r in served:
            if r["step"] in commit_time and name != late_name:
                lags.append(r["time"] - commit_time[r["step"]])
    late = None
    if a.followers > 1:
        served, meta, end = read_reports(followers[late_name][1])
        late = {"catch_up_s": end["time"] - late_start, "follower_built_s": meta["built_s"]}
    back = hyprvdb.TemporalGroup.load(url, mode="r")
    check = check_hashes(reports, back, data, data.pre(a.seed))
    return {"steps": steps, "followers": a.followers, "reached": reached,
            "all_reached": all(v == steps for v in reached.values()),
            "commit_ms": {"median": 1e3 * statistics.median(commits),
                          "p95": 1e3 * float(np.percentile(commits, 95))},
            "lag_ms": {"median": 1e3 * statistics.median(lags) if lags else None,
                       "p95": 1e3 * float(np.percentile(lags, 95)) if lags else None,
                       "n": len(lags)},
            "late": late, "hashes": check,
            "ok": all(v == steps for v in reached.values()) and not check["mismatches"]}


def kills(run: Run, steps: int, n_kills: int) -> dict:
    import hyprvdb
    a = run.a
    data = Data(run.data_path)
    url = new_history(data, SEGMENT_EVERY_KILLS)
    rng = random.Random(a.seed)
    followers = {f"k{k}": run.follower(url, steps, f"k{k}") for k in range(2)}
    wait_started(followers)
    returned: list[int] = []
    problems, lives, commit_s = [], [], None
    killed = in_compaction = 0
    while True:
        w = run.spawn("writer", url, "--until", str(steps), "--segment-every",
                      str(SEGMENT_EVERY_KILLS))
        out = Lines(w.stdout)
        first = (out.next() or "").split()
        if not first or first[0] != "loaded":
            raise RuntimeError(f"the writer did not load the history ({first})")
        latest = int(first[1])
        top = max(returned, default=0)
        if latest < top:
            problems.append(f"restart {len(lives)}: history ends at {latest}, but the commit "
                            f"of step {top} had returned")
        if latest > top + 1:
            problems.append(f"restart {len(lives)}: history ends at {latest}, after {top}, "
                            f"the last returned commit, and one in flight")
        # The moment. Odd kills: after a random number of this life's commits returned, a
        # random part of one commit's time (or a little more: into the next). Even kills:
        # inside the next commit that compacts (its record, manifest, segment, manifest and
        # removals take about three commits' time).
        remaining = steps - latest
        after, compacting = None, killed % 2 == 0
        if killed < n_kills and remaining > 1:
            per_life = max(1, remaining // (n_kills - killed + 1))
            after = rng.randint(0, min(remaining - 1, 2 * per_life - 1))
        life: list[int] = []
        deadline = None
        if after == 0 and not compacting:
            deadline = time.monotonic() + rng.uniform(0, 1.5 * (commit_s or 0.01))
        aimed = False
        done = False
        while True:
            line = out.next(deadline)
            if line is None:  # the moment: kill it, mid-commit or mid-compaction or between
                w.send_signal(signal.SIGKILL)
                killed += 1
                in_compaction += aimed
                while (line := out.next()):  # what it printed before the kill landed
                    if line.startswith("committed"):
                        life.append(int(line.split()[1]))
                break
            if not line:
                break
            parts = line.split()
            if parts[0] == "committed":
                life.append(int(parts[1]))
                took = float(parts[3])
                commit_s = took if commit_s is None else 0.8 * commit_s + 0.2 * took
                loose = int(parts[4])
                if after is not None and deadline is None:  # no moment chosen yet
                    if not compacting and len(life) >= after:
                        deadline = time.monotonic() + rng.uniform(0, 1.5 * commit_s)
                    elif compacting and loose == SEGMENT_EVERY_KILLS - 1:
                        deadline = time.monotonic() + rng.uniform(0, 3 * commit_s)
                        aimed = True
            elif parts[0] == "done":
                done = True
        w.wait()
        returned += life
        lives.append({"loaded": latest, "commits": len(life), "killed": not done,
                      "dropped_records": int(first[3])})
        if done:
            break
    for name, (p, _) in followers.items():
        if p.wait(timeout=3600) != 0:
            raise RuntimeError(f"follower {name} failed (exit {p.returncode})")
    back = hyprvdb.TemporalGroup.load(url, mode="r")
    ref = data.group()
    for t in range(1, steps + 1):
        ref.store_deltas(t, data.step(t))
    if back.steps != ref.steps:
        problems.append(f"the history's steps {back.steps[:5]}... are not 0..{steps} once each")
    differing = []
    for t in range(1, steps + 1):
        for n, (r, c, _) in data.step(t).items():
            if not np.array_equal(back[n].get_weights(r, c, t), ref[n].get_weights(r, c, t)):
                differing.append((t, n))
                break
    if differing:
        problems.append(f"{len(differing)} steps differ from the reference, first "
                        f"{differing[0]}")
    if sorted(returned) != sorted(set(returned)):
        problems.append("a step was reported committed twice")
    reports = {name: read_reports(out)[0] for name, (_, out) in followers.items()}
    check = check_hashes(reports, ref, data, data.pre(a.seed))
    if check["mismatches"]:
        problems.append(f"followers served {len(check['mismatches'])} steps whose weights are "
                        f"not the reference's, first {check['mismatches'][0]}")
    return {"steps": steps, "kills": killed, "kills_aimed_at_a_compacting_commit": in_compaction,
            "restarts": len(lives) - 1,
            "returned_commits": len(returned), "hashes": check, "problems": problems,
            "restarts_dropping_a_record": sum(life["dropped_records"] > 0 for life in lives),
            "lives": lives,
            "ok": not problems and killed == n_kills}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("writer", "follower"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--until", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="the bounded form (CI)")
    ap.add_argument("--steps", type=int, default=None, help="committed steps (default 500)")
    ap.add_argument("--followers", type=int, default=None, help="follower processes (3)")
    ap.add_argument("--kills", type=int, default=None, help="SIGKILLs of the writer (50)")
    ap.add_argument("--segment-every", type=int, default=64)
    ap.add_argument("--interval", type=float, default=0.02, help="followers' poll interval")
    ap.add_argument("--pace", type=float, default=None,
                    help="seconds the writer waits before each commit in the replicas run, "
                         "standing for the learner's gradient step (default 0.1; 0.05 with "
                         "--quick); the kills run commits back to back")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-replicas", action="store_true")
    ap.add_argument("--skip-kills", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.role == "writer":
        return run_writer(a)
    if a.role == "follower":
        return run_follower(a)
    layers = 1 if a.quick else 6
    steps = a.steps or (40 if a.quick else 500)
    a.followers = a.followers or (2 if a.quick else 3)
    n_kills = a.kills if a.kills is not None else (4 if a.quick else 50)
    if a.pace is None:
        a.pace = 0.05 if a.quick else 0.1
    if a.pace < 0:
        ap.error(f"--pace must be >= 0, got {a.pace}")
    if a.followers < 1:
        ap.error(f"--followers must be >= 1, got {a.followers}")
    with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "moto.log"), "wb") as log:
        try:
            proc, endpoint = _s3.start(log)
        except RuntimeError as exc:
            print(f"skipped: {exc}")
            return 0
        saved = _s3.configure(endpoint)
        try:
            _s3.make_bucket(BUCKET)
            run = Run(a, tmp, endpoint)
            print(f"data: {layers} layer(s), {steps} steps ...", flush=True)
            write_data(run.data_path, a.seed, layers, steps)
            res: dict = {"layers": layers}
            if not a.skip_replicas:
                res["replicas"] = r = replicas(run, steps)
                print(f"replicas: {r['followers']} followers reached {r['reached']}; "
                      f"{r['hashes']['checked']} reported steps checked bitwise against "
                      f"weights_at_time ({r['hashes']['distinct_steps']} distinct), mismatches: "
                      f"{len(r['hashes']['mismatches'])}")
                print(f"  commit latency median {r['commit_ms']['median']:.1f} ms, p95 "
                      f"{r['commit_ms']['p95']:.1f} ms; commit -> served median "
                      f"{r['lag_ms']['median']:.0f} ms, p95 {r['lag_ms']['p95']:.0f} ms "
                      f"({r['lag_ms']['n']} samples)")
                if r["late"]:
                    print(f"  late follower: serving step {steps} {r['late']['catch_up_s']:.2f}"
                          f" s after its process started (Follower(...) itself "
                          f"{r['late']['follower_built_s']:.2f} s)")
            if not a.skip_kills:
                res["kills"] = k = kills(run, steps, n_kills)
                print(f"kills: {k['kills']} SIGKILLs ("
                      f"{k['kills_aimed_at_a_compacting_commit']} inside a commit that "
                      f"compacts), {k['restarts']} restarts "
                      f"({k['restarts_dropping_a_record']} dropped the record object of a "
                      f"commit killed before its manifest), {k['returned_commits']} returned "
                      f"commits; followers' {k['hashes']['checked']} reported steps checked; "
                      f"problems: {k['problems'] or 'none'}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            _s3.restore(saved)
    if a.json:
        C.write_json(a.json, "follow", res)
    ok = all(res[k]["ok"] for k in ("replicas", "kills") if k in res)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
