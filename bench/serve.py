"""Serving all-MiniLM-L6-v2 with a learning sparse adapter: what the live adapter costs per
request, how soon a committed step is served, memory during a swap, and throughput under
concurrent clients.

Model: the embedded all-MiniLM-L6-v2 (hyprvdb.serve.MiniLM, JAX on its default backend), 36
adapted matrices; ``--random-weights``: MiniLM-L6's architecture with seeded random weights
and a hashing tokenizer (``MiniLM.random``: for machines without the model package, such as
the GPU machines here; every row below is printed the same way). Texts: the first paragraphs
of standard-library docstrings (hyprvdb.serve.doc_pairs, seeded).

The AdaptiveEncoder serves the live adapter merged into the weights: a commit rewrites, in
place, the weights its step changed (W = W_pre + S_t, from the pretrained value and the
history's sum). Peers, in the same run: the plain model (no adapter); a dense merge of the
whole adapter into W after every step (what a user without hyprvdb does).

(a) overhead    ``encode`` of 32 texts and of 1 text: the AdaptiveEncoder at its live step
                (an adapter of 1% of every matrix, committed as one step) against the plain
                model's ``encode``, calls interleaved so that load drift hits both alike;
                medians of wall and CPU time. Target: <= 1.03x on the CPU, <= 1.02x on a GPU.
                Info rows: a past step served through the window correction (the live
                weights plus ``S_t - S_live`` as sparse deltas, ``impl="auto"``), and the
                unmerged path (the 1% adapter as per-layer sparse deltas on the plain
                weights: what a per-request adapter costs).
(b) commit ->    ``AdaptiveEncoder.adapt`` on 8 (query, docstring) pairs per step. For each
    first request step: ``swap`` = from ``store_deltas`` returning (the step is durable) to
                the new weights written (``swap_ms``, measured inside adapt), then the first
                ``encode`` of one text on the new step. commit -> first request = swap + that
                encode. Target: <= 5 ms on the CPU, <= 2 ms on a GPU (median over the steps).
                Also: the dense-merge peer's commit -> first request (W_pre + dense S_t for
                the 36 matrices, jitted, then the first encode), a steady encode, adapt end to
                end. Memory: the process's resident memory (CPU) or JAX's device memory in use
                (GPU), sampled every millisecond during commits of steps of the same size
                (``AdaptiveEncoder.commit``: the swap without the gradient), against the plain
                model's parameter bytes: (model + the most a swap added) / model. Target
                <= 1.1x.
(c) throughput  16 client threads, each calling ``encode`` on batches of 4 texts for a fixed
                time: the AdaptiveEncoder (the requests' forward passes run concurrently under
                the weights' lock) against the dense-merge peer (16 threads calling one jitted
                plain forward on the merged weights), in interleaved rounds. Twice: with no
                commits (the same forward pass on the same weights: parity is expected), and
                while the adapter keeps learning, one step (of adapt's size) committed every
                second: ours through ``AdaptiveEncoder.commit``, the peer by storing the step
                and merging W_pre + dense S_t again. texts/s, median of rounds. Target: >= the
                peer while learning.

(d) mixed       One batch of 32 texts whose texts use 8 different adapters of 1% (served on
    batches     the pretrained weights, ``encode(texts, adapters=[...])``), and separately 8
                different past steps (a 1% base at step 1, then steps of adapt's size, 0.05%;
                ``encode(texts, steps=[...])``), against the plain model's encode of the same
                32 texts, interleaved, medians. Checked: every text's embedding against it
                served alone. Target: <= 1.5x on the CPU, <= 1.3x on a GPU.

Run:  python bench/serve.py [--seed N] [--repeats N] [--seconds S] [--random-weights]
                           [--sections abcd] [--json PATH] [--plot PATH]
The last line printed is a one-line summary. ``--plot PATH`` draws the three tables as bar
charts into a PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import hyprvdb.jax as hj  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder, MiniLM, doc_pairs  # noqa: E402

DENSITY = 0.01          # the (a)/(c) adapter: 1% of every matrix
DELTA_SIGMA = 0.01
BATCH = 32
CLIENTS = 16
CLIENT_BATCH = 4
ADAPT_PAIRS = 8
ADAPT_STEPS = 8
TARGETS = {"cpu": {"overhead": 1.03, "commit_s": 0.005, "mixed": 1.5},
           "gpu": {"overhead": 1.02, "commit_s": 0.002, "mixed": 1.3}}
MIXED = 8               # (d): adapters, or past steps, in one batch
STEP_DENSITY = 5e-4     # (d): a past step of adapt's size (update_fraction)
MEMORY_TARGET = 1.1


def backend_kind() -> str:
    return "cpu" if jax.default_backend() == "cpu" else "gpu"


# ------------------------------------------------------------------------------ helpers
def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median wall and CPU seconds of each ``fn``, the contenders called in turn within
    every round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0 = time.process_time()
            t = C.time_call(fn, repeats=1, warmup=0)
            cpu[k].append(time.process_time() - c0)
            wall[k].append(t["median_s"])
    return {k: {"median_s": C.median(wall[k]), "min_s": min(wall[k]), "max_s": max(wall[k]),
                "cpu_median_s": C.median(cpu[k])} for k in fns}


def load_model(random_weights: bool, seed: int) -> MiniLM:
    return MiniLM.random(seed) if random_weights else MiniLM.load()


def random_step(shapes: dict, rng: np.random.Generator, density: float = DENSITY) -> dict:
    """A 1%-dense adapter for every matrix, as one step for ``store_deltas``."""
    out = {}
    for name, (r, c) in shapes.items():
        n = int(round(density * r * c))
        flat = np.sort(rng.choice(r * c, n, replace=False))
        out[name] = (flat // c, flat % c, rng.normal(0, DELTA_SIGMA, n).astype(np.float32))
    return out


def params_bytes(model: MiniLM) -> int:
    return int(sum(v.size * v.dtype.itemsize for v in model.params.values()))


def maxdiff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


class MemorySampler:
    """Samples memory in use every millisecond while active: the process's resident memory on
    the CPU, JAX's device memory on a GPU."""

    def __init__(self) -> None:
        dev = jax.devices()[0]
        stats = dev.memory_stats() if jax.default_backend() != "cpu" else None
        self.what = "device bytes in use" if stats else "process RSS"
        self._read = (lambda: dev.memory_stats()["bytes_in_use"]) if stats else C.rss_bytes
        self.peaks: list[int] = []
        self._on = threading.Event()
        self._stop = threading.Event()
        self._peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._on.is_set():
                self._peak = max(self._peak, self._read())
            time.sleep(0.001)

    def __enter__(self) -> MemorySampler:
        self.before = self._read()
        self._peak = self.before
        self._on.set()
        return self

    def __exit__(self, *exc) -> None:
        self._on.clear()
        time.sleep(0.002)
        self.peaks.append(max(self._peak, self._read()) - self.before)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class DenseMergePeer:
    """What a user without hyprvdb does per step: the adapter's whole state at the new step,
    merged densely into the pretrained weights (``W_pre + dense(S_t)``, one jitted program,
    the state passed as fixed-capacity sparse deltas so that steps do not recompile it)."""

    def __init__(self, model: MiniLM, shapes: dict) -> None:
        self.model, self.shapes = model, shapes
        self.pre = {n: jnp.array(model.weight(n)) for n in shapes}
        self.capacity = {n: max(256, int(0.05 * r * c)) for n, (r, c) in shapes.items()}
        self.params = dict(model.params)
        self._fwd = jax.jit(model.embed_fn())

        @jax.jit
        def merge(params, pre, deltas):
            p = dict(params)
            for n, d in deltas.items():
                p[f"encoder.{n}.weight"] = pre[n] + hj.to_dense(d)
            return p
        self._merge = merge

    def merge_from(self, history) -> None:
        deltas = {}
        for n, shape in self.shapes.items():
            r, c, v = history[n].active_weights()
            while len(v) > self.capacity[n]:
                self.capacity[n] *= 2
            deltas[n] = hj.SparseDelta.from_coo(r, c, v, shape, capacity=self.capacity[n])
        self.params = jax.block_until_ready(self._merge(self.params, self.pre, deltas))

    def encode(self, texts: list[str]) -> np.ndarray:
        ids, mask = self.model.tokenize(texts)
        return np.asarray(self._fwd(self.params, {}, jnp.asarray(ids), jnp.asarray(mask),
                                    jnp.float32(1.0)))


