"""``hyprvdb demo``: MiniLM learns, online, to find Python's own documentation.

Pairs come from the standard library shipped with Python: the query is an API's dotted name
read as words ("os path join"), the positive is the first paragraph of its docstring. The
demo adapts a sparse adapter on every linear layer of all-MiniLM-L6-v2 (the embedded model),
commits each step to a history file, and shows: how retrieval and one query's nearest
neighbours move, time travel to an earlier step and a rollback, the memory of the history
against a dict, CSR and full checkpoints, and which kernel path ran.
"""

from __future__ import annotations

import importlib
import inspect
import tempfile
import time
from pathlib import Path

import numpy as np

MODULES = ("json", "os.path", "re", "math", "random", "itertools", "collections", "functools",
           "string", "textwrap", "shutil", "glob", "heapq", "bisect", "statistics", "csv",
           "zipfile", "base64", "hashlib", "datetime", "calendar", "fnmatch", "difflib",
           "operator", "copy", "pprint", "tempfile", "gzip", "uuid", "html", "urllib.parse",
           "secrets", "fractions", "decimal", "pathlib", "subprocess", "threading", "socket")


def doc_pairs(limit: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """(query, positive) pairs from the standard library's docstrings, deterministic.

    Examples
    --------
    >>> from hyprvdb.serve import doc_pairs
    >>> pairs = doc_pairs(limit=3)
    >>> len(pairs), all(isinstance(q, str) and isinstance(p, str) for q, p in pairs)
    (3, True)
    """
    pairs = []
    for mod_name in MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for name in sorted(dir(mod)):
            if name.startswith("_"):
                continue
            obj = getattr(mod, name)
            if not callable(obj) or getattr(obj, "__module__", "") not in (mod.__name__,
                                                                             mod_name):
                continue
            doc = inspect.getdoc(obj)
            if not doc:
                continue
            para = " ".join(doc.split("\n\n")[0].split())
            if len(para) < 40 or para.startswith(name + "("):
                continue
            words = f"{mod_name} {name}".replace(".", " ").replace("_", " ")
            pairs.append((words, para[:300]))
    rng = np.random.default_rng(seed)
    rng.shuffle(pairs)
    return pairs[:limit]


def _ranks(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of each query's own document among all documents."""
    sims = q @ d.T
    own = np.diag(sims)
    return (sims > own[:, None]).sum(1)


def _pretrained(model, name: str) -> np.ndarray:
    """A matrix's pretrained weight, read again from the model's file."""
    from safetensors import safe_open

    from ._model import default_model_path
    with safe_open(str(default_model_path() / "model.safetensors"), "numpy") as f:
        key = next(k for k in f.keys() if k.endswith(f"encoder.{name}.weight"))
        return f.get_tensor(key).astype(np.float32)


def run(steps: int = 12, seed: int = 0, batch: int = 16) -> dict:
    """``hyprvdb demo``: adapt the embedded all-MiniLM-L6-v2 online on (query, docstring)
    pairs of Python's standard library for ``steps`` steps of ``batch`` pairs, printing the
    retrieval quality (MRR) before and after, a past step served from the history, a
    rollback checked bit for bit, and the memory of the adapter and its history against
    checkpoints; returns a dict of those figures.

    Examples
    --------
    >>> from hyprvdb.serve import run_demo
    >>> result = run_demo(steps=2)  # doctest: +SKIP
    """
    from tqdm import tqdm

    from .. import jax as hj
    from ._model import MiniLM
    from ..ops import resolve_device
    from ._encoder import AdaptiveEncoder
    from ._merged import merge_from_scratch

    t_start = time.perf_counter()
    print("hyprvdb demo: all-MiniLM-L6-v2 learns to find Python's documentation\n")
    with tqdm(total=3, desc="loading", unit="part") as bar:
        model = MiniLM.load()
        bar.update()
        tmp = tempfile.mkdtemp(prefix="hyprvdb-demo-")
        history_path = str(Path(tmp) / "minilm.hvh")
        enc = AdaptiveEncoder(model, history_path, lr=0.01, update_fraction=5e-4,
                              query_tokens=16, doc_tokens=64)
        bar.update()
        pairs = doc_pairs(seed=seed)
        bar.update()
    n_train = int(len(pairs) * 0.8)
    train, held = pairs[:n_train], pairs[n_train:]
    docs = [p for _, p in pairs]
    queries = [q for q, _ in pairs]
    print(f"{len(pairs)} (query, docstring) pairs from {len(MODULES)} stdlib modules: "
          f"{len(train)} to learn from, {len(held)} held out")
    print(f"{len(enc.shapes)} adapted matrices, "
          f"{sum(r * c for r, c in enc.shapes.values()):,} weights; history in {history_path}")

    def evaluate(step=None) -> tuple[float, float, float, np.ndarray]:
        dv = np.concatenate([enc.encode(docs[i:i + 64], step=step)[0]
                             for i in range(0, len(docs), 64)])
        qv = np.concatenate([enc.encode(queries[i:i + 64], step=step)[0]
                             for i in range(0, len(queries), 64)])
        r = _ranks(qv, dv)
        return (float(np.mean(1 / (1 + r[:n_train]))), float(np.mean(1 / (1 + r[n_train:]))),
                float(np.mean(r == 0)), qv @ dv.T)

    def neighbours(sims: np.ndarray, i: int, k: int = 3) -> list[str]:
        top = np.argsort(-sims[i])[:k]
        return [("* " if j == i else "  ") + docs[j][:70] for j in top]

    print("\nevaluating before adaptation ...")
    mrr_tr0, mrr_ho0, r1_0, sims0 = evaluate()
    show = int(np.argmax([1 / (1 + np.sum(sims0[i] > sims0[i, i])) < 0.5
                          for i in range(n_train)]))
    print(f"step 0: MRR learned pairs {mrr_tr0:.3f}, held-out {mrr_ho0:.3f}, "
          f"recall@1 {r1_0:.3f}")
    print(f"query {queries[show]!r}: nearest documents at step 0 (* = its own)")
    for line in neighbours(sims0, show):
        print("   ", line)

    rng = np.random.default_rng(seed)
    losses = []
    with tqdm(range(steps), desc="adapting", unit="step") as bar:
        for _ in bar:
            idx = rng.choice(n_train, batch, replace=False)
            if show not in idx:
                idx[0] = show
            out = enc.adapt([train[i] for i in idx])
            losses.append(out["loss"])
            bar.set_postfix(step=out["step"], loss=f"{out['loss']:.3f}",
                            swap=f"{out['swap_ms']:.0f}ms")
    mrr_tr1, mrr_ho1, r1_1, sims1 = evaluate()
    print(f"step {enc.step}: MRR learned pairs {mrr_tr1:.3f} (was {mrr_tr0:.3f}), held-out "
          f"{mrr_ho1:.3f} (was {mrr_ho0:.3f}), recall@1 {r1_1:.3f} (was {r1_0:.3f})")
    print(f"query {queries[show]!r}: nearest documents at step {enc.step}")
    for line in neighbours(sims1, show):
        print("   ", line)

    mid = max(1, enc.step // 2)
    print(f"\ntime travel: serving step {mid} from the history, without touching step "
          f"{enc.step} (each layer adds the window's sparse correction to the live weights)")
    mrr_mid, _, _, _ = evaluate(mid)
    print(f"step {mid}: MRR learned pairs {mrr_mid:.3f}")
    latest = enc.step
    enc.rollback(mid)
    # The live weights after the rollback, against a merge from scratch of the pretrained
    # weights (read again from the model file) and the history's state at that step.
    name = next(iter(enc.shapes))
    pre = _pretrained(model, name)
    r, c, v = enc.history[name].active_weights(mid)
    s_mid = np.zeros(pre.shape, np.float32)
    s_mid[r, c] = v
    same = np.array_equal(np.asarray(model.weight(name)), merge_from_scratch(pre, s_mid, 1.0))
    print(f"rollback({mid}): serving step {enc.step} (steps {mid + 1}..{latest} discarded); "
          f"history steps now {enc.history.steps[0]}..{enc.history.latest}")
    print(f"{name} live = pretrained + weights_at_time({mid}), bit for bit: {same}")

    # memory: the adapter at the latest step and its history, against what users would keep
    active = sum(len(enc.history[k].active_weights()[0]) for k in enc.shapes)
    changes = enc.history.change_count()
    dense_bytes = 4 * sum(r * c for r, c in enc.shapes.values())
    n_steps = len(enc.history.steps) - 1
    adapters = enc.history.weights_at_time(enc.step)
    print(f"\nmemory at step {enc.step} ({active:,} active weights, {changes:,} stored changes "
          f"over {n_steps} steps):")
    rows = [("hyprvdb AdapterSet (one OpenVDB tree)", adapters.memory_usage()),
            ("python dict {(row, col): value}", 164 * active),
            ("scipy CSR (int32 + float32)", 8 * active + 4 * sum(r + 1 for r, _ in
                                                                 enc.shapes.values())),
            ("dense float32 deltas", dense_bytes)]
    for label, b in rows:
        print(f"  {label:36s} {b / 1e6:9.3f} MB  {b / max(active, 1):8.1f} B/weight")
    hist = enc.history.history_bytes()
    print(f"  {'hyprvdb history (all steps)':36s} {hist / 1e6:9.3f} MB  "
          f"{hist / max(changes, 1):8.1f} B/change")
    print(f"  {'full checkpoints, one per step':36s} {dense_bytes * n_steps / 1e6:9.3f} MB")
    print("  (dict: 164 B/weight as bench/memory.py measures it; the set keeps all 36 matrices "
          "in one tree\n   of 64-column cells, so internal nodes are shared — see "
          "bench/memory.py)")

    print(f"\nserving: the live adapter merged into the weights (the plain forward pass); past "
          f"steps' corrections ran on {hj.kernel_path(model.impl)}; hyprvdb.ops device 'auto' "
          f"-> {resolve_device('auto')}")
    wall = time.perf_counter() - t_start
    print(f"demo finished in {wall:.1f} s")
    enc.close()
    return {"mrr_train": (mrr_tr0, mrr_tr1), "mrr_heldout": (mrr_ho0, mrr_ho1),
            "losses": losses, "seconds": wall}
