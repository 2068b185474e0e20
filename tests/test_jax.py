"""hyprvdb.jax and hyprvdb.model against numpy float64 references.

``delta_matmul``, ``delta_add`` and ``linear`` run with ``impl="jax"`` (gathers and segment
sums), ``impl="ffi"`` (the read path's C++ kernels as XLA FFI targets; skipped where they were
not built) and ``impl="callback"`` (hyprvdb.ops through buffer_callback: the C++ kernels on the
CPU, the CUDA kernel on JAX's stream when JAX runs on a GPU), eagerly, under ``jit``, ``vmap``
and ``grad``. Gradients are checked against the
analytic ones: for ``L = sum(y * g)`` with ``y = scale * x @ dW.T``,
``dL/dx = scale * g @ dW`` and ``dL/dv_j = scale * sum_batch x[..., col_j] * g[..., row_j]``.

Tolerance (float32 sums): ``|got - ref| <= 1e-5 * mag``, ``mag`` being the sum of the
absolute values of the terms of each output entry.

MiniLM: embeddings against PyTorch + transformers (within 1e-4; skipped without them), a
zero-valued delta against none, and a delta on one layer against the same model with that
layer's dense weight changed by the delta (within 1e-5).
"""

from __future__ import annotations


import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import hyprvdb.jax as hj  # noqa: E402
from conftest import random_coo  # noqa: E402

IMPLS = ["jax", "ffi", "callback"]  # on a GPU, "callback" is the CUDA kernel


@pytest.fixture(params=IMPLS)
def impl(request):
    if request.param == "ffi" and not hj.ffi_available():
        pytest.skip("hyprvdb's XLA FFI targets are not built (or JAX does not run on the CPU)")
    return request.param


# ----------------------------------------------------------------------------- helpers
def dense_of(rows, cols, vals, shape):
    d = np.zeros(shape, np.float64)
    np.add.at(d, (rows, cols), np.asarray(vals, np.float32).astype(np.float64))
    return d


def make_delta(rng, shape, density, capacity=None):
    rows, cols, vals = random_coo(rng, shape, density)
    d = hj.SparseDelta.from_coo(rows, cols, vals, shape, capacity=capacity)
    return d, dense_of(rows, cols, vals, shape)


def f64(a):
    return np.asarray(a, np.float32).astype(np.float64)


def assert_close(got, ref, mag, what, rtol=1e-5):
    got = np.asarray(got)
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite entries"
    err = np.abs(got.astype(np.float64) - ref)
    tol = rtol * mag
    bad = err > tol
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} entries out of tolerance, "
                             f"e.g. at {i}: {got[i]!r} vs {ref[i]!r} (err {err[i]:.3g}, tol "
                             f"{tol[i]:.3g})")


def ref_mm(x, dW, scale):
    """(reference, magnitude) of scale * x @ dW.T for x of any leading shape."""
    x = f64(x)
    return scale * x @ dW.T, abs(scale) * np.abs(x) @ np.abs(dW).T


def ref_grads(x, g, rows, cols, dW, scale):
    """Analytic gradients of sum(y * g): (dx, dx magnitude, dv, dv magnitude)."""
    x, g = f64(x), f64(g)
    dx = scale * g @ dW
    dx_mag = abs(scale) * np.abs(g) @ np.abs(dW)
    xb = x.reshape(-1, x.shape[-1])
    gb = g.reshape(-1, g.shape[-1])
    dv = scale * (xb[:, cols] * gb[:, rows]).sum(0)
    dv_mag = abs(scale) * np.abs(xb[:, cols] * gb[:, rows]).sum(0)
    return dx, dx_mag, dv, dv_mag


SHAPES = [(37, 129), (1, 1), (5, 1000), (384, 1536)]


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("lead", [(1,), (16,), (4, 7), ()], ids=str)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_delta_matmul_eager_and_jit(impl, rng, shape, density, lead):
    d, dW = make_delta(rng, shape, density)
    x = rng.standard_normal(lead + (shape[1],)).astype(np.float32)
    scale = -0.7
    ref, mag = ref_mm(x, dW, scale)
    y = hj.delta_matmul(jnp.asarray(x), d, scale, impl=impl)
    assert_close(y, ref, mag, f"eager {impl}")
    f = jax.jit(lambda x, d: hj.delta_matmul(x, d, scale, impl=impl))
    assert_close(f(jnp.asarray(x), d), ref, mag, f"jit {impl}")