# ------------------------------------------------------------------------------ (a)
def bench_overhead(random_weights: bool, seed: int, texts: list[str], repeats: int,
                   rng: np.random.Generator) -> dict:
    plain = load_model(random_weights, seed)
    enc = AdaptiveEncoder(load_model(random_weights, seed))
    step = random_step(enc.shapes, rng)
    enc.history.store_deltas(1, step)
    enc.history.store_deltas(2, random_step(enc.shapes, rng))
    enc.rollback(2)  # serve step 2: every adapter weight written into the live weights
    deltas = {n: hj.SparseDelta.from_coo(*step[n], enc.shapes[n]) for n in enc.shapes}
    one = jnp.float32(1.0)
    unmerged = jax.jit(plain.embed_fn())
    out = {"impl_default": hj.implementation("auto"), "kernel_path": hj.kernel_path(),
           "target": TARGETS[backend_kind()]["overhead"], "batches": []}
    for batch in (BATCH, 1):
        tx = texts[:batch]
        ids, mask = plain.tokenize(tx)
        ids, mask = jnp.asarray(ids), jnp.asarray(mask)
        fns = {"plain": lambda: plain.encode(tx),
               "live": lambda: enc.encode(tx)[0],
               "past": lambda: enc.encode(tx, step=1)[0],
               "unmerged": lambda: np.asarray(unmerged(plain.params, deltas, ids, mask, one))}
        t0 = time.perf_counter()
        for fn in fns.values():
            fn()
        compile_s = time.perf_counter() - t0
        times = interleaved(fns, repeats if batch > 1 else 4 * repeats)
        out["batches"].append({
            "batch": batch, "tokens": int(ids.shape[1]), "compile_s": compile_s,
            "times": times, "ratio_live": times["live"]["median_s"] / times["plain"]["median_s"],
            "ratio_past": times["past"]["median_s"] / times["plain"]["median_s"],
            "ratio_unmerged": times["unmerged"]["median_s"] / times["plain"]["median_s"],
            # the past step through its correction vs step 1 served live after a rollback
            "maxdiff_unmerged_vs_past": maxdiff(fns["unmerged"](), fns["past"]())})
    enc.close()
    return out


