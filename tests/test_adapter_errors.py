"""Bad inputs raise the right builtin, with a message that names the argument and shows the
offending value, and change nothing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import hyprvdb
from conftest import assert_f32_identical
from hyprvdb import SparseAdapter, enforce_sparsity, fuse_adapters

F32 = np.float32
NAN, INF = float("nan"), float("inf")


def populated(block_shape=(1, 1)):
    """An 8 x 16 adapter with weights in several places, some small, some large."""
    a = SparseAdapter(8, 16, block_shape=block_shape, name="victim")
    a.batch_update([0, 1, 3, 7, 7, 4], [0, 5, 9, 15, 0, 8], [0.25, -1.5, 3.0, 0.5, -0.75, 2.0])
    return a


def state(a):
    r, c, v = a.active_weights()
    return (a.shape, a.block_shape, a.name, r.copy(), c.copy(), v.copy(), a.to_dense())


def assert_unchanged(a, before):
    after = state(a)
    assert after[:3] == before[:3]
    for x, y in zip(after[3:5], before[3:5]):
        np.testing.assert_array_equal(x, y)
    assert_f32_identical(after[5], before[5], "values after the failed call")
    assert_f32_identical(after[6], before[6], "to_dense after the failed call")


def other_adapter(shape=(8, 16)):
    o = SparseAdapter(*shape)
    o.batch_update([0, 2], [0, 2], [1.0, 2.0])
    return o


# (id, call on the adapter, exception, message pattern)
METHOD_CASES = [
    # --- coordinates out of range: IndexError, checked before anything is written
    ("batch_update row past end", lambda a: a.batch_update([0, 1, 8], [0, 1, 2], [1, 2, 3]),
     IndexError, r"rows\[2\] = 8 is out of range for 8 rows \(valid: 0\.\.7\)"),
    ("batch_update col past end", lambda a: a.batch_update([0, 5], [3, 16], [1, 2]),
     IndexError, r"cols\[1\] = 16 is out of range for 16 columns \(valid: 0\.\.15\)"),
    ("batch_update negative row", lambda a: a.batch_update([2, -1], [0, 0], [1, 2]),
     IndexError, r"rows\[1\] = -1 is out of range"),
    ("batch_update negative col", lambda a: a.batch_update([2], [-3], [1]),
     IndexError, r"cols\[0\] = -3 is out of range"),
    ("batch_update tuples out of range", lambda a: a.batch_update([(0, 0, 1.0), (9, 0, 1.0)]),
     IndexError, r"rows\[1\] = 9 is out of range"),
    ("add_weights out of range", lambda a: a.add_weights([0, 0], [0, 99], [1, 1]),
     IndexError, r"cols\[1\] = 99 is out of range"),
    ("get_weights out of range", lambda a: a.get_weights([0, 8], [0, 0]),
     IndexError, r"rows\[1\] = 8 is out of range"),
    ("are_active out of range", lambda a: a.are_active([0], [-1]),
     IndexError, r"cols\[0\] = -1 is out of range"),
    ("remove_weights out of range", lambda a: a.remove_weights([0, 1, 3], [0, 5, 16]),
     IndexError, r"cols\[2\] = 16 is out of range"),
    ("set_weight out of range", lambda a: a.set_weight(8, 0, 1.0),
     IndexError, r"rows?(\[0\])? = 8 is out of range"),
    ("get_weight negative", lambda a: a.get_weight(0, -1),
     IndexError, r"cols?(\[0\])? = -1 is out of range"),
    ("is_active out of range", lambda a: a.is_active(100, 0),
     IndexError, r"rows?(\[0\])? = 100 is out of range"),
    ("remove_weight out of range", lambda a: a.remove_weight(0, 16),
     IndexError, r"cols?(\[0\])? = 16 is out of range"),
    ("contains out of range", lambda a: (8, 0) in a,
     IndexError, r"rows?(\[0\])? = 8 is out of range"),
    ("uint64 beyond int64", lambda a: a.batch_update(np.array([2**63], np.uint64), [0], [1]),
     IndexError, r"rows.*9223372036854775808"),
    ("python int beyond int64", lambda a: a.set_weight(2**70, 0, 1.0),
     IndexError, r"rows?.*1180591620717411303424"),
    # --- mismatched lengths and shapes: ValueError
    ("rows vs cols length", lambda a: a.batch_update([0, 1], [0], [1, 2]),
     ValueError, r"rows and cols must have the same length, got 2 and 1"),
    ("rows vs values length", lambda a: a.batch_update([0, 1], [0, 1], [1.0]),
     ValueError, r"rows and values must have the same length, got 2 and 1"),
    ("rows vs deltas length", lambda a: a.add_weights([0], [0], [1.0, 2.0]),
     ValueError, r"rows and deltas must have the same length, got 1 and 2"),
    ("get_weights lengths", lambda a: a.get_weights([0, 1, 2], [0]),
     ValueError, r"rows and cols must have the same length, got 3 and 1"),
    ("are_active lengths", lambda a: a.are_active([0], [0, 1]),
     ValueError, r"rows and cols must have the same length, got 1 and 2"),
    ("remove_weights lengths", lambda a: a.remove_weights([0, 1], [0]),
     ValueError, r"rows and cols must have the same length, got 2 and 1"),
    ("two-dimensional rows", lambda a: a.batch_update([[0, 1]], [0, 1], [1, 2]),
     ValueError, r"rows must be one-dimensional, got shape \(1, 2\)"),
    ("two-dimensional values", lambda a: a.batch_update([0], [0], [[1.0]]),
     ValueError, r"values must be one-dimensional, got shape \(1, 1\)"),
    ("tuple of two", lambda a: a.batch_update([(0, 0, 1.0), (1, 2)]),
     ValueError, r"updates\[1\] must be a \(row, col, value\) tuple, got \(1, 2\)"),
    ("updates array shape", lambda a: a.batch_update(np.zeros((2, 2), np.int64)),
     ValueError, r"shape \(n, 3\), got \(2, 2\)"),
    # --- wrong kinds of coordinates: TypeError
    ("float rows", lambda a: a.batch_update([0.0, 1.0], [0, 1], [1, 2]),
     TypeError, r"rows must hold integers, got dtype float64"),
    ("float cols", lambda a: a.get_weights([0], np.array([1.0], np.float32)),
     TypeError, r"cols must hold integers, got dtype float32"),
    ("bool rows", lambda a: a.batch_update([True], [0], [1]),
     TypeError, r"rows must hold integers, got dtype bool"),
    ("complex rows", lambda a: a.remove_weights([1j], [0]),
     TypeError, r"rows must hold integers, got dtype complex128"),
    ("str cols", lambda a: a.are_active([0], ["1"]),
     TypeError, r"cols must hold integers, got dtype <U1"),
    ("None rows", lambda a: a.add_weights([None], [0], [1.0]),
     TypeError, r"rows must hold integers, got dtype object"),
    ("float row scalar", lambda a: a.set_weight(1.0, 0, 1.0),
     TypeError, r"row must be an int, got float 1\.0"),
    ("bool col scalar", lambda a: a.get_weight(0, True),
     TypeError, r"col must be an int, got bool True"),
    ("float in tuples", lambda a: a.batch_update([(0, 0, 1.0), (0.5, 1, 1.0)]),
     TypeError, r"rows must hold integers, got dtype float64"),
    # --- wrong kinds of values: TypeError
    ("complex values", lambda a: a.batch_update([0], [0], [1 + 2j]),
     TypeError, r"values must hold real numbers, got dtype complex128"),
    ("str values", lambda a: a.batch_update([0], [0], ["1.5"]),
     TypeError, r"values must hold real numbers, got dtype <U3"),
    ("bool values", lambda a: a.batch_update([0], [0], [True]),
     TypeError, r"values must hold real numbers, got dtype bool"),
    ("None values", lambda a: a.batch_update([0], [0], [None]),
     TypeError, r"values must hold real numbers, got dtype object"),
    ("complex deltas", lambda a: a.add_weights([0], [0], np.array([1j])),
     TypeError, r"deltas must hold real numbers, got dtype complex128"),
    ("str value scalar", lambda a: a.set_weight(0, 0, "1"),
     TypeError, r"value must be a real number, got str '1'"),
    ("complex value scalar", lambda a: a.set_weight(0, 0, 1j),
     TypeError, r"value must be a real number, got complex 1j"),
    ("bool value scalar", lambda a: a.set_weight(0, 0, True),
     TypeError, r"value must be a real number, got bool True"),
    ("rows only", lambda a: a.batch_update([0], [0]),
     TypeError, r"pass rows, cols and values"),
    ("not a sequence", lambda a: a.batch_update(5),
     TypeError, r"updates must be a sequence of \(row, col, value\) tuples, got int"),
    # --- NaN and infinity refused by default: ValueError
    ("nan value", lambda a: a.batch_update([0, 1], [0, 1], [1.0, NAN]),
     ValueError, r"values\[1\] = .*nan.* is not finite.*allow_nonfinite=True"),
    ("inf value", lambda a: a.batch_update([0], [1], np.array([INF], F32)),
     ValueError, r"values\[0\] = .*inf.* is not finite"),
    ("-inf delta", lambda a: a.add_weights([0, 0], [1, 2], [0.0, -INF]),
     ValueError, r"deltas\[1\] = .*-inf.* is not finite"),
    ("nan value scalar", lambda a: a.set_weight(0, 0, NAN),
     ValueError, r"value = nan is not finite"),
    ("inf value scalar", lambda a: a.set_weight(0, 0, np.float32(INF)),
     ValueError, r"value = inf is not finite"),
    ("float64 beyond float32", lambda a: a.batch_update([0, 0], [0, 1], [1.0, 3.5e38]),
     ValueError, r"values\[1\] = .*3\.5e\+38.* is not finite \(overflows float32\)"),
    ("float64 beyond float32 scalar", lambda a: a.set_weight(0, 0, -1e39),
     ValueError, r"values?(\[0\])? = .*-1e\+39.* is not finite \(overflows float32\)"),
    ("sum overflows float32", lambda a: a.add_weights([3, 3], [9, 9], [3e38, 3e38]),
     ValueError, r"not finite"),
    # --- tolerance
    ("negative tolerance", lambda a: a.optimize(-1),
     ValueError, r"tolerance must be >= 0, got -1"),
    ("nan tolerance", lambda a: a.optimize(NAN), ValueError, r"tolerance = nan is not finite"),
    ("inf tolerance", lambda a: a.optimize(INF), ValueError, r"tolerance = inf is not finite"),
    ("str tolerance", lambda a: a.optimize("0.5"),
     TypeError, r"tolerance must be a real number, got str '0\.5'"),
    ("bool tolerance", lambda a: a.optimize(True),
     TypeError, r"tolerance must be a real number, got bool True"),
    ("None tolerance", lambda a: a.optimize(None),
     TypeError, r"tolerance must be a real number, got NoneType None"),
    # --- k
    ("negative k", lambda a: a.top_k(-1), ValueError, r"k must be >= 0, got -1"),
    ("float k", lambda a: a.top_k(1.5), TypeError, r"k must be an int, got float 1\.5"),
    ("bool k", lambda a: a.top_k(True), TypeError, r"k must be an int, got bool True"),
    ("None k", lambda a: a.top_k(None), TypeError, r"k must be an int, got NoneType None"),
    ("str k", lambda a: a.top_k("3"), TypeError, r"k must be an int, got str '3'"),
    # --- enforce_sparsity, in place: a refused call must not have done half its work
    ("enforce bad top_k in place",
     lambda a: enforce_sparsity(a, 0.6, top_k=-1, in_place=True),
     ValueError, r"(top_)?k must be >= 0, got -1"),
    ("enforce float top_k in place",
     lambda a: enforce_sparsity(a, 0.6, top_k=2.0, in_place=True),
     TypeError, r"(top_)?k must be an int, got float 2\.0"),
    ("enforce negative threshold", lambda a: enforce_sparsity(a, -0.5, in_place=True),
     ValueError, r"(threshold|tolerance) must be >= 0, got -0\.5"),
    ("enforce nan threshold", lambda a: enforce_sparsity(a, NAN),
     ValueError, r"(threshold|tolerance) = nan is not finite"),
    # --- merge_with
    ("merge other shape", lambda a: a.merge_with(SparseAdapter(8, 17)),
     ValueError, r"other has shape \(8, 17\), expected \(8, 16\)"),
    ("merge other kind", lambda a: a.merge_with({(0, 0): 1.0}),
     TypeError, r"other must be a SparseAdapter, got dict"),
    ("merge nan scale", lambda a: a.merge_with(other_adapter(), NAN),
     ValueError, r"scale = nan is not finite"),
    ("merge str scale", lambda a: a.merge_with(other_adapter(), "2"),
     TypeError, r"scale must be a real number, got str '2'"),
    ("merge complex scale", lambda a: a.merge_with(other_adapter(), 2j),
     TypeError, r"scale must be a real number, got complex 2j"),
    ("merge overflows float32", lambda a: a.merge_with(other_adapter(), 3e38),
     ValueError, r"not finite"),
    # --- conversions and files
    ("to_scipy format", lambda a: a.to_scipy("dok"),
     ValueError, r"format must be one of 'csr', 'csc', 'coo', got 'dok'"),
    ("save path kind", lambda a: a.save(123),
     TypeError, r"path must be a str or os\.PathLike, got int"),
    ("save missing folder", lambda a: a.save("/nonexistent-hyprvdb-dir/x.vdb"),
     FileNotFoundError, r"folder '/nonexistent-hyprvdb-dir' does not exist"),
]


@pytest.mark.parametrize("block_shape", [(1, 1), (2, 4)], ids=["unstructured", "tile"])
@pytest.mark.parametrize("call, exc, pattern", [c[1:] for c in METHOD_CASES],
                         ids=[c[0] for c in METHOD_CASES])
def test_bad_input_raises_and_changes_nothing(block_shape, call, exc, pattern):
    a = populated(block_shape)
    before = state(a)
    with pytest.raises(exc, match=pattern):
        call(a)
    assert_unchanged(a, before)
    a.set_weight(2, 2, 1.0)  # the adapter still works
    assert a.get_weight(2, 2) == 1.0


def test_argument_errors_are_plain_builtins():
    # The library raises plain builtins for bad arguments: no library-specific subclass that
    # callers would have to know about, and nothing from the binding layer.
    a = populated()
    for call, exc in [(lambda: a.set_weight(99, 0, 1.0), IndexError),
                      (lambda: a.batch_update([0.5], [0], [1]), TypeError),
                      (lambda: a.batch_update([0], [0], [NAN]), ValueError)]:
        with pytest.raises(exc) as info:
            call()
        assert type(info.value) is exc


# ----------------------------------------------------------------------------- constructors
CONSTRUCTOR_CASES = [
    ("zero rows", (0, 4), {}, ValueError, r"rows must be positive, got 0"),
    ("negative cols", (4, -1), {}, ValueError, r"cols must be positive, got -1"),
    ("float rows", (2.0, 4), {}, TypeError, r"rows must be an int, got float 2\.0"),
    ("numpy float cols", (2, np.float64(4)), {}, TypeError, r"cols must be an int, got float"),
    ("bool rows", (True, 4), {}, TypeError, r"rows must be an int, got bool True"),
    ("str cols", (4, "4"), {}, TypeError, r"cols must be an int, got str '4'"),
    ("None rows", (None, 4), {}, TypeError, r"rows must be an int, got NoneType None"),
    ("rows too large", (2**31, 4), {}, ValueError,
     r"rows must be in 1\.\.2147483647, got 2147483648"),
    ("cols far too large", (4, 2**63), {}, ValueError, r"cols.*9223372036854775808"),
    ("block does not divide", (4, 4), {"block_shape": (3, 1)}, ValueError,
     r"block_shape \(3, 1\) must divide the shape \(4, 4\)"),
    ("block zero", (4, 4), {"block_shape": (0, 1)}, ValueError,
     r"block_shape\[0\] must be positive, got 0"),
    ("block negative", (4, 4), {"block_shape": (1, -2)}, ValueError,
     r"block_shape\[1\] must be positive, got -2"),
    ("block float", (4, 4), {"block_shape": (1.0, 1)}, TypeError,
     r"block_shape\[0\] must be an int, got float 1\.0"),
    ("block triple", (4, 4), {"block_shape": (1, 1, 1)}, TypeError,
     r"block_shape must be a pair of ints, got \(1, 1, 1\)"),
    ("block int", (4, 4), {"block_shape": 2}, TypeError,
     r"block_shape must be a pair of ints, got 2"),
    ("block None", (4, 4), {"block_shape": None}, TypeError,
     r"block_shape must be a pair of ints, got None"),
    ("block too large", (2048, 1024), {"block_shape": (2048, 1024)}, ValueError,
     r"block_shape \(2048, 1024\).*at most 2\*\*20 weights"),
    ("empty name", (4, 4), {"name": ""}, ValueError, r"name must be a non-empty str, got ''"),
    ("name of the wrong kind", (4, 4), {"name": 5}, TypeError, r"name must be a .*str, got .*5"),
]


@pytest.mark.parametrize("args, kwargs, exc, pattern", [c[1:] for c in CONSTRUCTOR_CASES],
                         ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_bad_constructor_arguments(args, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        SparseAdapter(*args, **kwargs)


# ----------------------------------------------------------------------------- factories
FACTORY_CASES = [
    # from_dense
    ("dense 1-D", lambda: SparseAdapter.from_dense(np.ones(3)), ValueError,
     r"dense must be two-dimensional, got shape \(3,\)"),
    ("dense 3-D", lambda: SparseAdapter.from_dense(np.ones((2, 2, 2))), ValueError,
     r"dense must be two-dimensional, got shape \(2, 2, 2\)"),
    ("dense bool", lambda: SparseAdapter.from_dense(np.ones((2, 2), bool)), TypeError,
     r"dense must hold real numbers, got dtype bool"),
    ("dense complex", lambda: SparseAdapter.from_dense(np.ones((2, 2), complex)), TypeError,
     r"dense must hold real numbers, got dtype complex128"),
    ("dense str", lambda: SparseAdapter.from_dense([["a", "b"]]), TypeError,
     r"dense must hold real numbers, got dtype <U1"),
    ("dense nan", lambda: SparseAdapter.from_dense([[1.0, NAN]]), ValueError,
     r"dense\[0, 1\] = .*nan.* is not finite.*allow_nonfinite=True"),
    ("dense inf", lambda: SparseAdapter.from_dense(np.array([[1.0], [-INF]], F32)), ValueError,
     r"dense\[1, 0\] = .*-inf.* is not finite"),
    ("dense beyond float32", lambda: SparseAdapter.from_dense([[0.0, 0.0], [0.0, 1e39]]),
     ValueError, r"dense\[1, 1\] = .*1e\+39.* is not finite"),
    ("dense empty", lambda: SparseAdapter.from_dense(np.zeros((0, 3))), ValueError,
     r"rows must be positive, got 0"),
    ("dense negative tolerance", lambda: SparseAdapter.from_dense(np.eye(2), tolerance=-0.5),
     ValueError, r"tolerance must be >= 0, got -0\.5"),
    ("dense nan tolerance", lambda: SparseAdapter.from_dense(np.eye(2), tolerance=NAN),
     ValueError, r"tolerance = nan is not finite"),
    ("dense str tolerance", lambda: SparseAdapter.from_dense(np.eye(2), tolerance="0"),
     TypeError, r"tolerance must be a real number, got str '0'"),
    # from_scipy
    ("scipy given ndarray", lambda: SparseAdapter.from_scipy(np.eye(2)), TypeError,
     r"matrix must be a scipy\.sparse matrix, got ndarray"),
    ("scipy given list", lambda: SparseAdapter.from_scipy([[1.0]]), TypeError,
     r"matrix must be a scipy\.sparse matrix, got list"),
    ("scipy complex", lambda: SparseAdapter.from_scipy(sp.csr_matrix(np.eye(2) * 1j)),
     TypeError, r"must hold real numbers, got dtype complex128"),
    ("scipy nan", lambda: SparseAdapter.from_scipy(sp.csr_matrix(np.array([[0, NAN]]))),
     ValueError, r"nan.* is not finite"),
    # from_lora
    ("lora inner mismatch", lambda: SparseAdapter.from_lora(np.ones((2, 4)), np.ones((3, 3)),
                                                            8, 0.5), ValueError,
     r"B has 3 columns but A has 2 rows \(B: \(3, 3\), A: \(2, 4\)\)"),
    ("lora density zero", lambda: SparseAdapter.from_lora(np.ones((2, 4)), np.ones((3, 2)),
                                                          8, 0.0), ValueError,
     r"density must be in \(0, 1\], got 0\.0"),
    ("lora density above one", lambda: SparseAdapter.from_lora(np.ones((2, 4)),
                                                               np.ones((3, 2)), 8, 1.5),
     ValueError, r"density must be in \(0, 1\], got 1\.5"),
    ("lora density nan", lambda: SparseAdapter.from_lora(np.ones((2, 4)), np.ones((3, 2)),
                                                         8, NAN), ValueError,
     r"density = nan is not finite"),
    ("lora alpha inf", lambda: SparseAdapter.from_lora(np.ones((2, 4)), np.ones((3, 2)),
                                                       INF, 0.5), ValueError,
     r"alpha = inf is not finite"),
    ("lora alpha str", lambda: SparseAdapter.from_lora(np.ones((2, 4)), np.ones((3, 2)),
                                                       "8", 0.5), TypeError,
     r"alpha must be a real number, got str '8'"),
    ("lora A 1-D", lambda: SparseAdapter.from_lora(np.ones(4), np.ones((3, 1)), 8, 0.5),
     ValueError, r"A must be two-dimensional, got shape \(4,\)"),
    ("lora B complex", lambda: SparseAdapter.from_lora(np.ones((2, 4)),
                                                       np.ones((3, 2), complex), 8, 0.5),
     TypeError, r"B must hold real numbers, got dtype complex128"),
    ("lora rank zero", lambda: SparseAdapter.from_lora(np.ones((0, 4)), np.ones((3, 0)),
                                                       8, 0.5), ValueError, r"\bA\b.*0"),
    ("lora delta beyond float32",
     lambda: SparseAdapter.from_lora(np.full((1, 2), 1e30), np.full((2, 1), 1e30), 1, 1.0),
     ValueError, r"not finite"),
    # from_dict
    ("dict given list", lambda: SparseAdapter.from_dict([((0, 0), 1.0)]), TypeError,
     r"weights must be a mapping \{\(row, col\): value\}, got list"),
    ("dict key triple", lambda: SparseAdapter.from_dict({(1, 2, 3): 1.0}), TypeError,
     r"weights keys must be \(row, col\) tuples, got \(1, 2, 3\)"),
    ("dict key int", lambda: SparseAdapter.from_dict({5: 1.0}), TypeError,
     r"weights keys must be \(row, col\) tuples, got 5"),
    ("dict empty no shape", lambda: SparseAdapter.from_dict({}), ValueError,
     r"shape is required for an empty mapping"),
    ("dict key out of range", lambda: SparseAdapter.from_dict({(5, 0): 1.0}, shape=(2, 2)),
     IndexError, r"rows\[0\] = 5 is out of range for 2 rows"),
    ("dict negative key", lambda: SparseAdapter.from_dict({(-1, 0): 1.0, (2, 2): 1.0}),
     IndexError, r"rows\[0\] = -1 is out of range"),
    ("dict only negative key", lambda: SparseAdapter.from_dict({(-1, 2): 1.0}),
     IndexError, r"-1"),
    ("dict float key", lambda: SparseAdapter.from_dict({(1.5, 2): 1.0}), TypeError,
     r"1\.5"),
    ("dict bool key", lambda: SparseAdapter.from_dict({(True, 2): 1.0}), TypeError,
     r"True|bool"),
    ("dict str key", lambda: SparseAdapter.from_dict({("a", 2): 1.0}), TypeError, r"'a'"),
    ("dict str value", lambda: SparseAdapter.from_dict({(1, 2): "1.5"}), TypeError,
     r"values? must (hold|be) real numbers?|'1\.5'"),
    ("dict complex value", lambda: SparseAdapter.from_dict({(1, 2): 1j}), TypeError,
     r"(values?|weights).*(complex|1j)"),
    ("dict nan value", lambda: SparseAdapter.from_dict({(1, 2): NAN}), ValueError,
     r"nan.* is not finite"),
    # fuse_adapters
    ("fuse none", lambda: fuse_adapters([]), ValueError,
     r"adapters must hold at least one SparseAdapter, got none"),
    ("fuse not an adapter", lambda: fuse_adapters([SparseAdapter(2, 2), "x"]), TypeError,
     r"adapters\[1\] must be a SparseAdapter, got str"),
    ("fuse scales length", lambda: fuse_adapters([SparseAdapter(2, 2)], [1.0, 2.0]),
     ValueError, r"scales must have one entry per adapter: 1 adapters, 2 scales"),
    ("fuse shapes", lambda: fuse_adapters([SparseAdapter(2, 2), SparseAdapter(2, 3)]),
     ValueError, r"adapters\[1\] has shape \(2, 3\), adapters\[0\] has \(2, 2\)"),
    ("fuse str scale", lambda: fuse_adapters([SparseAdapter(2, 2)], ["x"]), TypeError,
     r"scale must be a real number, got str 'x'"),
    ("fuse nan scale", lambda: fuse_adapters([SparseAdapter(2, 2)], [NAN]), ValueError,
     r"scale = nan is not finite"),
    # enforce_sparsity, load
    ("enforce not an adapter", lambda: enforce_sparsity("x"), TypeError,
     r"adapter must be a SparseAdapter, got str"),
    ("load path kind", lambda: SparseAdapter.load(3.5), TypeError,
     r"path must be a str or os\.PathLike, got float"),
]


@pytest.mark.parametrize("call, exc, pattern", [c[1:] for c in FACTORY_CASES],
                         ids=[c[0] for c in FACTORY_CASES])
def test_bad_factory_arguments(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_fuse_adapters_failure_leaves_inputs_unchanged():
    a, b = populated(), populated((2, 4))
    before = state(a), state(b)
    with pytest.raises(TypeError):
        fuse_adapters([a, b], [1.0, "bad"])
    with pytest.raises(ValueError):
        fuse_adapters([a, b], [1.0, NAN])
    assert_unchanged(a, before[0])
    assert_unchanged(b, before[1])


# ----------------------------------------------------------------------------- non-finite
def test_allow_nonfinite_stores_nan_and_inf():
    a = SparseAdapter(3, 3, allow_nonfinite=True)
    a.batch_update([0, 1], [0, 1], [NAN, INF])
    a.set_weight(2, 2, -INF)
    a.add_weights([0], [1], [1e39])  # float64 beyond float32 becomes inf when allowed
    v = a.get_weights([0, 1, 2, 0], [0, 1, 2, 1])
    assert np.isnan(v[0]) and v[1] == np.inf and v[2] == -np.inf and v[3] == np.inf
    d = a.to_dense()
    assert np.isnan(d[0, 0]) and d[1, 1] == np.inf
    assert a.active_count() == 4


def test_allow_nonfinite_in_tile_mode_and_factories():
    t = SparseAdapter(2, 4, block_shape=(2, 2), allow_nonfinite=True)
    t.set_weight(1, 3, NAN)
    assert t.active_count() == 4 and np.isnan(t.get_weight(1, 3)) and t.get_weight(0, 2) == 0
    d = SparseAdapter.from_dense([[NAN, 0.0], [0.0, INF]], allow_nonfinite=True)
    assert d.active_count() == 2
    m = SparseAdapter.from_dict({(0, 0): NAN}, allow_nonfinite=True)
    assert np.isnan(m.get_weight(0, 0))
    s = SparseAdapter.from_scipy(sp.csr_matrix(np.array([[0, INF]])), allow_nonfinite=True)
    assert s.get_weight(0, 1) == np.inf


def test_default_adapter_refuses_nonfinite_from_every_writer():
    a = populated()
    before = state(a)
    writers = [
        lambda: a.set_weight(0, 0, NAN),
        lambda: a.batch_update([0], [0], [INF]),
        lambda: a.batch_update([(0, 0, NAN)]),
        lambda: a.add_weights([0], [0], [-INF]),
    ]
    for w in writers:
        with pytest.raises(ValueError, match="not finite"):
            w()
    assert_unchanged(a, before)


def test_merge_nonfinite_into_finite_adapter_is_refused():
    src = SparseAdapter(8, 16, allow_nonfinite=True)
    src.set_weight(1, 1, NAN)
    a = populated()
    before = state(a)
    with pytest.raises(ValueError, match="not finite"):
        a.merge_with(src)
    assert_unchanged(a, before)
    with pytest.raises(ValueError, match="not finite"):
        fuse_adapters([a, src])


def test_hyprvdb_error_is_not_used_for_arguments():
    # HyprVDBError is for files; argument errors are builtins only.
    with pytest.raises(ValueError) as info:
        SparseAdapter(0, 1)
    assert not isinstance(info.value, hyprvdb.HyprVDBError)