def test_impls_agree(rng):
    if not hj.ffi_available():
        pytest.skip("hyprvdb's XLA FFI targets are not built")
    d, dW = make_delta(rng, (384, 1536), 0.01)
    x = jnp.asarray(rng.standard_normal((8, 1536)).astype(np.float32))
    a = np.asarray(hj.delta_matmul(x, d, impl="jax"))
    b = np.asarray(hj.delta_matmul(x, d, impl="ffi"))
    ref, mag = ref_mm(x, dW, 1.0)
    assert_close(b, a.astype(np.float64), 2 * mag, "ffi vs jax")
    assert hj.implementation("auto") == "ffi"


@pytest.mark.parametrize("with_bias", [False, True])
def test_linear(impl, rng, with_bias):
    shape = (37, 129)
    d, dW = make_delta(rng, shape, 0.1)
    x = rng.standard_normal((6, shape[1])).astype(np.float32)
    W = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    b = rng.standard_normal(shape[0]).astype(np.float32) if with_bias else None
    scale = 2.5
    # The reference is full float32: ask for it (JAX's default on a GPU is TF32-class).
    f = jax.jit(lambda x, W, b, d: hj.linear(x, W, d, scale, b, impl=impl, precision="highest"))
    y = f(jnp.asarray(x), jnp.asarray(W), None if b is None else jnp.asarray(b), d)
    ref = f64(x) @ f64(W).T + scale * f64(x) @ dW.T
    mag = np.abs(f64(x)) @ np.abs(f64(W)).T + scale * np.abs(f64(x)) @ np.abs(dW).T
    if b is not None:
        ref, mag = ref + f64(b), mag + np.abs(f64(b))
    assert_close(y, ref, mag, f"linear {impl}")
    # no delta: the plain layer
    y0 = hj.linear(jnp.asarray(x), jnp.asarray(W), None, impl=impl, precision="highest")
    assert_close(y0, f64(x) @ f64(W).T, np.abs(f64(x)) @ np.abs(f64(W)).T, "linear, no delta")


def check_delta_add(impl, rng, shape, lead, scale=-0.6):
    """y + scale * x @ dW.T, eagerly and under jit with a traced scale; y holds random values
    (the kernel must add to them) and stays usable (the alias does not clobber a y the caller
    still holds)."""
    d, dW = make_delta(rng, shape, 0.01)
    x = rng.standard_normal(lead + (shape[1],)).astype(np.float32)
    y0 = rng.standard_normal(lead + (shape[0],)).astype(np.float32)
    ref, mag = ref_mm(x, dW, scale)
    y = jnp.asarray(y0)
    assert_close(hj.delta_add(y, jnp.asarray(x), d, scale, impl=impl), ref + f64(y0),
                 mag + np.abs(f64(y0)), f"eager {impl}")
    f = jax.jit(lambda y, x, d, s: hj.delta_add(y, x, d, s, impl=impl))
    assert_close(f(y, jnp.asarray(x), d, jnp.float32(scale)), ref + f64(y0),
                 mag + np.abs(f64(y0)), f"jit, traced scale ({impl})")
    np.testing.assert_array_equal(np.asarray(y), y0)
    m = jax.jit(lambda x, d: hj.delta_matmul(x, d, scale, impl=impl))
    assert_close(m(jnp.asarray(x), d), ref, mag, f"delta_matmul, jit ({impl})")


