// Per-thread logic of hyprvdb's kernels. Every function is HVDB_HD: the CUDA kernels call it
// with (lane, stride) = (thread index, threads), the CPU extension with (0, 1).
//
// The sparse delta is a CSR view of a snapshot: row r's nonzeros are
// indices[indptr[r] .. indptr[r+1]) (columns) and data[...] (values).
#pragma once
#include "common.cuh"

// Batch tile: rows of x handled by one pass over a sparse (or dense) row.
#ifndef HVDB_NB
#define HVDB_NB 8
#endif

// acc[b] += sum_j data[j] * x[b0 + b, indices[j]] over this lane's share of row r.
// NB is the batch tile (a compile-time bound, so the loop unrolls); nb <= NB rows are live.
template <typename T, int NB = HVDB_NB>
HVDB_HD inline void csr_row_dot(const int* indptr, const int* indices, const float* data,
                                const T* x, long long ldx, int nb, int row, int lane,
                                int stride, float* acc) {
    const int end = indptr[row + 1];
    for (int j = indptr[row] + lane; j < end; j += stride) {
        const float v = data[j];
        const T* xc = x + indices[j];
HVDB_UNROLL
        for (int b = 0; b < NB; ++b)
            if (NB == 1 || b < nb) acc[b] += v * to_f32(xc[b * ldx]);
    }
}

// csr_row_dot over batch rows that are not evenly spaced: acc[b] += sum_j data[j] *
// x[brows[b] * ldx + indices[j]] for b < nb (a tile of one segment of a mixed batch, where
// each batch row has its own delta; brows lists the tile's rows of x).
template <typename T, int NB = HVDB_NB>
HVDB_HD inline void csr_row_dot_rows(const int* indptr, const int* indices, const float* data,
                                     const T* x, long long ldx, const int* brows, int nb,
                                     int row, int lane, int stride, float* acc) {
    const int end = indptr[row + 1];
    for (int j = indptr[row] + lane; j < end; j += stride) {
        const float v = data[j];
        const int c = indices[j];
HVDB_UNROLL
        for (int b = 0; b < NB; ++b)
            if (b < nb) acc[b] += v * to_f32(x[brows[b] * ldx + c]);
    }
}

// acc[b] += sum_j data[j] * xt[indices[j], b] for b < nb, with x transposed (k x batch):
// each nonzero is one contiguous axpy over the batch (the CPU's loop order for big batches).
HVDB_HD inline void csr_row_axpy(const int* indptr, const int* indices, const float* data,
                                 const float* xt, long long ldxt, int nb, int row, float* acc) {
    const int end = indptr[row + 1];
    for (int j = indptr[row]; j < end; ++j) {
        const float v = data[j];
        const float* xc = xt + (long long)indices[j] * ldxt;
        for (int b = 0; b < nb; ++b) acc[b] += v * xc[b];
    }
}

// acc[b] += sum_i W[row, i] * x[b0 + b, i] over this lane's share of the k inputs.
template <typename T, int NB = HVDB_NB>
HVDB_HD inline void dense_row_dot(const T* W, long long ldw, const T* x, long long ldx, int nb,
                                  int k, int row, int lane, int stride, float* acc) {
    const T* w = W + row * ldw;
    for (int i = lane; i < k; i += stride) {
        const float wv = to_f32(w[i]);
HVDB_UNROLL
        for (int b = 0; b < NB; ++b)
            if (NB == 1 || b < nb) acc[b] += wv * to_f32(x[b * ldx + i]);
    }
}

// W[r, c] += scale * v for the nonzero j of row r (merge; unmerge passes -scale).
template <typename T>
HVDB_HD inline void merge_one(T* W, long long ldw, int row, int col, float v, float scale) {
    T* p = W + row * ldw + col;
    from_f32(to_f32(*p) + scale * v, p);
}
