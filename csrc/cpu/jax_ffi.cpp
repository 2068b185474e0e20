// XLA FFI targets (CPU) for hyprvdb.jax: the sparse delta product and its two backward
// products, over a CSR delta (indptr, indices, data). Built when jaxlib's FFI headers are
// found; hyprvdb.jax falls back to pure JAX otherwise.
//
// Leading dimensions of x are flattened: x is (batch, k), the delta (rows, k).
#include "cpu/jax_ffi.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "ffi_shapes.h"
#include "../../kernels/sparse_ops.cuh"
#include "cpu/linear.h"

namespace ffi = xla::ffi;

namespace {

using hyprvdb_ffi_shapes::batch_of;

// Transpose a (n x m) row-major block into (m x n).
void transpose(const float* in, int64_t n, int64_t m, float* out) {
    constexpr int64_t kTile = 32;
    for (int64_t i0 = 0; i0 < n; i0 += kTile)
        for (int64_t j0 = 0; j0 < m; j0 += kTile)
            for (int64_t i = i0; i < std::min(n, i0 + kTile); ++i)
                for (int64_t j = j0; j < std::min(m, j0 + kTile); ++j) out[j * n + i] = in[i * m + j];
}

// y += scale * x @ dW.T in place: y_in (the dense product, or zeros for the delta alone) is
// aliased to the result by hyprvdb.jax (input_output_aliases), so the delta costs no extra
// output pass.
ffi::Error DeltaAccumulateImpl(ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> indices,
                               ffi::Buffer<ffi::F32> data, ffi::Buffer<ffi::F32> x,
                               ffi::Buffer<ffi::F32> y_in, ffi::ResultBuffer<ffi::F32> y,
                               float scale) {
    hyprvdb_ffi_shapes::Product p;
    if (auto err = hyprvdb_ffi_shapes::accumulate(indptr, x, y_in, y, &p); err.failure())
        return err;
    if (y_in.typed_data() != y->typed_data())
        std::copy_n(y_in.typed_data(), y_in.element_count(), y->typed_data());
    const hyprvdb_cpu::Csr m{indptr.typed_data(), indices.typed_data(), data.typed_data(),
                             int(p.rows)};
    hyprvdb_cpu::linear<float>(m, x.typed_data(), p.k, int(p.batch), nullptr, 0, 0, nullptr,
                               y->typed_data(), p.rows, scale, true);
    return ffi::Error::Success();
}

// A mixed batch, in place as above: y[b] += scale * x[b] @ dW_seg[b].T over the stacked
// deltas of linear.h (indptr: nseg * (rows + 1) offsets; seg: one int32 per batch row, -1 for
// none).
ffi::Error DeltaAccumulateSegmentsImpl(ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> indices,
                                       ffi::Buffer<ffi::F32> data, ffi::Buffer<ffi::F32> x,
                                       ffi::Buffer<ffi::S32> seg, ffi::Buffer<ffi::F32> y_in,
                                       ffi::ResultBuffer<ffi::F32> y, float scale) {
    hyprvdb_ffi_shapes::Product p;
    if (auto err = hyprvdb_ffi_shapes::accumulate_segments(indptr, x, seg, y_in, y, &p);
        err.failure())
        return err;
    if (y_in.typed_data() != y->typed_data())
        std::copy_n(y_in.typed_data(), y_in.element_count(), y->typed_data());
    try {
        hyprvdb_cpu::linear_segments<float>(indptr.typed_data(), indices.typed_data(),
                                            data.typed_data(), int(p.rows), p.nseg,
                                            seg.typed_data(), x.typed_data(), p.k, int(p.batch),
                                            y->typed_data(), p.rows, scale);
    } catch (const std::out_of_range& e) {
        return ffi::Error::InvalidArgument(e.what());
    }
    return ffi::Error::Success();
}

// dx = scale * g @ dW  (g: (batch, rows), dx: (batch, k)).
ffi::Error DeltaMatmulTImpl(ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> indices,
                            ffi::Buffer<ffi::F32> data, ffi::Buffer<ffi::F32> g,
                            ffi::ResultBuffer<ffi::F32> dx, float scale) {
    const int64_t rows = int64_t(indptr.element_count()) - 1;
    const int64_t batch = batch_of(g.dimensions());
    const int64_t k = dx->dimensions().back();
    if (g.dimensions().back() != rows || int64_t(dx->element_count()) != batch * k)
        return ffi::Error::InvalidArgument("hyprvdb_delta_matmul_t: shapes do not match");
    std::vector<float> gt(size_t(rows * batch)), dxt(size_t(k * batch), 0.0f);
    transpose(g.typed_data(), batch, rows, gt.data());
    const int* ip = indptr.typed_data();
    const int* ix = indices.typed_data();
    const float* dv = data.typed_data();
    // Columns repeat across rows, so accumulate serially (this is the training path).
    for (int64_t r = 0; r < rows; ++r) {
        const float* gr = gt.data() + r * batch;
        for (int j = ip[r]; j < ip[r + 1]; ++j) {
            float* acc = dxt.data() + int64_t(ix[j]) * batch;
            const float v = dv[j] * scale;
            for (int64_t b = 0; b < batch; ++b) acc[b] += v * gr[b];
        }
    }
    transpose(dxt.data(), k, batch, dx->typed_data());
    return ffi::Error::Success();
}

// dvalues[j] = scale * sum_b x[b, indices[j]] * g[b, row(j)]: the gradient restricted to the
// delta's sparsity pattern.
ffi::Error DeltaValuesGradImpl(ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> indices,
                               ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                               ffi::ResultBuffer<ffi::F32> dvals, float scale) {
    const int64_t rows = int64_t(indptr.element_count()) - 1;
    const auto xd = x.dimensions();
    const int64_t k = xd.back(), batch = batch_of(xd);
    if (g.dimensions().back() != rows || batch_of(g.dimensions()) != batch ||
        dvals->element_count() != indices.element_count())
        return ffi::Error::InvalidArgument("hyprvdb_delta_values_grad: shapes do not match");
    std::vector<float> xt(size_t(k * batch)), gt(size_t(rows * batch));
    transpose(x.typed_data(), batch, k, xt.data());
    transpose(g.typed_data(), batch, rows, gt.data());
    const int* ip = indptr.typed_data();
    const int* ix = indices.typed_data();
    float* out = dvals->typed_data();
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t r = 0; r < rows; ++r) {
        const float* gr = gt.data() + r * batch;
        for (int j = ip[r]; j < ip[r + 1]; ++j) {
            const float* xc = xt.data() + int64_t(ix[j]) * batch;
            float s = 0.0f;
            for (int64_t b = 0; b < batch; ++b) s += xc[b] * gr[b];
            out[j] = scale * s;
        }
    }
    return ffi::Error::Success();
}

}  // namespace