@pytest.mark.parametrize("lead", [(1,), (40,), (3, 11), ()], ids=str)
@pytest.mark.parametrize("shape", [(37, 129), (384, 1536), (1536, 384)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_delta_add(impl, rng, shape, lead):
    check_delta_add(impl, rng, shape, lead)


def test_delta_add_grad_and_vmap(impl, rng):
    shape = (37, 129)
    rows, cols, vals = random_coo(rng, shape, 0.1)
    d = hj.SparseDelta.from_coo(rows, cols, vals, shape)
    r, c = np.asarray(d.row_ids), np.asarray(d.indices)
    dW = dense_of(rows, cols, vals, shape)
    x = rng.standard_normal((5, 129)).astype(np.float32)
    y0 = rng.standard_normal((5, 37)).astype(np.float32)
    g = rng.standard_normal((5, 37)).astype(np.float32)
    scale = 0.8

    def loss(y, x, v, s):
        return jnp.sum(hj.delta_add(y, x, d.with_values(v), s, impl=impl) * g)

    dy, dx, dv, ds = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
        jnp.asarray(y0), jnp.asarray(x), d.values, jnp.float32(scale))
    np.testing.assert_array_equal(np.asarray(dy), g)
    rdx, rdx_mag, rdv, rdv_mag = ref_grads(x, g, r, c, dW, scale)
    assert_close(dx, rdx, rdx_mag, f"dL/dx ({impl})")
    assert_close(dv, rdv, rdv_mag, f"dL/dvalues ({impl})")
    # dL/dscale = sum(g * x @ dW.T)
    prod, pmag = ref_mm(x, dW, 1.0)
    assert_close(np.asarray(ds)[None], np.array([np.sum(f64(g) * prod)]),
                 np.array([np.sum(np.abs(f64(g)) * pmag)]), f"dL/dscale ({impl})")
    # vmap over a stack of (y, x)
    xs = rng.standard_normal((3, 4, 129)).astype(np.float32)
    ys = rng.standard_normal((3, 4, 37)).astype(np.float32)
    got = jax.jit(jax.vmap(lambda y, x: hj.delta_add(y, x, d, 1.5, impl=impl)))(
        jnp.asarray(ys), jnp.asarray(xs))
    ref, mag = ref_mm(xs, dW, 1.5)
    assert_close(got, ref + f64(ys), mag + np.abs(f64(ys)), f"vmap ({impl})")


def check_segments(impl, rng, shape, lead, nseg, jit, padded=False):
    """delta_add_segments: every leading index takes its own delta (or none), into random y;
    values and gradients (x, y, every delta's values) against the analytic ones."""
    made = [make_delta(rng, shape, 0.1, capacity=(128 if padded else None))
            for _ in range(nseg)]
    deltas, dense = [m[0] for m in made], [m[1] for m in made]
    seg = rng.integers(-1, nseg, lead).astype(np.int32)
    x = rng.standard_normal(lead + (shape[1],)).astype(np.float32)
    y0 = rng.standard_normal(lead + (shape[0],)).astype(np.float32)
    g = rng.standard_normal(lead + (shape[0],)).astype(np.float32)
    scale = 0.6
    ref, mag = f64(y0), np.abs(f64(y0))
    dx_ref, dx_mag = np.zeros(x.shape), np.zeros(x.shape)
    for i in np.ndindex(*lead):
        if seg[i] >= 0:
            w = dense[seg[i]]
            ref[i] += scale * w @ f64(x)[i]
            mag[i] += scale * np.abs(w) @ np.abs(f64(x)[i])
            dx_ref[i] = scale * f64(g)[i] @ w
            dx_mag[i] = scale * np.abs(f64(g)[i]) @ np.abs(w)

    def f(y, x, values):
        ds = [d.with_values(v) for d, v in zip(deltas, values)]
        return hj.delta_add_segments(y, x, ds, seg, scale, impl=impl)

    fn = jax.jit(f) if jit else f
    out = fn(jnp.asarray(y0), jnp.asarray(x), [d.values for d in deltas])
    assert_close(out, ref, mag, f"delta_add_segments {impl} {shape} {lead}")
    loss = lambda *a: jnp.sum(f(*a) * g)  # noqa: E731
    gy, gx, gv = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(y0), jnp.asarray(x),
                                                  [d.values for d in deltas])
    np.testing.assert_array_equal(np.asarray(gy), g)
    assert_close(gx, dx_ref, dx_mag, "dx")
    for s, d in enumerate(deltas):
        r = np.asarray(d.row_ids)
        c = np.asarray(d.indices)
        mine = (seg == s)[..., None]
        dv_ref = scale * (f64(x)[..., c] * f64(g)[..., r] * mine).reshape(-1, len(c)).sum(0)
        dv_mag = scale * np.abs(f64(x)[..., c] * f64(g)[..., r] * mine).reshape(
            -1, len(c)).sum(0) + 1e-30
        assert_close(gv[s], dv_ref, dv_mag, f"dvalues of delta {s}")


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("lead", [(1,), (9,), (3, 5), (40,)], ids=str)
@pytest.mark.parametrize("nseg", [1, 4])
def test_delta_add_segments(impl, rng, nseg, lead, jit):
    check_segments(impl, rng, (23, 31), lead, nseg, jit)