def print_overhead(res: dict) -> None:
    rows = []
    for b in res["batches"]:
        t = b["times"]
        for k, label in (("plain", "plain model"),
                         ("live", "AdaptiveEncoder, live step (adapter merged)"),
                         ("past", f"past step (window correction, {res['impl_default']})"),
                         ("unmerged", f"1% adapter unmerged (per-layer deltas, "
                                      f"{res['impl_default']})")):
            ratio = "" if k == "plain" else f"{t[k]['median_s'] / t['plain']['median_s']:.3f}x"
            target = ""
            if k == "live":
                target = f"<= {res['target']}x {C.verdict(b['ratio_live'] <= res['target'])}"
            rows.append([b["batch"], b["tokens"], label, C.fmt_time(t[k]["median_s"]),
                         C.fmt_time(t[k]["cpu_median_s"]), ratio, target])
    C.print_table(["batch", "tokens", "encode", "wall", "cpu", "vs plain", "target"], rows,
                  title="(a) serving a 1%-dense adapter on all 36 linear layers (median)")
    for b in res["batches"]:
        print(f"    batch {b['batch']}: max |emb| difference, step 1 through the correction vs "
              f"the same adapter unmerged {b['maxdiff_unmerged_vs_past']:.2g}; compile "
              f"{b['compile_s']:.1f} s")
    print(f"    delta product of the info rows: {res['kernel_path']}")


