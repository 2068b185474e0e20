"""Serving all-MiniLM-L6-v2 with a learning sparse adapter: what the adapter costs per
request, how soon a committed step is served, and throughput under concurrent clients.

Model: the embedded all-MiniLM-L6-v2 (hyprvdb.serve.MiniLM, JAX on its default backend), 36
adapted matrices. Texts: the first paragraphs of standard-library docstrings
(hyprvdb.serve.doc_pairs, seeded), so batches have realistic token lengths.

``--random-weights`` (for machines without the model package, the tokenizer or OpenVDB, such
as the GPU machines here): MiniLM-L6's architecture with seeded random weights and random
token ids, 80 tokens per text (what the docstrings give), and only (a): the overhead does not
depend on the weights' values.

(a) overhead    One jitted forward pass (the function ``MiniLM.embed_fn()``), batch 32 and
                batch 1, with a 1%-dense adapter on every linear layer (36
                ``SparseDelta.from_coo``, random entries, seeded) against the plain model (no
                deltas). Calls are interleaved (plain, ffi, plain, ffi, ...) so that load
                drift hits every contender alike; medians of wall and CPU time. Target:
                with / without <= 1.3x on the CPU, <= 1.1x on a GPU, for the default
                implementation (``impl="auto"``: ``"ffi"`` on the CPU, the C++ FFI target
                that adds the delta into the dense product's buffer in place;
                ``"callback"`` on a GPU, the CUDA kernel on JAX's stream). The ``"jax"`` row is the same model
                built with ``MiniLM(..., impl="jax")`` (pure JAX gathers; info, no target;
                few calls: it is slow). The traced programs are inspected to show which
                implementation each row ran.
                Embeddings are compared (auto vs jax, adapter vs the adapter merged into W).
(b) commit ->    ``AdaptiveEncoder.adapt`` on 8 (query, docstring) pairs per step. For each
    first request step: ``swap`` = from ``store_deltas`` returning (the step is durable) to
                the new serving state being assigned (``swap_ms``, measured inside adapt),
                then the first ``encode`` of one text on the new state right after adapt
                returns. commit -> first request = swap + that encode. Target: <= 50 ms
                (median over the steps). Also: adapt end to end (gradient, top-k, commit,
                swap; the first call's compilation shown apart), a steady encode of the same
                text for comparison, and the dense-merge peer's commit -> first request (merge
                W + dense delta for the 36 matrices, jitted, then the first encode).
(c) throughput  16 client threads, each calling ``encode`` on batches of 4 texts for a fixed
                time: the AdaptiveEncoder serving the 1%-dense adapter (a ServingState built
                from the (a) deltas, passed as ``state=``) against the peer, the same adapter
                merged densely into the weights (W + dense delta, one jitted plain forward
                with no deltas). texts/s for both (info; the peer pays its merge per step, see
                (b)).

Run:  python bench/serve.py [--seed N] [--repeats N] [--seconds S] [--random-weights]
                           [--json PATH]
The last line printed is a one-line summary.
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
from hyprvdb.serve import doc_pairs  # noqa: E402
from hyprvdb.serve import MiniLM  # noqa: E402
from hyprvdb.serve import AdaptiveEncoder, ServingState  # noqa: E402

DENSITY = 0.01          # the (a)/(c) adapter: 1% of every matrix
DELTA_SIGMA = 0.01
BATCH = 32
CLIENTS = 16
CLIENT_BATCH = 4
ADAPT_PAIRS = 8
ADAPT_STEPS = 5
OVERHEAD_TARGETS = {"cpu": 1.3, "gpu": 1.1}
RANDOM_TOKENS = 80      # --random-weights: tokens per text
# all-MiniLM-L6-v2's config.json, for --random-weights
MINILM_CONFIG = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
                 "num_attention_heads": 12, "intermediate_size": 1536,
                 "max_position_embeddings": 512, "type_vocab_size": 2,
                 "layer_norm_eps": 1e-12}
COMMIT_TARGET_S = 0.050


# ------------------------------------------------------------------------------ helpers
def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median wall and CPU seconds of each ``fn`` (its result blocked on), the contenders
    called in turn within every round."""
    for _ in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn())
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            # C.time_call: gc off during the call; one timed call per round keeps the rounds
            # interleaved.
            c0 = time.process_time()
            t = C.time_call(lambda fn=fn: jax.block_until_ready(fn()), repeats=1, warmup=0)
            cpu[k].append(time.process_time() - c0)
            wall[k].append(t["median_s"])
    return {k: {"median_s": C.median(wall[k]), "min_s": min(wall[k]), "max_s": max(wall[k]),
                "cpu_median_s": C.median(cpu[k])} for k in fns}