def test_delta_add_segments_padded_deltas(impl, rng):
    check_segments(impl, rng, (23, 31), (2, 6), 3, True, padded=True)


def test_delta_add_segments_errors():
    d, _ = make_delta(np.random.default_rng(0), (5, 6), 0.5)
    other, _ = make_delta(np.random.default_rng(1), (4, 6), 0.5)
    x, y = jnp.ones((3, 6)), jnp.zeros((3, 5))
    with pytest.raises(ValueError, match=r"segment_ids\[1\] = 2 is not a delta's number "
                                         r"\(-1 \.\. 1\)"):
        hj.delta_add_segments(y, x, [d, d], jnp.array([0, 2, -1]))
    with pytest.raises(ValueError, match=r"segment_ids must be integers of shape \(3,\)"):
        hj.delta_add_segments(y, x, [d], jnp.array([0, 0]))
    with pytest.raises(ValueError, match=r"segment_ids must be integers"):
        hj.delta_add_segments(y, x, [d], jnp.array([0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"deltas\[1\] is \(4, 6\)"):
        hj.delta_add_segments(y, x, [d, other], jnp.array([0, 0, 0]))
    with pytest.raises(ValueError, match="non-empty list"):
        hj.delta_add_segments(y, x, [], jnp.array([0, 0, 0]))
    with pytest.raises(ValueError, match=r"y has shape \(3, 4\)"):
        hj.delta_add_segments(jnp.zeros((3, 4)), x, [d], jnp.array([0, 0, 0]))


def test_delta_add_errors():
    d = hj.SparseDelta.from_coo([1], [2], [3.0], (5, 7))
    with pytest.raises(ValueError, match=r"y has shape \(3, 4\), expected \(3, 5\)"):
        hj.delta_add(jnp.ones((3, 4)), jnp.ones((3, 7)), d)
    with pytest.raises(ValueError, match="x has 6 features"):
        hj.delta_add(jnp.ones((3, 5)), jnp.ones((3, 6)), d)
    with pytest.raises(TypeError, match="delta must be"):
        hj.delta_add(jnp.ones((3, 5)), jnp.ones((3, 7)), "not a delta")
    with pytest.raises(ValueError, match="impl must be"):
        hj.delta_add(jnp.ones((3, 5)), jnp.ones((3, 7)), d, impl="gpu")


def test_empty_delta_and_empty_batch(impl):
    d = hj.SparseDelta.from_coo([], [], [], (5, 7))
    assert d.nnz == 0
    y = hj.delta_matmul(jnp.ones((3, 7)), d, impl=impl)
    np.testing.assert_array_equal(np.asarray(y), np.zeros((3, 5), np.float32))
    d2 = hj.SparseDelta.from_coo([1], [2], [3.0], (5, 7))
    y2 = hj.delta_matmul(jnp.ones((0, 7)), d2, impl=impl)
    assert y2.shape == (0, 5)


# ----------------------------------------------------------------------------- vmap
def test_vmap_over_batch_rows(impl, rng):
    d, dW = make_delta(rng, (37, 129), 0.1)
    x = rng.standard_normal((9, 129)).astype(np.float32)
    f = jax.vmap(lambda xi: hj.delta_matmul(xi, d, 0.5, impl=impl))
    ref, mag = ref_mm(x, dW, 0.5)
    assert_close(f(jnp.asarray(x)), ref, mag, f"vmap over rows ({impl})")
    assert_close(jax.jit(f)(jnp.asarray(x)), ref, mag, f"jit(vmap) over rows ({impl})")


def test_vmap_over_a_stack_of_x(impl, rng):
    d, dW = make_delta(rng, (37, 129), 0.1)
    xs = rng.standard_normal((4, 6, 129)).astype(np.float32)
    f = jax.jit(jax.vmap(lambda x: hj.delta_matmul(x, d, 1.5, impl=impl)))
    ref, mag = ref_mm(xs, dW, 1.5)
    assert_close(f(jnp.asarray(xs)), ref, mag, f"vmap over a stack ({impl})")


def test_vmap_over_a_stack_of_values(impl, rng):
    """Several versions of one adapter (same topology, other values) in one call."""
    rows, cols, vals = random_coo(rng, (37, 129), 0.1)
    d = hj.SparseDelta.from_coo(rows, cols, vals, (37, 129))
    order = np.lexsort((cols, rows))
    stack = rng.standard_normal((3, len(vals))).astype(np.float32)
    x = rng.standard_normal((5, 129)).astype(np.float32)
    f = jax.jit(jax.vmap(lambda v: hj.delta_matmul(jnp.asarray(x), d.with_values(v),
                                                   impl=impl)))
    got = np.asarray(f(jnp.asarray(stack)))
    for s in range(3):
        # values are in the delta's (row-major) order
        dW = dense_of(rows[order], cols[order], stack[s], (37, 129))
        ref, mag = ref_mm(x, dW, 1.0)
        assert_close(got[s], ref, mag, f"vmap over values, version {s} ({impl})")


# ----------------------------------------------------------------------------- grad
@pytest.mark.parametrize("lead", [(1,), (7,), (3, 5)], ids=str)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_grad_x_and_values(impl, rng, lead, jit):
    shape = (37, 129)
    rows, cols, vals = random_coo(rng, shape, 0.1)
    d = hj.SparseDelta.from_coo(rows, cols, vals, shape)
    r, c = np.asarray(d.row_ids), np.asarray(d.indices)
    dW = dense_of(rows, cols, vals, shape)
    x = rng.standard_normal(lead + (shape[1],)).astype(np.float32)
    g = rng.standard_normal(lead + (shape[0],)).astype(np.float32)
    scale = -1.3

    def loss(x, v):
        return jnp.sum(hj.delta_matmul(x, d.with_values(v), scale, impl=impl) * g)

    fn = jax.grad(loss, argnums=(0, 1))
    if jit:
        fn = jax.jit(fn)
    dx, dv = fn(jnp.asarray(x), d.values)
    rdx, rdx_mag, rdv, rdv_mag = ref_grads(x, g, r, c, dW, scale)
    assert_close(dx, rdx, rdx_mag, f"dL/dx ({impl})")
    assert_close(dv, rdv, rdv_mag, f"dL/dvalues ({impl})")


def test_grad_through_vmap_and_linear(impl, rng):
    shape = (37, 129)
    d, dW = make_delta(rng, shape, 0.1)
    r, c = np.asarray(d.row_ids), np.asarray(d.indices)
    W = jnp.asarray((rng.standard_normal(shape) * 0.1).astype(np.float32))
    xs = rng.standard_normal((3, 4, 129)).astype(np.float32)
    g = rng.standard_normal((3, 4, 37)).astype(np.float32)

    def loss(v):
        f = jax.vmap(lambda x: hj.linear(x, W, d.with_values(v), 0.5, impl=impl))
        return jnp.sum(f(jnp.asarray(xs)) * g)

    dv = jax.jit(jax.grad(loss))(d.values)
    _, _, rdv, rdv_mag = ref_grads(xs, g, r, c, dW, 0.5)
    assert_close(dv, rdv, rdv_mag, f"grad of vmap(linear) wrt values ({impl})")


# ----------------------------------------------------------------------------- padding
def test_padded_delta_same_results_and_no_retrace(impl, rng):
    shape = (37, 129)
    rows, cols, vals = random_coo(rng, shape, 0.05)
    cap = len(vals) + 50
    d = hj.SparseDelta.from_coo(rows, cols, vals, shape)
    p = hj.SparseDelta.from_coo(rows, cols, vals, shape, capacity=cap)
    assert p.nnz == cap and d.nnz == len(vals)
    dW = dense_of(rows, cols, vals, shape)
    np.testing.assert_array_equal(np.asarray(hj.to_dense(p)), dW.astype(np.float32))
    x = rng.standard_normal((6, 129)).astype(np.float32)
    g = rng.standard_normal((6, 37)).astype(np.float32)
    traces = []

    def loss(v, delta, x):
        traces.append(1)
        return jnp.sum(hj.delta_matmul(x, delta.with_values(v), impl=impl) * g)

    vg = jax.jit(jax.value_and_grad(loss))
    lp, gp = vg(p.values, p, jnp.asarray(x))
    ld, gd = jax.value_and_grad(loss)(d.values, d, jnp.asarray(x))
    ref, mag = ref_mm(x, dW, 1.0)
    assert abs(float(lp) - float((ref * g).sum())) <= 1e-5 * float((mag * np.abs(g)).sum())
    np.testing.assert_allclose(np.asarray(gp)[:d.nnz], np.asarray(gd), rtol=1e-5, atol=1e-6)
    # another step, other topology, same capacity: the jitted function is not traced again
    rows2, cols2, vals2 = random_coo(rng, shape, 0.04)
    p2 = hj.SparseDelta.from_coo(rows2, cols2, vals2, shape, capacity=cap)
    n_traces = len(traces)
    l2, _ = vg(p2.values, p2, jnp.asarray(x))
    assert len(traces) == n_traces, "a new topology with the same capacity was traced again"
    ref2, mag2 = ref_mm(x, dense_of(rows2, cols2, vals2, shape), 1.0)
    assert abs(float(l2) - float((ref2 * g).sum())) <= 1e-5 * float((mag2 * np.abs(g)).sum())


def _grad_values(d, x, g, impl):
    return jax.grad(lambda v: jnp.sum(hj.delta_matmul(jnp.asarray(x), d.with_values(v),
                                                      impl=impl) * g))(d.values)


def test_to_update_drops_padding(impl, rng):
    """to_update of a padded delta is the update of the unpadded one: the padding entries
    (explicit zeros at the end of the last row) are not weights of the adapter."""
    shape = (37, 129)
    rows, cols, vals = random_coo(rng, shape, 0.05)
    d = hj.SparseDelta.from_coo(rows, cols, vals, shape)
    p = hj.SparseDelta.from_coo(rows, cols, vals, shape, capacity=len(vals) + 8)
    x = rng.standard_normal((4, 129)).astype(np.float32)
    g = rng.standard_normal((4, 37)).astype(np.float32)
    want = hj.to_update(d, _grad_values(d, x, g, impl))
    got = hj.to_update(p, _grad_values(p, x, g, impl))
    for name, a, b in zip(("rows", "cols", "grads"), got, want):
        assert a.shape == b.shape, (f"to_update of the padded delta gives {a.shape[0]} "
                                    f"entries, the unpadded {b.shape[0]}: {name}")
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)


def test_to_update_feeds_temporal_accumulate(impl, rng):
    try:
        from hyprvdb import _native
        _native.core()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"TemporalAdapter needs hyprvdb._core (OpenVDB): {exc}")
    import hyprvdb
    shape = (37, 129)
    rows, cols, vals = random_coo(rng, shape, 0.05)
    d = hj.SparseDelta.from_coo(rows, cols, vals, shape)
    x = rng.standard_normal((4, 129)).astype(np.float32)
    g = rng.standard_normal((4, 37)).astype(np.float32)
    gv = _grad_values(d, x, g, impl)
    r, c, gr = hj.to_update(d, gv)
    assert (r.dtype, c.dtype, gr.dtype) == (np.int64, np.int64, np.float32)
    h = hyprvdb.TemporalAdapter(*shape)
    h.store_base(rows=rows, cols=cols, values=vals)
    h.accumulate(r, c, -0.1 * gr)
    h.accumulate(r, c, -0.1 * gr)  # two micro-batches sum in the open step
    t = h.commit()
    step = h.delta_at(t).to_dense()
    ref = np.zeros(shape, np.float32)
    ref[r, c] = (-0.1 * gr) + (-0.1 * gr)
    np.testing.assert_allclose(step, ref, rtol=1e-6, atol=1e-9)
    # and the update lies inside the delta's pattern
    pattern = np.zeros(shape, bool)
    pattern[rows, cols] = True
    assert pattern[r, c].all()