# ------------------------------------------------------------------------------ (d)
def bench_mixed(random_weights: bool, seed: int, texts: list[str], repeats: int,
                rng: np.random.Generator) -> dict:
    """A batch of BATCH texts mixing MIXED adapters (1% each, served on the pretrained
    weights) or MIXED past steps (a 1% base committed at step 1, then steps of adapt's size,
    0.05%; the texts at steps 1..MIXED while the live step is MIXED + 1), one forward pass
    each, against the plain model's encode of the same texts."""
    plain = load_model(random_weights, seed)
    enc = AdaptiveEncoder(load_model(random_weights, seed))
    adapters = {f"a{k}": random_step(enc.shapes, rng) for k in range(MIXED)}
    for name, w in adapters.items():
        enc.add_adapter(name, w)
    names = list(adapters)
    enc.history.store_deltas(1, random_step(enc.shapes, rng))
    for t in range(2, MIXED + 2):
        enc.history.store_deltas(t, random_step(enc.shapes, rng, density=STEP_DENSITY))
    enc.rollback(MIXED + 1)  # serve the newest step
    tx = texts[:BATCH]
    per_text_adapter = [names[i % MIXED] for i in range(BATCH)]
    per_text_step = [1 + i % MIXED for i in range(BATCH)]
    fns = {"plain": lambda: plain.encode(tx),
           "adapters": lambda: enc.encode(tx, adapters=per_text_adapter)[0],
           "steps": lambda: enc.encode(tx, steps=per_text_step)[0]}
    t0 = time.perf_counter()
    got = {k: fn() for k, fn in fns.items()}
    compile_s = time.perf_counter() - t0
    # each text served alone: its step through its window correction; its adapter as a delta
    # on the plain model
    alone_steps = np.concatenate([enc.encode([x], step=t)[0] for x, t in zip(tx, per_text_step)])
    deltas = {n: {layer: hj.SparseDelta.from_coo(*w, enc.shapes[layer])
                  for layer, w in adapters[n].items()} for n in names}
    alone_adapters = np.concatenate([plain.encode([x], deltas[n])
                                     for x, n in zip(tx, per_text_adapter)])
    times = interleaved(fns, repeats)
    enc.close()
    return {"batch": BATCH, "mixed": MIXED, "times": times, "compile_s": compile_s,
            "ratio_adapters": times["adapters"]["median_s"] / times["plain"]["median_s"],
            "ratio_steps": times["steps"]["median_s"] / times["plain"]["median_s"],
            "maxdiff_adapters": maxdiff(got["adapters"], alone_adapters),
            "maxdiff_steps": maxdiff(got["steps"], alone_steps),
            "target": TARGETS[backend_kind()]["mixed"], "kernel_path": hj.kernel_path()}


def print_mixed(res: dict) -> None:
    t = res["times"]
    rows = []
    for k, label in (("plain", f"plain model, {res['batch']} texts"),
                     ("adapters", f"{res['mixed']} adapters of 1%, one batch"),
                     ("steps", f"{res['mixed']} past steps, one batch")):
        ratio = "" if k == "plain" else f"{t[k]['median_s'] / t['plain']['median_s']:.3f}x"
        target = "" if k == "plain" else \
            f"<= {res['target']}x {C.verdict(res['ratio_' + k] <= res['target'])}"
        diff = "" if k == "plain" else f"{res['maxdiff_' + k]:.2g}"
        rows.append([label, C.fmt_time(t[k]["median_s"]), C.fmt_time(t[k]["cpu_median_s"]),
                     ratio, target, diff])
    C.print_table(["encode", "wall", "cpu", "vs plain", "target", "max |emb - alone|"], rows,
                  title="(d) one batch mixing adapters or past steps (median)")
    print(f"    each text's delta added in one pass per layer ({res['kernel_path']}); "
          f"'alone': each text served by itself (its adapter as a delta on the plain model, "
          f"its step through its window correction); compile {res['compile_s']:.1f} s")