def random_deltas(shapes: dict, rng: np.random.Generator) -> dict[str, hj.SparseDelta]:
    out = {}
    for name, (r, c) in shapes.items():
        n = int(round(DENSITY * r * c))
        flat = rng.choice(r * c, n, replace=False)
        out[name] = hj.SparseDelta.from_coo(flat // c, flat % c,
                                            rng.normal(0, DELTA_SIGMA, n).astype(np.float32),
                                            (r, c))
    return out


def merge_fn():
    """Jitted dense merge: params with every adapted W replaced by W + dense(delta)."""
    @jax.jit
    def merge(params, deltas):
        p = dict(params)
        for name, d in deltas.items():
            k = f"encoder.{name}.weight"
            p[k] = p[k] + hj.to_dense(d)
        return p
    return merge


def peer_encoder(model: MiniLM):
    """The dense-merge peer's encode: one jitted plain forward (no deltas), the merged
    weights passed in."""
    fwd = jax.jit(model.embed_fn())
    one = jnp.float32(1.0)

    def encode(texts: list[str], params: dict) -> np.ndarray:
        ids, mask = model.tokenize(texts)
        return np.asarray(fwd(params, {}, jnp.asarray(ids), jnp.asarray(mask), one))
    return encode


def maxdiff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ------------------------------------------------------------------------------ (a)
def ffi_calls(fn, *args) -> int:
    """How many delta calls (FFI targets or buffer_callbacks) the traced program holds, to
    show which implementation ran."""
    text = str(jax.make_jaxpr(fn)(*args))
    return text.count("hyprvdb_delta_accumulate") + text.count("buffer_callback")


def overhead_target() -> float:
    return OVERHEAD_TARGETS["cpu" if jax.default_backend() == "cpu" else "gpu"]