# ----------------------------------------------------------------------------- structure
def test_from_coo_sums_duplicates_and_from_adapter(rng):
    d = hj.SparseDelta.from_coo([2, 0, 2], [1, 3, 1], [1.0, 2.0, 0.5], (3, 4), step=9)
    np.testing.assert_array_equal(np.asarray(d.indptr), [0, 1, 1, 2])
    np.testing.assert_array_equal(np.asarray(d.indices), [3, 1])
    np.testing.assert_array_equal(np.asarray(d.values), [2.0, 1.5])
    assert d.step == 9 and d.shape == (3, 4)
    from hyprvdb.snapshot import Snapshot
    rows, cols, vals = random_coo(rng, (37, 129), 0.1)
    s = Snapshot.from_coo(rows, cols, vals, (37, 129), step=4)
    sd = hj.SparseDelta.from_adapter(s)
    assert sd.step == 4
    np.testing.assert_array_equal(np.asarray(hj.to_dense(sd)),
                                  dense_of(rows, cols, vals, (37, 129)).astype(np.float32))
    leaves, treedef = jax.tree_util.tree_flatten(sd)
    assert len(leaves) == 4
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert back.shape == sd.shape
    # the step is metadata, not structure: a newer step does not retrace jitted code
    traces = []

    @jax.jit
    def f(delta):
        traces.append(1)
        return hj.to_dense(delta).sum()

    f(sd)
    f(hj.SparseDelta.from_adapter(s, step=5))
    assert len(traces) == 1


