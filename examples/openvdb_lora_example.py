"""The seed design's OpenVDB LoRA adapter example, end to end.

A sparse delta for one 4096x4096 projection: built from a low-rank LoRA pair, updated in
batches, merged with a second adapter, pruned, saved as a real .vdb file and read back, and
measured against the structures a user would otherwise pick.

Run: .venv/bin/python examples/openvdb_lora_example.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

import hyprvdb


def main() -> None:
    rng = np.random.default_rng(7)
    rows = cols = 4096
    rank = 16

    # 1. A PEFT-style pair (lora_A: r x in, lora_B: out x r) sparsified to its 1% largest entries.
    A = rng.standard_normal((rank, cols)).astype(np.float32) / np.sqrt(cols)
    B = rng.standard_normal((rows, rank)).astype(np.float32) / np.sqrt(rank)
    t = time.perf_counter()
    adapter = hyprvdb.SparseAdapter.from_lora(A, B, alpha=32.0, density=0.01, name="q_proj")
    print(f"from_lora: {adapter}  ({(time.perf_counter() - t) * 1e3:.0f} ms)")

    # 2. Single-weight operations, as in the seed.
    adapter.set_weight(10, 20, 0.5)
    print(f"get_weight(10, 20) = {adapter.get_weight(10, 20)}, "
          f"is_active(10, 20) = {adapter.is_active(10, 20)}")
    adapter.remove_weight(10, 20)
    print(f"after remove_weight: get_weight(10, 20) = {adapter.get_weight(10, 20)}, "
          f"is_active = {adapter.is_active(10, 20)}")

    # 3. A batch of sparse gradient steps, accumulated in C++ over whole arrays.
    n = 200_000
    r, c = rng.integers(0, rows, n), rng.integers(0, cols, n)
    g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    t = time.perf_counter()
    adapter.add_weights(r, c, -0.1 * g)
    print(f"add_weights of {n:,} updates: {(time.perf_counter() - t) * 1e3:.1f} ms, "
          f"active now {adapter.active_count():,}")

    # 4. Merging is additive: w += scale * other, and other is left untouched.
    other = hyprvdb.SparseAdapter.from_lora(
        rng.standard_normal((rank, cols)).astype(np.float32) / np.sqrt(cols),
        rng.standard_normal((rows, rank)).astype(np.float32) / np.sqrt(rank),
        alpha=32.0, density=0.005)
    before = adapter.get_weights(*other.active_weights()[:2])
    adapter.merge_with(other, scale=0.5)
    after = adapter.get_weights(*other.active_weights()[:2])
    assert np.allclose(after, before + 0.5 * other.active_weights()[2], atol=1e-6)
    print(f"merge_with(other, 0.5): additive check passed, active {adapter.active_count():,}")

    # 5. Prune the tiny gradient entries; their weights read back as exactly 0.
    dropped = adapter.optimize(tolerance=1e-3)
    print(f"optimize(1e-3) dropped {dropped:,} weights: {adapter}")

    # 6. A real OpenVDB file, readable by vdb_print and pyopenvdb.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "q_proj.vdb")
        adapter.save(path)
        loaded = hyprvdb.SparseAdapter.load(path)
        same = all(np.array_equal(x, y) for x, y in
                   zip(adapter.active_weights(), loaded.active_weights()))
        print(f"save/load {os.path.getsize(path) / 1e6:.2f} MB .vdb: identical = {same}")
        assert same

    # 7. What the same weights cost elsewhere.
    active = adapter.active_count()
    rr, cc, vv = adapter.active_weights()
    csr = adapter.to_scipy("csr") if _has_scipy() else None
    print(f"\nbytes per active weight ({active:,} weights):")
    print(f"  hyprvdb SparseAdapter  {adapter.memory_usage() / active:8.1f}")
    if csr is not None:
        csr32 = csr.data.nbytes + csr.indices.astype(np.int32).nbytes + csr.indptr.astype(np.int32).nbytes
        print(f"  scipy CSR (int32)      {csr32 / active:8.1f}")
    print(f"  dense float32          {rows * cols * 4 / active:8.1f}")
    print("  python dict            ~171 (bench/memory.py measures it)")

    # 8. Tile-structured sparsity: whole 8x64 blocks, values stored densely.
    tiles = hyprvdb.SparseAdapter(rows, cols, block_shape=(8, 64))
    blocks = rng.choice((rows // 8) * (cols // 64), 327, replace=False)
    br, bc = blocks // (cols // 64), blocks % (cols // 64)
    tiles.batch_update(br * 8, bc * 64, np.ones(len(blocks), np.float32))
    print(f"  tile mode (8x64)       {tiles.memory_usage() / tiles.active_count():8.2f}"
          f"   ({tiles.active_count():,} weights in {len(blocks)} blocks)")


def _has_scipy() -> bool:
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