def random_minilm(rng: np.random.Generator) -> MiniLM:
    """MiniLM-L6's architecture with random weights (no model package, no tokenizer)."""
    c = MINILM_CONFIG
    h, f = c["hidden_size"], c["intermediate_size"]
    shapes = {"embeddings.word_embeddings.weight": (c["vocab_size"], h),
              "embeddings.position_embeddings.weight": (c["max_position_embeddings"], h),
              "embeddings.token_type_embeddings.weight": (c["type_vocab_size"], h),
              "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,)}
    for i in range(c["num_hidden_layers"]):
        L = f"encoder.layer.{i}"
        for name, (o, n) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                             "attention.self.value": (h, h),
                             "attention.output.dense": (h, h),
                             "intermediate.dense": (f, h), "output.dense": (h, f)}.items():
            shapes[f"{L}.{name}.weight"], shapes[f"{L}.{name}.bias"] = (o, n), (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{L}.{ln}.weight"], shapes[f"{L}.{ln}.bias"] = (h,), (h,)
    params = {k: jnp.asarray((rng.standard_normal(v) * 0.05
                              + (k.endswith("LayerNorm.weight"))).astype(np.float32))
              for k, v in shapes.items()}
    return MiniLM(params, dict(c), tokenizer=None)


def batch_inputs(model: MiniLM, texts: list[str], batch: int,
                 rng: np.random.Generator) -> tuple:
    """(ids, mask) for ``batch`` texts: tokenized, or random ids with random lengths when the
    model has no tokenizer (--random-weights)."""
    if model.tokenizer is not None:
        return tuple(jnp.asarray(x) for x in model.tokenize(texts[:batch]))
    ids = rng.integers(1000, MINILM_CONFIG["vocab_size"], (batch, RANDOM_TOKENS))
    lengths = rng.integers(16, RANDOM_TOKENS + 1, batch)
    mask = (np.arange(RANDOM_TOKENS)[None] < lengths[:, None]).astype(np.int32)
    return jnp.asarray(ids.astype(np.int32)), jnp.asarray(mask)


def bench_overhead(model: MiniLM, deltas: dict, texts: list[str], repeats: int,
                   jax_repeats: int, rng: np.random.Generator) -> dict:
    one = jnp.float32(1.0)
    out = {"impl_default": hj.implementation("auto"), "kernel_path": hj.kernel_path(),
           "target": overhead_target(), "batches": []}
    merged = merge_fn()(model.params, deltas)
    for batch in (BATCH, 1):
        ids, mask = batch_inputs(model, texts, batch, rng)
        args = (deltas, ids, mask, one)
        # What a user of MiniLM / AdaptiveEncoder gets (impl="auto").
        plain = jax.jit(model.embed_fn())
        fns = {"plain": lambda: plain(model.params, {}, ids, mask, one),
               "auto": lambda: plain(model.params, *args)}
        t0 = time.perf_counter()
        for fn in fns.values():
            jax.block_until_ready(fn())
        compile_s = time.perf_counter() - t0
        n = repeats if batch > 1 else 4 * repeats
        times = interleaved(fns, n)
        e_auto = fns["auto"]()
        calls = {"auto": ffi_calls(model.embed_fn(), model.params, *args)}
        jax_model = MiniLM(model.params, model.config, model.tokenizer, impl="jax")
        as_jax = jax.jit(jax_model.embed_fn())
        calls["jax"] = ffi_calls(jax_model.embed_fn(), model.params, *args)
        t0 = time.perf_counter()
        e_jax = jax.block_until_ready(as_jax(model.params, *args))
        compile_jax_s = time.perf_counter() - t0
        times.update(interleaved({"jax": lambda: as_jax(model.params, *args)},
                                 jax_repeats if batch > 1 else n, warmup=0))
        e_merged = plain(merged, {}, ids, mask, one)
        out["batches"].append({
            "batch": batch, "tokens": int(ids.shape[1]), "compile_s": compile_s,
            "compile_jax_s": compile_jax_s, "ffi_calls": calls, "times": times,
            "ratio_auto": times["auto"]["median_s"] / times["plain"]["median_s"],
            "ratio_jax": times["jax"]["median_s"] / times["plain"]["median_s"],
            "maxdiff_auto_vs_jax": maxdiff(e_auto, e_jax),
            "maxdiff_auto_vs_merged": maxdiff(e_auto, e_merged)})
    return out


def print_overhead(res: dict) -> None:
    rows = []
    for b in res["batches"]:
        t = b["times"]
        for k, label in (("plain", "plain model (no deltas)"),
                         ("auto", f"1% adapter, impl=auto ({res['impl_default']})"),
                         ("jax", "1% adapter, impl=jax")):
            ratio = "" if k == "plain" else f"{t[k]['median_s'] / t['plain']['median_s']:.2f}x"
            target = ""
            if k == "auto" and b["batch"] == BATCH:
                target = f"<= {res['target']}x {C.verdict(b['ratio_auto'] <= res['target'])}"
            rows.append([b["batch"], b["tokens"], label, C.fmt_time(t[k]["median_s"]),
                         C.fmt_time(t[k]["cpu_median_s"]), ratio, target])
    C.print_table(["batch", "tokens", "forward pass", "wall", "cpu", "vs plain", "target"],
                  rows, title="(a) serving overhead of a 1%-dense adapter on all 36 linear "
                              "layers (median)")
    for b in res["batches"]:
        print(f"    batch {b['batch']}: max |emb| difference auto vs jax "
              f"{b['maxdiff_auto_vs_jax']:.2g}, adapter vs merged into W "
              f"{b['maxdiff_auto_vs_merged']:.2g}; delta calls (FFI or buffer_callback) in "
              f"the traced forward: auto {b['ffi_calls']['auto']}, jax "
              f"{b['ffi_calls']['jax']}; compile: plain + auto "
              f"{b['compile_s']:.1f} s, jax {b['compile_jax_s']:.1f} s")
    print(f"    (the jax row: {res['jax_repeats']} timed call(s) at batch {BATCH})")


# ------------------------------------------------------------------------------ (b)
def bench_commit(model: MiniLM, pairs: list, query: str, steps: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="hyprvdb-bench-serve-")
    enc = AdaptiveEncoder(model, os.path.join(tmp, "history.hvh"), query_tokens=16,
                          doc_tokens=64)
    merge = merge_fn()
    peer = peer_encoder(model)
    enc.encode([query])
    peer([query], jax.block_until_ready(merge(model.params, enc.state.deltas)))
    t0 = time.perf_counter()
    c0 = time.process_time()
    enc.adapt(pairs[:ADAPT_PAIRS])  # compiles the gradient
    first_adapt = (time.perf_counter() - t0, time.process_time() - c0)
    enc.encode([query])
    per_step = []
    for i in range(steps):
        batch = pairs[(i + 1) * ADAPT_PAIRS:(i + 2) * ADAPT_PAIRS]
        t0, c0 = time.perf_counter(), time.process_time()
        out = enc.adapt(batch)
        t1, c1 = time.perf_counter(), time.process_time()
        _, step = enc.encode([query])           # the first request on the new step
        t2 = time.perf_counter()
        assert step == out["step"], (step, out["step"])
        enc.encode([query])                     # a steady one, for comparison
        t3 = time.perf_counter()
        # the dense-merge peer: W + dense delta for the 36 matrices, then the first request
        merged = jax.block_until_ready(merge(model.params, enc.state.deltas))
        t4 = time.perf_counter()
        peer([query], merged)
        t5 = time.perf_counter()
        per_step.append({"step": out["step"], "adapt_s": t1 - t0, "adapt_cpu_s": c1 - c0,
                         "swap_s": out["swap_ms"] / 1e3, "first_encode_s": t2 - t1,
                         "steady_encode_s": t3 - t2,
                         "commit_to_first_s": out["swap_ms"] / 1e3 + (t2 - t1),
                         "peer_merge_s": t4 - t3, "peer_first_encode_s": t5 - t4,
                         "peer_commit_to_first_s": t5 - t3})
    enc.history.close()
    med = {k: C.median([s[k] for s in per_step]) for k in per_step[0] if k != "step"}
    return {"first_adapt_s": first_adapt[0], "first_adapt_cpu_s": first_adapt[1],
            "steps": per_step, "median": med, "pairs_per_step": ADAPT_PAIRS,
            "changes_per_step": out["changes"]}


def print_commit(res: dict) -> None:
    m = res["median"]
    mx = {k: max(s[k] for s in res["steps"]) for k in m}
    ok = m["commit_to_first_s"] <= COMMIT_TARGET_S
    rows = [
        ["swap (store_deltas returned -> new state assigned)", C.fmt_time(m["swap_s"]),
         C.fmt_time(mx["swap_s"]), ""],
        ["first encode of 1 text on the new step", C.fmt_time(m["first_encode_s"]),
         C.fmt_time(mx["first_encode_s"]), ""],
        ["commit -> first request served", C.fmt_time(m["commit_to_first_s"]),
         C.fmt_time(mx["commit_to_first_s"]),
         f"<= {C.fmt_time(COMMIT_TARGET_S)} {C.verdict(ok)}"],
        ["steady encode of the same text", C.fmt_time(m["steady_encode_s"]),
         C.fmt_time(mx["steady_encode_s"]), ""],
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
    print(f"    first adapt() (compiles the gradient): {res['first_adapt_s']:.1f} s wall, "
          f"{res['first_adapt_cpu_s']:.1f} s cpu")


# ------------------------------------------------------------------------------ (c)
def run_clients(encode, batches: list[list[str]], seconds: float) -> dict:
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
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if errors:
        raise RuntimeError(f"client errors: {errors[:3]}")
    return {"texts": sum(counts), "wall_s": wall, "cpu_s": cpu,
            "texts_per_s": sum(counts) / wall}


def bench_throughput(model: MiniLM, deltas: dict, texts: list[str], seconds: float) -> dict:
    enc = AdaptiveEncoder(model)
    state = ServingState(1, deltas, {}, {})
    merged = merge_fn()(model.params, deltas)
    peer = peer_encoder(model)
    batches = [texts[i:i + CLIENT_BATCH] for i in range(0, 8 * CLIENT_BATCH, CLIENT_BATCH)]
    ours = lambda b: enc.encode(b, state=state)  # noqa: E731
    theirs = lambda b: peer(b, merged)  # noqa: E731
    for b in batches:  # compile every shape, and check both serve the same embeddings
        diff = maxdiff(ours(b)[0], theirs(b))
    out = {"clients": CLIENTS, "batch": CLIENT_BATCH, "seconds": seconds,
           "maxdiff": diff}
    out["adaptive"] = run_clients(ours, batches, seconds)
    out["merged"] = run_clients(theirs, batches, seconds)
    out["ratio"] = out["adaptive"]["texts_per_s"] / out["merged"]["texts_per_s"]
    return out


def print_throughput(res: dict) -> None:
    rows = []
    for k, label in (("adaptive", "AdaptiveEncoder, 1% sparse adapter"),
                     ("merged", "peer: adapter merged into W (dense)")):
        r = res[k]
        rows.append([label, f"{r['texts_per_s']:.1f}", r["texts"], f"{r['wall_s']:.1f} s",
                     f"{r['cpu_s']:.1f} s"])
    C.print_table(["server", "texts/s", "texts", "wall", "cpu"], rows,
                  title=f"(c) throughput: {res['clients']} client threads, batches of "
                        f"{res['batch']} texts")
    print(f"    adaptive / merged = {res['ratio']:.2f}x; max |emb| difference between the two "
          f"{res['maxdiff']:.2g}")


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7,
                    help="timed rounds for (a) at batch 32 (4x as many at batch 1)")
    ap.add_argument("--jax-repeats", type=int, default=1,
                    help="timed calls of the (slow) impl=jax forward at batch 32")
    ap.add_argument("--steps", type=int, default=ADAPT_STEPS, help="adapt steps timed in (b)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="duration of each throughput run in (c)")
    ap.add_argument("--random-weights", action="store_true",
                    help="MiniLM-L6's architecture with random weights and token ids; (a) only")
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args(argv)

    wall0 = time.perf_counter()
    load0 = os.getloadavg()
    info = C.machine_info()
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    print(f"bench/serve.py: load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at the "
          f"start; {info['processor']}, {info.get('affinity_cpus', info['cpu_count'])} CPUs; "
          f"JAX {jax.__version__} on {jax.default_backend()} ({devices}); delta product: "
          f"{hj.kernel_path()}", flush=True)
    rng = np.random.default_rng(a.seed)
    if a.random_weights:
        model, pairs = random_minilm(rng), []
    else:
        model, pairs = MiniLM.load(), doc_pairs(seed=a.seed)
    texts = [p for _, p in pairs]
    deltas = random_deltas(model.linear_shapes(), rng)
    nnz = sum(int(d.nnz) for d in deltas.values())
    source = (f"random weights, random ids of {RANDOM_TOKENS} tokens" if a.random_weights
              else f"{len(pairs)} docstring pairs")
    print(f"adapter: {len(deltas)} matrices, {nnz:,} entries ({DENSITY:.0%}); {source}\n",
          flush=True)

    results = {"loadavg_start": load0, "adapter_nnz": nnz, "backend": jax.default_backend(),
               "devices": devices, "random_weights": a.random_weights}
    results["overhead"] = ov = bench_overhead(model, deltas, texts, a.repeats, a.jax_repeats,
                                              rng)
    ov["jax_repeats"] = a.jax_repeats
    print_overhead(ov)
    b32, b1 = ov["batches"]
    summary = (f"summary: overhead b{BATCH} {b32['ratio_auto']:.2f}x ({ov['impl_default']}; "
               f"jax {b32['ratio_jax']:.2f}x), b1 {b1['ratio_auto']:.2f}x "
               f"[b{BATCH} <= {ov['target']}x "
               f"{C.verdict(b32['ratio_auto'] <= ov['target'])}] | ")
    if a.random_weights:
        summary += "(b) and (c) not run: --random-weights | "
    else:
        print(flush=True)
        results["commit"] = cm = bench_commit(model, pairs, pairs[-1][0], a.steps)
        print_commit(cm)
        print(flush=True)
        results["throughput"] = tp = bench_throughput(model, deltas, texts, a.seconds)
        print_throughput(tp)
        c2f = cm["median"]["commit_to_first_s"]
        summary += (f"commit->first request {C.fmt_time(c2f)} "
                    f"[<= {C.fmt_time(COMMIT_TARGET_S)} {C.verdict(c2f <= COMMIT_TARGET_S)}], "
                    f"adapt {C.fmt_time(cm['median']['adapt_s'])}, merge peer "
                    f"{C.fmt_time(cm['median']['peer_commit_to_first_s'])} | "
                    f"{CLIENTS} clients {tp['adaptive']['texts_per_s']:.0f} texts/s vs merged "
                    f"{tp['merged']['texts_per_s']:.0f} ({tp['ratio']:.2f}x) | ")
    wall = time.perf_counter() - wall0
    summary += f"load {load0[0]:.1f} | wall {wall:.0f} s"
    if a.json:
        C.write_json(a.json, "serve", {**results, "summary": summary, "wall_s": wall},
                     config={"seed": a.seed, "repeats": a.repeats, "jax_repeats": a.jax_repeats,
                             "steps": a.steps, "random_weights": a.random_weights,
                             "seconds": a.seconds, "density": DENSITY, "batch": BATCH,
                             "clients": CLIENTS, "client_batch": CLIENT_BATCH,
                             "adapt_pairs": ADAPT_PAIRS})
    print()
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