def test_errors():
    d = hj.SparseDelta.from_coo([0], [1], [1.0], (3, 4))
    with pytest.raises(ValueError,
                       match=r"impl must be 'auto', 'ffi', 'callback' or 'jax', got 'cuda'"):
        hj.delta_matmul(jnp.ones((2, 4)), d, impl="cuda")
    with pytest.raises(TypeError, match=r"delta must be a hyprvdb.jax.SparseDelta, got dict"):
        hj.delta_matmul(jnp.ones((2, 4)), {})
    with pytest.raises(ValueError, match=r"x has 5 features, the delta expects 4"):
        hj.delta_matmul(jnp.ones((2, 5)), d)
    with pytest.raises(ValueError, match=r"capacity = 1 is below the 2 entries of the delta"):
        hj.SparseDelta.from_coo([0, 1], [0, 1], [1.0, 2.0], (3, 4), capacity=1)
    with pytest.raises(IndexError, match=r"cols\[1\] = 4 is out of range \(valid: 0..3\)"):
        hj.SparseDelta.from_coo([0, 1], [0, 4], [1.0, 2.0], (3, 4))
    with pytest.raises(ValueError, match=r"rows, cols and values must be 1-D of one length"):
        hj.SparseDelta.from_coo([0, 1], [0], [1.0, 2.0], (3, 4))