# ------------------------------------------------------------------------------ (b)
def bench_commit(random_weights: bool, seed: int, pairs: list, query: str,
                 steps: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="hyprvdb-bench-serve-")
    model = load_model(random_weights, seed)
    model_bytes = params_bytes(model)
    enc = AdaptiveEncoder(model, os.path.join(tmp, "history.hvh"), query_tokens=16,
                          doc_tokens=64)
    peer = DenseMergePeer(load_model(random_weights, seed), enc.shapes)

    enc.encode([query])
    peer.merge_from(enc.history)
    peer.encode([query])
    t0, c0 = time.perf_counter(), time.process_time()
    enc.adapt(pairs[:ADAPT_PAIRS])  # compiles the gradient and the update
    first_adapt = (time.perf_counter() - t0, time.process_time() - c0)
    enc.adapt(pairs[ADAPT_PAIRS:2 * ADAPT_PAIRS])
    enc.encode([query])
    per_step = []
    for i in range(steps):
        batch = pairs[(i + 2) * ADAPT_PAIRS:(i + 3) * ADAPT_PAIRS]
        t0, c0 = time.perf_counter(), time.process_time()
        out = enc.adapt(batch)
        t1, c1 = time.perf_counter(), time.process_time()
        _, step = enc.encode([query])           # the first request on the new step
        t2 = time.perf_counter()
        assert step == out["step"], (step, out["step"])
        # the dense-merge peer: W_pre + dense S_t for the 36 matrices, then the first request
        t3 = time.perf_counter()
        peer.merge_from(enc.history)
        t4 = time.perf_counter()
        peer.encode([query])
        t5 = time.perf_counter()
        per_step.append({"step": out["step"], "adapt_s": t1 - t0, "adapt_cpu_s": c1 - c0,
                         "swap_s": out["swap_ms"] / 1e3, "first_encode_s": t2 - t1,
                         "commit_to_first_s": out["swap_ms"] / 1e3 + (t2 - t1),
                         "peer_merge_s": t4 - t3, "peer_first_encode_s": t5 - t4,
                         "peer_commit_to_first_s": t5 - t3})
    # Memory of the swap alone: steps of the same size through commit() (no gradient), after
    # one unsampled commit that compiles what commit() runs.
    sampler = MemorySampler()
    rng = np.random.default_rng(len(per_step))
    for i in range(steps + 1):
        update = {}
        for n, (r, c) in enc.shapes.items():
            k = max(1, int(enc.update_fraction * r * c))
            flat = np.sort(rng.choice(r * c, k, replace=False))
            update[n] = (flat // c, flat % c, rng.normal(0, 1e-3, k).astype(np.float32))
        if i == 0:
            enc.commit(update)
            continue
        with sampler:
            enc.commit(update)
    sampler.close()
    steady = C.time_call(lambda: enc.encode([query]), repeats=21, warmup=2)["median_s"]
    enc.close()
    med = {k: C.median([s[k] for s in per_step]) for k in per_step[0] if k != "step"}
    swap_extra = max(sampler.peaks)
    return {"first_adapt_s": first_adapt[0], "first_adapt_cpu_s": first_adapt[1],
            "steps": per_step, "median": med, "steady_encode_s": steady,
            "pairs_per_step": ADAPT_PAIRS, "changes_per_step": out["changes"],
            "target_s": TARGETS[backend_kind()]["commit_s"],
            "memory": {"what": sampler.what, "model_bytes": model_bytes,
                       "swap_extra_bytes_max": swap_extra,
                       "swap_extra_bytes": sampler.peaks,
                       "ratio": (model_bytes + max(swap_extra, 0)) / model_bytes}}


def print_commit(res: dict) -> None:
    m = res["median"]
    mx = {k: max(s[k] for s in res["steps"]) for k in m}
    ok = m["commit_to_first_s"] <= res["target_s"]
    rows = [
        ["swap (store_deltas returned -> new weights written)", C.fmt_time(m["swap_s"]),
         C.fmt_time(mx["swap_s"]), ""],
        ["first encode of 1 text on the new step", C.fmt_time(m["first_encode_s"]),
         C.fmt_time(mx["first_encode_s"]), ""],
        ["commit -> first request served", C.fmt_time(m["commit_to_first_s"]),
         C.fmt_time(mx["commit_to_first_s"]),
         f"<= {C.fmt_time(res['target_s'])} {C.verdict(ok)}"],
        ["steady encode of the same text", C.fmt_time(res["steady_encode_s"]), "", ""],
        [f"adapt() end to end ({res['pairs_per_step']} pairs)", C.fmt_time(m["adapt_s"]),
         C.fmt_time(mx["adapt_s"]), f"cpu {C.fmt_time(m['adapt_cpu_s'])}"],
        ["peer: dense merge of the 36 matrices", C.fmt_time(m["peer_merge_s"]),
         C.fmt_time(mx["peer_merge_s"]), ""],
        ["peer: commit -> first request served", C.fmt_time(m["peer_commit_to_first_s"]),
         C.fmt_time(mx["peer_commit_to_first_s"]), ""],
    ]
    C.print_table(["what", "median", "max", "note"], rows,
                  title=f"(b) commit -> first request, {len(res['steps'])} steps of "
                        f"{res['changes_per_step']:,} changes each")
    mem = res["memory"]
    print(f"    memory during the swaps ({mem['what']}, sampled every ms): the most a swap added "
          f"{C.fmt_bytes(mem['swap_extra_bytes_max'])} on a model of "
          f"{C.fmt_bytes(mem['model_bytes'])} -> {mem['ratio']:.3f}x the plain model "
          f"[<= {MEMORY_TARGET}x {C.verdict(mem['ratio'] <= MEMORY_TARGET)}]")
    print(f"    first adapt() (compiles the gradient and the update): "
          f"{res['first_adapt_s']:.1f} s wall, {res['first_adapt_cpu_s']:.1f} s cpu")


# ------------------------------------------------------------------------------ (c)
def run_clients(encode, batches: list[list[str]], seconds: float, commit=None) -> dict:
    """``CLIENTS`` threads calling ``encode`` for ``seconds``; with ``commit``, the main thread
    calls it once a second meanwhile (the adapter learning while it serves)."""
    counts = [0] * CLIENTS
    errors: list[str] = []
    start = threading.Barrier(CLIENTS + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        start.wait()
        i = k
        try:
            while time.perf_counter() < stop_at[0]:
                b = batches[i % len(batches)]
                encode(b)
                counts[k] += len(b)
                i += 1
        except Exception as exc:  # noqa: BLE001 (reported, not swallowed)
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    c0, t0 = time.process_time(), time.perf_counter()
    start.wait()
    commits = 0
    if commit is not None:
        while time.perf_counter() < stop_at[0] - 1.0:
            time.sleep(max(0.0, t0 + commits + 1.0 - time.perf_counter()))
            commit()
            commits += 1
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if errors:
        raise RuntimeError(f"client errors: {errors[:3]}")
    return {"texts": sum(counts), "wall_s": wall, "cpu_s": cpu, "commits": commits,
            "texts_per_s": sum(counts) / wall}


def bench_throughput(random_weights: bool, seed: int, texts: list[str], seconds: float,
                     rng: np.random.Generator, rounds: int = 3) -> dict:
    enc = AdaptiveEncoder(load_model(random_weights, seed))
    enc.history.store_deltas(1, random_step(enc.shapes, rng))
    enc.rollback(1)
    peer = DenseMergePeer(load_model(random_weights, seed), enc.shapes)
    peer.merge_from(enc.history)  # the very same merged weights
    theirs = peer.encode

    def their_commit(update):
        enc.history.store_deltas(enc.history.latest + 1, update)
        peer.merge_from(enc.history)

    ours = lambda b: enc.encode(b)[0]  # noqa: E731
    batches = [texts[i:i + CLIENT_BATCH] for i in range(0, 8 * CLIENT_BATCH, CLIENT_BATCH)]
    diff = 0.0
    for b in batches:  # compile every shape, and check both serve the same embeddings
        diff = max(diff, maxdiff(ours(b), theirs(b)))
    step_size = {n: max(1, int(enc.update_fraction * r * c)) for n, (r, c) in enc.shapes.items()}

    def online_step():
        update = {}
        for n, (r, c) in enc.shapes.items():
            flat = np.sort(rng.choice(r * c, step_size[n], replace=False))
            update[n] = (flat // c, flat % c, rng.normal(0, 1e-3, len(flat)).astype(np.float32))
        return update

    enc.commit(online_step())  # compile the commit and the dense merge outside the timing
    their_commit(online_step())
    out = {"clients": CLIENTS, "batch": CLIENT_BATCH, "seconds": seconds, "rounds": rounds,
           "maxdiff": diff, "static": [], "online": []}
    for _ in range(rounds):  # interleaved rounds: load drift hits both servers alike
        out["static"].append({"adaptive": run_clients(ours, batches, seconds),
                              "merged": run_clients(theirs, batches, seconds)})
    for _ in range(rounds):  # while the adapter keeps learning: one step per second
        out["online"].append({
            "adaptive": run_clients(ours, batches, seconds, commit=lambda: enc.commit(
                online_step())),
            "merged": run_clients(theirs, batches, seconds,
                                  commit=lambda: their_commit(online_step()))})
    for kind in ("static", "online"):
        out[f"ratio_{kind}"] = C.median([r["adaptive"]["texts_per_s"] / r["merged"]["texts_per_s"]
                                         for r in out[kind]])
    enc.close()
    return out


def print_throughput(res: dict) -> None:
    rows = []
    for kind, what in (("static", "no commits"), ("online", "a commit every second")):
        for k, label in (("adaptive", "AdaptiveEncoder (live adapter merged)"),
                         ("merged", "peer: plain forward of the densely merged W")):
            tps = [r[k]["texts_per_s"] for r in res[kind]]
            commits = sum(r[k].get("commits", 0) for r in res[kind])
            rows.append([what, label, f"{C.median(tps):.1f}",
                         " ".join(f"{x:.0f}" for x in tps), commits or ""])
    C.print_table(["while", "server", "texts/s (median)", "rounds", "commits"], rows,
                  title=f"(c) throughput: {res['clients']} client threads, batches of "
                        f"{res['batch']} texts, {res['rounds']} interleaved rounds of "
                        f"{res['seconds']:.0f} s")
    print(f"    adaptive / merged, median of rounds: no commits {res['ratio_static']:.3f}x "
          f"(the same forward pass on the same weights: parity is the expectation); a commit "
          f"every second {res['ratio_online']:.3f}x [>= 1.00x "
          f"{C.verdict(res['ratio_online'] >= 1.0)}]; max |emb| difference between the two "
          f"{res['maxdiff']:.2g}")


# ------------------------------------------------------------------------------ charts
def plot(path: str, ov: dict, cm: dict, tp: dict, title: str) -> None:
    """The three tables as bar charts: (a) encode times against the plain model, (b) commit ->
    first request against the dense-merge peer, (c) throughput against that peer."""
    ours, peer = "hyprvdb AdaptiveEncoder", "peer: dense merge of W"
    encode = {f"batch {b['batch']}": {
        "plain model": b["times"]["plain"]["median_s"] * 1e3,
        ours: b["times"]["live"]["median_s"] * 1e3,
        "hyprvdb, a past step": b["times"]["past"]["median_s"] * 1e3,
        "hyprvdb, the adapter unmerged": b["times"]["unmerged"]["median_s"] * 1e3}
        for b in ov["batches"]}
    m = cm["median"]
    commit = {"commit -> first request": {ours: m["commit_to_first_s"] * 1e3,
                                          peer: m["peer_commit_to_first_s"] * 1e3},
              "new weights written": {ours: m["swap_s"] * 1e3, peer: m["peer_merge_s"] * 1e3}}
    served = {what: {ours: C.median([r["adaptive"]["texts_per_s"] for r in tp[kind]]),
                     peer: C.median([r["merged"]["texts_per_s"] for r in tp[kind]])}
              for kind, what in (("static", "no commits"), ("online", "a commit every second"))}
    C.plot_bars(path, title, [
        C.BarPanel("(a) encode, median ms (log scale)", "ms", encode, log=True),
        C.BarPanel(f"(b) a committed step of {cm['changes_per_step']:,} changes: median ms "
                   "(log scale)", "ms", commit, log=True),
        C.BarPanel(f"(c) throughput of {tp['clients']} clients, texts/s (median of rounds)",
                   "texts / s", served)])
    print(f"wrote {path}")


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=9,
                    help="timed rounds for (a) at batch 32 (4x as many at batch 1)")
    ap.add_argument("--steps", type=int, default=ADAPT_STEPS, help="adapt steps timed in (b)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="duration of each throughput run in (c)")
    ap.add_argument("--random-weights", action="store_true",
                    help="MiniLM-L6's architecture with random weights and a hashing tokenizer")
    ap.add_argument("--sections", default="abcd",
                    help="which of (a) overhead, (b) commit, (c) throughput, (d) mixed "
                         "batches to run (default abcd; --plot needs a, b and c)")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--plot", metavar="PATH",
                    help="draw the tables as bar charts into the PNG file PATH (matplotlib)")
    a = ap.parse_args(argv)
    C.check_plot_arg(ap, a.plot)
    if not a.sections or set(a.sections) - set("abcd"):
        ap.error(f"--sections takes letters of 'abcd', got {a.sections!r}")
    if a.plot and not set("abc") <= set(a.sections):
        ap.error("--plot needs sections a, b and c")

    wall0 = time.perf_counter()
    load0 = os.getloadavg()
    info = C.machine_info()
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    print(f"bench/serve.py: load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at the "
          f"start; {info['processor']}, {info.get('affinity_cpus', info['cpu_count'])} CPUs; "
          f"JAX {jax.__version__} on {jax.default_backend()} ({devices}); "
          f"{'random weights' if a.random_weights else 'all-MiniLM-L6-v2'}", flush=True)
    rng = np.random.default_rng(a.seed)
    pairs = doc_pairs(seed=a.seed)
    texts = [p for _, p in pairs]
    results = {"loadavg_start": load0, "backend": jax.default_backend(), "devices": devices,
               "random_weights": a.random_weights}
    kind = backend_kind()

    parts = []
    if "a" in a.sections:
        results["overhead"] = ov = bench_overhead(a.random_weights, a.seed, texts, a.repeats,
                                                  rng)
        print_overhead(ov)
        print(flush=True)
        b32, b1 = ov["batches"]
        parts.append(f"live adapter b{BATCH} {b32['ratio_live']:.3f}x, b1 "
                     f"{b1['ratio_live']:.3f}x [<= {ov['target']}x "
                     f"{C.verdict(max(b32['ratio_live'], b1['ratio_live']) <= ov['target'])}]")
    if "b" in a.sections:
        results["commit"] = cm = bench_commit(a.random_weights, a.seed, pairs, pairs[-1][0],
                                              a.steps)
        print_commit(cm)
        print(flush=True)
        c2f = cm["median"]["commit_to_first_s"]
        mem = cm["memory"]["ratio"]
        parts.append(f"commit->first request {C.fmt_time(c2f)} "
                     f"[<= {C.fmt_time(cm['target_s'])} {C.verdict(c2f <= cm['target_s'])}], "
                     f"dense-merge peer {C.fmt_time(cm['median']['peer_commit_to_first_s'])} | "
                     f"swap memory {mem:.3f}x [<= {MEMORY_TARGET}x "
                     f"{C.verdict(mem <= MEMORY_TARGET)}]")
    if "c" in a.sections:
        results["throughput"] = tp = bench_throughput(a.random_weights, a.seed, texts,
                                                      a.seconds, rng)
        print_throughput(tp)
        print(flush=True)
        parts.append(f"{CLIENTS} clients, a commit a second: {tp['ratio_online']:.2f}x the "
                     f"dense-merge peer [{C.verdict(tp['ratio_online'] >= 1.0)}] (no commits "
                     f"{tp['ratio_static']:.2f}x)")
    if "d" in a.sections:
        results["mixed"] = mx = bench_mixed(a.random_weights, a.seed, texts, a.repeats, rng)
        print_mixed(mx)
        parts.append(f"b{BATCH} mixing {MIXED} adapters {mx['ratio_adapters']:.2f}x, {MIXED} "
                     f"past steps {mx['ratio_steps']:.2f}x the plain model [<= {mx['target']}x "
                     f"{C.verdict(max(mx['ratio_adapters'], mx['ratio_steps']) <= mx['target'])}]")
    summary = (f"summary ({kind}{', random weights' if a.random_weights else ''}): "
               + " | ".join(parts))
    wall = time.perf_counter() - wall0
    summary += f" | load {load0[0]:.1f} | wall {wall:.0f} s"
    if a.json:
        C.write_json(a.json, "serve", {**results, "summary": summary, "wall_s": wall},
                     config={"seed": a.seed, "repeats": a.repeats, "steps": a.steps,
                             "random_weights": a.random_weights, "seconds": a.seconds,
                             "density": DENSITY, "batch": BATCH, "clients": CLIENTS,
                             "client_batch": CLIENT_BATCH, "adapt_pairs": ADAPT_PAIRS})
    if a.plot:
        plot(a.plot, ov, cm, tp, f"bench/serve.py: all-MiniLM-L6-v2 with a learning sparse "
                                 f"adapter, JAX on {devices}"
                                 f"{', random weights' if a.random_weights else ''}")
    print()
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