// Both gradient targets take (indptr, indices, a float buffer, a float buffer) -> one float buffer,
// with a "scale" attribute.
static auto csr_binding() {
    return ffi::Ffi::Bind()
        .Arg<ffi::Buffer<ffi::S32>>()
        .Arg<ffi::Buffer<ffi::S32>>()
        .Arg<ffi::Buffer<ffi::F32>>()
        .Arg<ffi::Buffer<ffi::F32>>()
        .Ret<ffi::Buffer<ffi::F32>>()
        .Attr<float>("scale");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(HyprvdbDeltaAccumulate, DeltaAccumulateImpl,
                              hyprvdb_ffi_shapes::accumulate_operands(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(HyprvdbDeltaAccumulateSegments, DeltaAccumulateSegmentsImpl,
                              hyprvdb_ffi_shapes::accumulate_segments_operands(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(HyprvdbDeltaMatmulT, DeltaMatmulTImpl, csr_binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(HyprvdbDeltaValuesGrad, DeltaValuesGradImpl, csr_binding());

namespace hyprvdb_ffi {
void* delta_matmul_t() { return reinterpret_cast<void*>(HyprvdbDeltaMatmulT); }
void* delta_values_grad() { return reinterpret_cast<void*>(HyprvdbDeltaValuesGrad); }
void* delta_accumulate() { return reinterpret_cast<void*>(HyprvdbDeltaAccumulate); }
void* delta_accumulate_segments() {
    return reinterpret_cast<void*>(HyprvdbDeltaAccumulateSegments);
}
}  // namespace hyprvdb_ffi