# ============================================================================ GPU
def _jax_gpu_with_cupy() -> bool:
    if jax.default_backend() not in ("gpu", "cuda"):
        return False
    from hyprvdb import ops
    return ops.cuda_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _jax_gpu_with_cupy(), reason="needs JAX on a GPU and CuPy")
class TestCudaCallback:
    """On a GPU, impl="auto" is the CUDA kernel launched on JAX's stream (buffer_callback).
    Every impl-parametrized test of this file runs it there too (jit, vmap, grad); these add
    the choice of "auto" and shapes of real layers."""

    def test_auto_is_the_cuda_ffi_target_or_the_callback(self):
        from hyprvdb import _native
        want = "ffi" if _native.cuda_ffi() is not None else "callback"
        assert hj.implementation("auto") == want
        assert hj.kernel_path().startswith("cuda")

    @pytest.mark.parametrize("how", ["callback", "ffi"])
    @pytest.mark.parametrize("lead", [(1,), (16,), (3, 77), (256,), (2, 300)], ids=str)
    @pytest.mark.parametrize("shape", [(384, 1536), (4096, 4096), (4096, 14336)],
                             ids=lambda s: f"{s[0]}x{s[1]}")
    def test_real_layer_shapes(self, rng, shape, lead, how):
        if how == "ffi" and not hj.ffi_available():
            pytest.skip("hyprvdb._cuda_ffi (the CUDA FFI targets) is not built")
        check_delta_add(how, rng, shape, lead, scale=0.9)

    @pytest.mark.parametrize("how", ["callback", "ffi"])
    @pytest.mark.parametrize("lead", [(1,), (32, 40), (1024,)], ids=str)
    def test_mixed_batches_at_real_layer_shapes(self, rng, lead, how):
        if how == "ffi" and not hj.ffi_available():
            pytest.skip("hyprvdb._cuda_ffi (the CUDA FFI targets) is not built")
        check_segments(how, rng, (384, 1536), lead, 8, True)


