// The shapes the XLA FFI targets of hyprvdb.jax take, checked once for both builds: the CPU's
// (csrc/cpu/jax_ffi.cpp, g++) and CUDA's (csrc/cuda/jax_ffi.cu, nvcc). Leading dimensions of
// x are flattened: x is (batch, k), y (batch, rows).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace hyprvdb_ffi_shapes {

namespace ffi = xla::ffi;

inline int64_t batch_of(ffi::Span<const int64_t> dims) {
    int64_t b = 1;
    for (size_t i = 0; i + 1 < dims.size(); ++i) b *= dims[i];
    return b;
}

struct Product {
    int64_t rows = 0, k = 0, batch = 0;
    int nseg = 1;  // deltas stacked in indptr (the mixed batch's)
};

// y = y_in + scale * x @ dW.T over one CSR delta (rows + 1 offsets in indptr).
inline ffi::Error accumulate(const ffi::Buffer<ffi::S32>& indptr,
                             const ffi::Buffer<ffi::F32>& x,
                             const ffi::Buffer<ffi::F32>& y_in,
                             ffi::ResultBuffer<ffi::F32>& y, Product* p) {
    p->rows = int64_t(indptr.element_count()) - 1;
    p->k = x.dimensions().back();
    p->batch = batch_of(x.dimensions());
    if (p->rows < 0 || int64_t(y->element_count()) != p->batch * p->rows ||
        y_in.element_count() != y->element_count())
        return ffi::Error::InvalidArgument("hyprvdb_delta_accumulate: y must be (batch, rows)");
    return ffi::Error::Success();
}

// The mixed batch: nseg deltas stacked (nseg * (rows + 1) offsets), one segment per row.
inline ffi::Error accumulate_segments(const ffi::Buffer<ffi::S32>& indptr,
                                      const ffi::Buffer<ffi::F32>& x,
                                      const ffi::Buffer<ffi::S32>& seg,
                                      const ffi::Buffer<ffi::F32>& y_in,
                                      ffi::ResultBuffer<ffi::F32>& y, Product* p) {
    p->rows = y->dimensions().back();
    p->k = x.dimensions().back();
    p->batch = batch_of(x.dimensions());
    if (p->rows <= 0 || int64_t(indptr.element_count()) % (p->rows + 1) != 0 ||
        int64_t(y->element_count()) != p->batch * p->rows ||
        int64_t(seg.element_count()) != p->batch || y_in.element_count() != y->element_count())
        return ffi::Error::InvalidArgument(
            "hyprvdb_delta_accumulate_segments: y must be (batch, rows), segment_ids (batch,) "
            "and indptr nseg * (rows + 1)");
    p->nseg = int(int64_t(indptr.element_count()) / (p->rows + 1));
    return ffi::Error::Success();
}

// The operands and attribute of each target, appended to a binding that already holds the
// platform's context (none on the CPU; the stream, and scratch memory, on CUDA), so that both
// builds bind the same signature.
template <typename Binding>
auto accumulate_operands(Binding b) {
    return std::move(b)
        .template Arg<ffi::Buffer<ffi::S32>>()      // indptr
        .template Arg<ffi::Buffer<ffi::S32>>()      // indices
        .template Arg<ffi::Buffer<ffi::F32>>()      // data
        .template Arg<ffi::Buffer<ffi::F32>>()      // x
        .template Arg<ffi::Buffer<ffi::F32>>()      // y_in
        .template Ret<ffi::Buffer<ffi::F32>>()      // y (aliased to y_in)
        .template Attr<float>("scale");
}

template <typename Binding>
auto accumulate_segments_operands(Binding b) {
    return std::move(b)
        .template Arg<ffi::Buffer<ffi::S32>>()      // indptr (nseg * (rows + 1))
        .template Arg<ffi::Buffer<ffi::S32>>()      // indices
        .template Arg<ffi::Buffer<ffi::F32>>()      // data
        .template Arg<ffi::Buffer<ffi::F32>>()      // x
        .template Arg<ffi::Buffer<ffi::S32>>()      // segment ids
        .template Arg<ffi::Buffer<ffi::F32>>()      // y_in
        .template Ret<ffi::Buffer<ffi::F32>>()      // y (aliased to y_in)
        .template Attr<float>("scale");
}

}  // namespace hyprvdb_ffi_shapes
