// The read path's CPU kernels: the per-thread functions of kernels/*.cuh compiled by g++ and
// run over rows with OpenMP. Links no OpenVDB, so serving machines can load it.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../kernels/history.cuh"
#include "../../kernels/sparse_ops.cuh"
#include "cpu/history.h"
#include "cpu/linear.h"
#ifdef HYPRVDB_NANOVDB
#include "../../kernels/nanovdb_index.cuh"
#endif
#ifdef HYPRVDB_JAX_FFI
#include "cpu/jax_ffi.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;
using hyprvdb_cpu::Csr;
using hyprvdb_cpu::linear;

namespace {

template <typename T>
using In1 = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <typename T>
using In2 = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <typename T>
using Out2 = nb::ndarray<T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <typename T>
using Out1 = nb::ndarray<T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

Csr csr_of(In1<int32_t> indptr, In1<int32_t> indices, In1<float> data) {
    if (indptr.shape(0) < 1) throw nb::value_error("indptr must hold rows + 1 entries");
    if (indices.shape(0) != data.shape(0))
        throw nb::value_error("indices and data must have the same length");
    return Csr{indptr.data(), indices.data(), data.data(), int(indptr.shape(0) - 1)};
}

// dtype code: 0 float32, 1 float16, 2 bfloat16 (16-bit arrays arrive as uint16 bit patterns).
template <typename F>
void dispatch(int dtype, F&& f) {
    switch (dtype) {
        case 0: f(float{}); break;
        case 1: f(hvdb_half{}); break;
        case 2: f(hvdb_bf16{}); break;
        default: throw nb::value_error("dtype code must be 0 (float32), 1 (float16) or 2 (bfloat16)");
    }
}


// A numpy array that owns a vector (freed with the array).
template <typename T>
nb::ndarray<nb::numpy, T, nb::ndim<1>> to_numpy(std::vector<T>* v) {
    nb::capsule owner(v, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
    return nb::ndarray<nb::numpy, T, nb::ndim<1>>(v->data(), {v->size()}, owner);
}

void same_length(size_t a, size_t b, const char* what) {
    if (a != b)
        throw nb::value_error((std::string(what) + " must have the same length, got " +
                               std::to_string(a) + " and " + std::to_string(b)).c_str());
}

using AnyIn1 = nb::ndarray<nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// A runs array as it is kept: unsigned, 1, 2, 4 or 8 bytes wide.
hyprvdb_cpu::Narrow narrow_of(const AnyIn1& a, const char* name) {
    const nb::dlpack::dtype dt = a.dtype();
    const int width = dt.bits / 8;
    if (dt.code != uint8_t(nb::dlpack::dtype_code::UInt) || dt.lanes != 1 ||
        !(width == 1 || width == 2 || width == 4 || width == 8))
        throw nb::type_error((std::string(name) + " must be an unsigned integer array").c_str());
    return {a.data(), width, a.shape(0)};
}

hyprvdb_cpu::HistoryView history_view(In1<int64_t> base_idx, In1<double> base_val, const AnyIn1& gaps,
                                      const AnyIn1& counts, const AnyIn1& t, In1<float> d,
                                      In1<int64_t> resets, In1<int64_t> tail_idx, In1<int32_t> tail_t,
                                      In1<double> tail_d, In1<uint8_t> tail_reset) {
    same_length(base_idx.shape(0), base_val.shape(0), "base_idx and base_val");
    same_length(gaps.shape(0), counts.shape(0), "gaps and counts");
    same_length(t.shape(0), d.shape(0), "t and d");
    same_length(tail_idx.shape(0), tail_t.shape(0), "tail_idx and tail_t");
    same_length(tail_idx.shape(0), tail_d.shape(0), "tail_idx and tail_d");
    same_length(tail_idx.shape(0), tail_reset.shape(0), "tail_idx and tail_reset");
    return {base_idx.data(), base_val.data(), base_idx.shape(0), narrow_of(gaps, "gaps"),
            narrow_of(counts, "counts"), narrow_of(t, "t"), d.data(),
            hyprvdb_cpu::ResetFlags{resets.data(), resets.shape(0)}, tail_idx.data(), tail_t.data(),
            tail_d.data(), tail_reset.data(), tail_idx.shape(0)};
}

// The runs' change counts add up to the changes (checked once per whole-history pass).
void check_counts(const hyprvdb_cpu::HistoryView& h) {
    int64_t total = 0;
    for (size_t i = 0; i < h.n_runs(); ++i) total += h.counts[i];
    if (total != int64_t(h.t.n)) throw nb::value_error("counts must add up to the number of changes");
}

}  // namespace

NB_MODULE(_cpu, m) {
    m.doc() = "hyprvdb's read-path kernels on the CPU (the kernels/*.cuh logic, compiled by g++)";
    m.attr("NB") = HVDB_NB;
    m.attr("ROWS_BATCH_MAX") = HVDB_ROWS_BATCH_MAX;
    m.attr("STAGED_SMEM") = HVDB_STAGED_SMEM;
    m.attr("STAGED_WARPS") = HVDB_STAGED_WARPS;
    // The float32 delta product's AVX2 kernel: whether it is on (and switch it, for tests that
    // check the portable kernels against it; it cannot be switched on without CPU support).
    m.def("simd", [](std::optional<bool> enable) {
        if (enable) hyprvdb_cpu::simd_enabled() = *enable && hyprvdb_cpu::avx2_supported();
        return hyprvdb_cpu::simd_enabled().load();
    }, nb::arg("enable") = nb::none());

#ifdef HYPRVDB_JAX_FFI
    // XLA FFI handlers for hyprvdb.jax (jax.ffi.register_ffi_target takes these capsules).
    m.def("ffi_targets", []() {
        nb::dict d;
        d["hyprvdb_delta_matmul_t"] = nb::capsule(hyprvdb_ffi::delta_matmul_t());
        d["hyprvdb_delta_values_grad"] = nb::capsule(hyprvdb_ffi::delta_values_grad());
        d["hyprvdb_delta_accumulate"] = nb::capsule(hyprvdb_ffi::delta_accumulate());
        d["hyprvdb_delta_accumulate_segments"] =
            nb::capsule(hyprvdb_ffi::delta_accumulate_segments());
        return d;
    });
#endif

    // y += scale * x @ dW.T  (x: batch x k, y: batch x rows, both of one dtype)
    m.def("delta_matmul",
          [](In1<int32_t> indptr, In1<int32_t> indices, In1<float> data, nb::ndarray<nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> x,
             nb::ndarray<nb::ndim<2>, nb::c_contig, nb::device::cpu> y, int dtype, float scale) {
              Csr c = csr_of(indptr, indices, data);
              if (y.shape(1) != size_t(c.rows) || y.shape(0) != x.shape(0))
                  throw nb::value_error("y must have shape (batch, rows)");
              nb::gil_scoped_release nogil;
              dispatch(dtype, [&](auto tag) {
                  using T = decltype(tag);
                  linear<T>(c, static_cast<const T*>(x.data()), (long long)x.shape(1), int(x.shape(0)),
                            nullptr, 0, 0, nullptr, static_cast<T*>(y.data()), (long long)y.shape(1),
                            scale, true);
              });
          },
          "indptr"_a, "indices"_a, "data"_a, "x"_a, "y"_a, "dtype"_a, "scale"_a);

    // The CUDA staged kernel's per-lane program (linear.h linear_staged_lanes), for tests:
    // y += scale * x @ dW.T over batch tiles of bt rows.
    m.def("delta_matmul_staged",
          [](In1<int32_t> indptr, In1<int32_t> indices, In1<float> data, nb::ndarray<nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> x,
             nb::ndarray<nb::ndim<2>, nb::c_contig, nb::device::cpu> y, int dtype, float scale, int bt) {
              Csr c = csr_of(indptr, indices, data);
              if (y.shape(1) != size_t(c.rows) || y.shape(0) != x.shape(0))
                  throw nb::value_error("y must have shape (batch, rows)");
              dispatch(dtype, [&](auto tag) {
                  using T = decltype(tag);
                  hyprvdb_cpu::linear_staged_lanes<T>(
                      c, static_cast<const T*>(x.data()), (long long)x.shape(1), int(x.shape(0)),
                      int(x.shape(1)), bt, static_cast<T*>(y.data()), (long long)y.shape(1), scale);
              });
          },
          "indptr"_a, "indices"_a, "data"_a, "x"_a, "y"_a, "dtype"_a, "scale"_a, "bt"_a);

    // The choice by shape of kernels/sparse_ops.cuh (the rule the CUDA launches follow).
    m.def("staged_batch_tile", &staged_batch_tile, "k"_a, "itemsize"_a, "smem_bytes"_a, "batch"_a);
    m.def("staged_row_groups", &staged_row_groups, "rows"_a, "batch"_a, "bt"_a, "warps"_a, "sms"_a);
    m.def("product_choice", &product_choice, "rows"_a, "k"_a, "nnz"_a, "batch"_a, "itemsize"_a,
          "bt"_a, "row_groups"_a, "with_w"_a);

    // A mixed batch: y[b] += scale * x[b] @ dW_seg[b].T over nseg stacked deltas (linear.h);
    // method 0: the tuned kernels per segment, 1: the CUDA row kernel's per-thread logic,
    // 2: the CUDA staged kernel's, lane by lane, over tiles of bt rows.
    m.def("delta_matmul_segments",
          [](In1<int32_t> indptr, In1<int32_t> indices, In1<float> data, int rows,
             In1<int32_t> seg, nb::ndarray<nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> x,
             nb::ndarray<nb::ndim<2>, nb::c_contig, nb::device::cpu> y, int dtype, float scale,
             int method, int bt) {
              const size_t per = size_t(rows) + 1;
              if (rows < 0 || indptr.shape(0) % per != 0)
                  throw nb::value_error("indptr must hold nseg * (rows + 1) entries");
              const int nseg = int(indptr.shape(0) / per);
              if (seg.shape(0) != x.shape(0) || y.shape(0) != x.shape(0) || y.shape(1) != size_t(rows))
                  throw nb::value_error("segment_ids must have batch entries and y (batch, rows)");
              nb::gil_scoped_release nogil;
              dispatch(dtype, [&](auto tag) {
                  using T = decltype(tag);
                  if (method == 2) {
                      hyprvdb_cpu::linear_segments_staged_lanes<T>(
                          indptr.data(), indices.data(), data.data(), rows, nseg, seg.data(),
                          static_cast<const T*>(x.data()), (long long)x.shape(1),
                          int(x.shape(0)), static_cast<T*>(y.data()), (long long)y.shape(1),
                          scale, bt);
                      return;
                  }
                  auto run = method == 1 ? hyprvdb_cpu::linear_segments_tiles<T>
                                         : hyprvdb_cpu::linear_segments<T>;
                  run(indptr.data(), indices.data(), data.data(), rows, nseg, seg.data(),
                      static_cast<const T*>(x.data()), (long long)x.shape(1), int(x.shape(0)),
                      static_cast<T*>(y.data()), (long long)y.shape(1), scale);
              });
          },
          "indptr"_a, "indices"_a, "data"_a, "rows"_a, "segment_ids"_a, "x"_a, "y"_a, "dtype"_a,
          "scale"_a, "method"_a = 0, "bt"_a = 8);

    // The tiles of a mixed batch (linear.h segment_tiles): (order, tiles as (n, 3) int32).
    m.def("segment_tiles", [](In1<int32_t> seg, int nseg, int nb) {
        std::vector<int32_t> order, tiles;
        hyprvdb_cpu::segment_tiles(seg.data(), int(seg.shape(0)), nseg, nb, order, tiles);
        auto* o = new std::vector<int32_t>(std::move(order));
        auto* t = new std::vector<int32_t>(std::move(tiles));
        nb::capsule own_o(o, [](void* p) noexcept { delete static_cast<std::vector<int32_t>*>(p); });
        nb::capsule own_t(t, [](void* p) noexcept { delete static_cast<std::vector<int32_t>*>(p); });
        return nb::make_tuple(
            nb::ndarray<nb::numpy, int32_t, nb::ndim<1>>(o->data(), {o->size()}, own_o),
            nb::ndarray<nb::numpy, int32_t, nb::ndim<2>>(t->data(), {t->size() / 3, 3}, own_t));
    }, "segment_ids"_a, "nseg"_a, "nb"_a);

    // y = x @ W.T + bias + scale * x @ dW.T
    m.def("fused_linear",
          [](nb::ndarray<nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> W, nb::object bias, In1<int32_t> indptr,
             In1<int32_t> indices, In1<float> data, nb::ndarray<nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu> x,
             nb::ndarray<nb::ndim<2>, nb::c_contig, nb::device::cpu> y, int dtype, float scale) {
              Csr c = csr_of(indptr, indices, data);
              if (W.shape(0) != size_t(c.rows) || W.shape(1) != x.shape(1))
                  throw nb::value_error("W must have shape (rows, k)");
              const void* bptr = nullptr;
              if (!bias.is_none()) {
                  auto b = nb::cast<nb::ndarray<nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>>(bias);
                  if (b.shape(0) != size_t(c.rows)) throw nb::value_error("bias must have rows entries");
                  bptr = b.data();
              }
              nb::gil_scoped_release nogil;
              dispatch(dtype, [&](auto tag) {
                  using T = decltype(tag);
                  linear<T>(c, static_cast<const T*>(x.data()), (long long)x.shape(1), int(x.shape(0)),
                            static_cast<const T*>(W.data()), (long long)W.shape(1), int(W.shape(1)),
                            static_cast<const T*>(bptr), static_cast<T*>(y.data()),
                            (long long)y.shape(1), scale, false);
              });
          },
          "W"_a, "bias"_a.none(), "indptr"_a, "indices"_a, "data"_a, "x"_a, "y"_a, "dtype"_a, "scale"_a);

    // W[rows[j], cols[j]] += scale * data[j]
    m.def("merge",
          [](nb::ndarray<nb::ndim<2>, nb::c_contig, nb::device::cpu> W, In1<int32_t> rows, In1<int32_t> cols,
             In1<float> data, int dtype, float scale) {
              const size_t n = data.shape(0);
              if (rows.shape(0) != n || cols.shape(0) != n)
                  throw nb::value_error("rows, cols and data must have the same length");
              const long long ldw = (long long)W.shape(1);
              nb::gil_scoped_release nogil;
              dispatch(dtype, [&](auto tag) {
                  using T = decltype(tag);
                  T* w = static_cast<T*>(W.data());
#pragma omp parallel for schedule(static)
                  for (long long j = 0; j < (long long)n; ++j)
                      merge_one<T>(w, ldw, rows.data()[j], cols.data()[j], data.data()[j], scale);
              });
          },
          "W"_a, "rows"_a, "cols"_a, "data"_a, "dtype"_a, "scale"_a);

#ifdef HYPRVDB_NANOVDB
    // Values at (rows, cols) by walking a snapshot's NanoVDB tree (kernels/nanovdb_index.cuh).
    m.attr("nanovdb_include") = HYPRVDB_NANOVDB_INCLUDE_DIR;
    m.def("gather_nanovdb",
          [](In1<uint8_t> grid, In1<float> values, In1<int64_t> rows, In1<int64_t> cols,
             Out1<float> out) {
              const size_t n = rows.shape(0);
              if (cols.shape(0) != n || out.shape(0) != n)
                  throw nb::value_error("rows, cols and out must have the same length");
              if (reinterpret_cast<uintptr_t>(grid.data()) % NANOVDB_DATA_ALIGNMENT)
                  throw nb::value_error("grid must be 32-byte aligned");
              const auto* g = reinterpret_cast<const hvdb_index_grid*>(grid.data());
              nb::gil_scoped_release nogil;
#pragma omp parallel if (n > 100000)
              {
                  const auto acc = g->getAccessor();  // one per thread: it caches its path
#pragma omp for schedule(static)
                  for (long long i = 0; i < (long long)n; ++i)
                      out.data()[i] = nvdb_gather(acc, values.data(), rows.data()[i], cols.data()[i]);
              }
          },
          "grid"_a, "values"_a, "rows"_a, "cols"_a, "out"_a);
    // Values at (matrix, row, col) of a set snapshot's grid (nvdb_set_gather); the caller has
    // checked the grid (SetSnapshot) and the coordinates against its matrix table.
    m.def("gather_nanovdb_set",
          [](In1<uint8_t> grid, In1<int64_t> mats, In1<int64_t> rows, In1<int64_t> cols,
             Out1<float> out) {
              const size_t n = rows.shape(0);
              if (mats.shape(0) != n || cols.shape(0) != n || out.shape(0) != n)
                  throw nb::value_error("mats, rows, cols and out must have the same length");
              if (reinterpret_cast<uintptr_t>(grid.data()) % NANOVDB_DATA_ALIGNMENT)
                  throw nb::value_error("grid must be 32-byte aligned");
              const auto* g = reinterpret_cast<const hvdb_index_grid*>(grid.data());
              if (g->blindDataCount() != 7)
                  throw nb::value_error(("grid is not a set snapshot (it has " +
                                         std::to_string(g->blindDataCount()) +
                                         " blind channels, not 7)").c_str());
              const hvdb_set_view s = hvdb_set_channels(g);
              nb::gil_scoped_release nogil;
#pragma omp parallel if (n > 100000)
              {
                  const auto acc = g->getAccessor();
#pragma omp for schedule(static)
                  for (long long i = 0; i < (long long)n; ++i)
                      out.data()[i] = nvdb_set_gather(acc, s, mats.data()[i], rows.data()[i],
                                                      cols.data()[i]);
              }
          },
          "grid"_a, "mats"_a, "rows"_a, "cols"_a, "out"_a);
#endif

    // Dense window rebuild from Z-runs (see kernels/window.cu).
    m.def("window_rebuild",
          [](In1<int64_t> run_start, In1<int64_t> run_idx, In1<int32_t> t, In1<float> d, In1<uint8_t> reset,
             In1<double> base_of_run, int t0, int t1, int mode, Out1<float> out) {
              const long long n_runs = (long long)run_idx.shape(0);
              if (run_start.shape(0) != size_t(n_runs + 1) || base_of_run.shape(0) != size_t(n_runs))
                  throw nb::value_error("run_start must hold runs + 1 entries and base_of_run one per run");
              nb::gil_scoped_release nogil;
#pragma omp parallel for schedule(static)
              for (long long r = 0; r < n_runs; ++r) {
                  const long long a = run_start.data()[r], b = run_start.data()[r + 1];
                  const double base = base_of_run.data()[r];
                  const double v1 = hvdb_value_at(base, t.data(), d.data(), reset.data(), a, b, t1);
                  out.data()[run_idx.data()[r]] =
                      mode == 0 ? float(v1 - hvdb_value_at(base, t.data(), d.data(), reset.data(), a, b, t0))
                                : float(v1);
              }
          },
          "run_start"_a, "run_idx"_a, "t"_a, "d"_a, "reset"_a, "base_of_run"_a, "t0"_a, "t1"_a,
          "mode"_a, "out"_a);
    // A history's state at a step, and the values of chosen weights (csrc/cpu/history.cpp).
    m.attr("RUN_STRIDE") = hyprvdb_cpu::kRunStride;
    m.def("history_state",
          [](In1<int64_t> base_idx, In1<double> base_val, AnyIn1 gaps, AnyIn1 counts, AnyIn1 t,
             In1<float> d, In1<int64_t> resets, In1<int64_t> tail_idx, In1<int32_t> tail_t,
             In1<double> tail_d, In1<uint8_t> tail_reset, int64_t step) {
              const hyprvdb_cpu::HistoryView h = history_view(
                  base_idx, base_val, gaps, counts, t, d, resets, tail_idx, tail_t, tail_d, tail_reset);
              check_counts(h);
              auto* idx = new std::vector<int64_t>();
              auto* val = new std::vector<double>();
              {
                  nb::gil_scoped_release nogil;
                  hyprvdb_cpu::history_state(h, step, *idx, *val);
              }
              return nb::make_tuple(to_numpy(idx), to_numpy(val));
          },
          "base_idx"_a, "base_val"_a, "gaps"_a, "counts"_a, "t"_a, "d"_a, "resets"_a, "tail_idx"_a,
          "tail_t"_a, "tail_d"_a, "tail_reset"_a, "step"_a);
    m.def("history_values",
          [](In1<int64_t> base_idx, In1<double> base_val, AnyIn1 gaps, AnyIn1 counts, AnyIn1 t,
             In1<float> d, In1<int64_t> resets, In1<int64_t> tail_idx, In1<int32_t> tail_t,
             In1<double> tail_d, In1<uint8_t> tail_reset, In1<int64_t> ck_idx, In1<int64_t> ck_run,
             In1<int64_t> ck_change, int64_t step, In1<int64_t> query) {
              const hyprvdb_cpu::HistoryView h = history_view(
                  base_idx, base_val, gaps, counts, t, d, resets, tail_idx, tail_t, tail_d, tail_reset);
              same_length(ck_idx.shape(0), ck_run.shape(0), "ck_idx and ck_run");
              same_length(ck_idx.shape(0), ck_change.shape(0), "ck_idx and ck_change");
              const size_t expected = (h.n_runs() + hyprvdb_cpu::kRunStride - 1) / hyprvdb_cpu::kRunStride;
              if (ck_idx.shape(0) != expected)
                  throw nb::value_error("checkpoints must hold one entry per RUN_STRIDE runs");
              const hyprvdb_cpu::RunCheckpoints ck{ck_idx.data(), ck_run.data(), ck_change.data(),
                                                   ck_idx.shape(0)};
              auto* out = new std::vector<double>(query.shape(0));
              {
                  nb::gil_scoped_release nogil;
                  hyprvdb_cpu::history_values(h, ck, step, query.data(), query.shape(0), out->data());
              }
              return to_numpy(out);
          },
          "base_idx"_a, "base_val"_a, "gaps"_a, "counts"_a, "t"_a, "d"_a, "resets"_a, "tail_idx"_a,
          "tail_t"_a, "tail_d"_a, "tail_reset"_a, "ck_idx"_a, "ck_run"_a, "ck_change"_a, "step"_a,
          "query"_a);
}