def test_cuda_ffi_module_exposes_its_targets():
    """hyprvdb._cuda_ffi, where the build found nvcc: it imports without a GPU and holds one
    capsule per CUDA target (what hyprvdb.jax registers for JAX on a GPU)."""
    from hyprvdb import _native
    mod = _native.cuda_ffi()
    if mod is None:
        pytest.skip("hyprvdb._cuda_ffi is not built (no nvcc or jaxlib at build time)")
    for name in ("hyprvdb_delta_accumulate", "hyprvdb_delta_accumulate_segments"):
        assert type(getattr(mod, name)).__name__ == "PyCapsule"


# ============================================================================ MiniLM
TEXTS = ["A man is eating food.",
         "The quick brown fox jumps over the lazy dog near the river bank this morning.",
         "hyprvdb keeps sparse adapters and their history in VDB grids.",
         "ok"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("safetensors", reason="MiniLM.load needs safetensors")
    pytest.importorskip("tokenizers", reason="MiniLM.load needs tokenizers")
    from hyprvdb.serve import MiniLM, default_model_path
    try:
        default_model_path()
    except ImportError as exc:
        pytest.skip(str(exc))
    return MiniLM.load()


@pytest.mark.slow
def test_minilm_matches_pytorch_transformers(minilm):
    torch = pytest.importorskip("torch", reason="the reference needs PyTorch")
    transformers = pytest.importorskip("transformers", reason="the reference needs transformers")
    from hyprvdb.serve import default_model_path
    path = default_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double()
    mask = batch["attention_mask"].unsqueeze(-1).double()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    ref = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    got = minilm.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - ref).max()
    assert err <= 1e-4, f"MiniLM embeddings differ from transformers' by {err:.3g}"


@pytest.mark.slow
def test_minilm_zero_delta_equals_none(minilm, rng):
    deltas = {}
    for name, shape in minilm.linear_shapes().items():
        rows, cols, _ = random_coo(rng, shape, 0.01)
        deltas[name] = hj.SparseDelta.from_coo(rows, cols, np.zeros(len(rows), np.float32),
                                               shape)
    base = minilm.encode(TEXTS)
    with_zero = minilm.encode(TEXTS, deltas)
    np.testing.assert_allclose(with_zero, base, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["layer.2.intermediate.dense", "layer.0.attention.self.query"])
def test_minilm_delta_equals_dense_weight_change(minilm, rng, name):
    from hyprvdb.serve import MiniLM
    shape = minilm.linear_shapes()[name]
    rows, cols, vals = random_coo(rng, shape, 0.01)
    delta = hj.SparseDelta.from_coo(rows, cols, vals * np.float32(0.2), shape)
    scale = 0.8
    with_delta = minilm.encode(TEXTS, {name: delta}, scale=scale)
    params = dict(minilm.params)
    key = f"encoder.{name}.weight"
    params[key] = params[key] + scale * hj.to_dense(delta)
    dense_model = MiniLM(params, minilm.config, minilm.tokenizer)
    ref = dense_model.encode(TEXTS)
    base = minilm.encode(TEXTS)
    moved = np.abs(ref - base).max()
    assert moved > 1e-3, f"the delta barely moves the embeddings ({moved:.3g}): test too weak"
    err = np.abs(with_delta - ref).max()
    assert err <= 1e-5, f"{name}: sparse delta vs dense weight change differ by {err:.3g}"
