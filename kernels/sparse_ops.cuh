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

// ---------------------------------------------------------------- wide batches, x staged
// A tile of bt batch rows of x (bt a power of two, 1..32) staged transposed in shared memory:
// xs[c * bt + b] = x[r_b, c] for the nb live rows, 0 past them, where r_b = brows[b] (a tile
// of one segment of a mixed batch) or b (brows null: consecutive rows). Thread tid of
// nthreads copies the entries tid, tid + nthreads, ... (x read row by row: consecutive
// threads, consecutive columns).
template <typename T>
HVDB_HD inline void stage_x_tile(const T* x, long long ldx, const int* brows, int nb, int k,
                                 int bt, T* xs, int tid, int nthreads) {
    T zero;
    from_f32(0.0f, &zero);
    const long long n = (long long)k * bt;
    for (long long i = tid; i < n; i += nthreads) {
        const int b = int(i / k), c = int(i - (long long)b * k);
        xs[(long long)c * bt + b] =
            b < nb ? x[(long long)(brows ? brows[b] : b) * ldx + c] : zero;
    }
}

// Lane `lane`'s share of output row `row` over a staged tile: the 32 lanes of a warp split
// into 32 / bt nonzero slots of bt batch columns; the lane takes column lane % bt and the
// nonzeros indptr[row] + lane / bt, then every (32 / bt)-th. The slots' sums are added by a
// shuffle tree (the CUDA kernel) or its serial copy (csrc/cpu/linear.h, linear_staged_lanes).
template <typename T>
HVDB_HD inline float staged_row_dot(const int* indptr, const int* indices, const float* data,
                                    const T* xs, int bt, int row, int lane) {
    const int slots = 32 / bt, col = lane & (bt - 1);
    const int end = indptr[row + 1];
    float acc = 0.0f;
HVDB_UNROLL_BY(4)  // independent gathers in flight
    for (int j = indptr[row] + lane / bt; j < end; j += slots)
        acc += data[j] * to_f32(xs[(long long)indices[j] * bt + col]);
    return acc;
}

// ---------------------------------------------------------------- the choice by shape
// The staged kernel's batch tile: the largest power of two up to 32 (and up to the batch,
// rounded up to a power of two) whose tile of x, k * bt * itemsize bytes, fits smem_bytes;
// 0 when not even one row fits.
HVDB_HD inline int staged_batch_tile(long long k, int itemsize, long long smem_bytes,
                                     long long batch) {
    int bt = 0;
    for (int t = 1; t <= 32; t *= 2) {
        if (k * t * itemsize > smem_bytes) break;
        bt = t;
        if (t >= batch) break;
    }
    return bt;
}

// How a GPU computes y (+)= x @ (W + scale dW).T for one shape; each way's cost is a count of
// bytes moved (a model: the GPU benchmark, bench/matmul.py, prints the choice beside every
// way's measured time).
//   kProductRows   the delta kernel with a warp per output row over tiles of HVDB_NB batch
//                  rows: reads the delta once per tile and gathers x one 32-byte sector per
//                  (nonzero, batch row)
//   kProductStaged the staged kernel: reads the delta once per batch tile of bt rows, and a
//                  batch tile of x once per block (blocks: row_groups per batch tile)
//   kProductMerge  (only where W is given, with the dense product to follow) a scratch copy
//                  of W, the delta merged into it, one GEMM: reads and writes W once more and
//                  scatters the delta once
enum { kProductRows = 0, kProductStaged = 1, kProductMerge = 2 };

// Batches up to this many rows take the row kernel: there one launch's fixed cost dominates.
#define HVDB_ROWS_BATCH_MAX 16
// Shared memory a staged tile of x may take: two blocks fit on a multiprocessor of 228 KiB.
#define HVDB_STAGED_SMEM (96 * 1024)
// Warps per block of the staged kernels: with two blocks a multiprocessor, 32 warps hide the
// latency of the gathers from shared memory.
#define HVDB_STAGED_WARPS 16

HVDB_HD inline int product_choice(long long rows, long long k, long long nnz, long long batch,
                                  int itemsize, int bt, long long row_groups, bool with_w) {
    const double nzb = 12.0;  // a nonzero: column and value (and its row, for a merge)
    const double rows_cost = double((batch + HVDB_NB - 1) / HVDB_NB) * nnz * 8.0 +
                             double(nnz) * batch * 32.0;
    double best = rows_cost;
    int choice = kProductRows;
    if (batch > HVDB_ROWS_BATCH_MAX && bt >= 2) {
        const double staged = double((batch + bt - 1) / bt) * nnz * 8.0 +
                              double(row_groups) * batch * k * itemsize;
        if (staged < best) best = staged, choice = kProductStaged;
    }
    if (with_w && batch > HVDB_ROWS_BATCH_MAX) {
        const double merge = 2.0 * rows * k * itemsize + nnz * nzb;
        if (merge < best) best = merge, choice = kProductMerge;
    }
    return choice;
}

// Row groups per batch tile of the staged kernel: blocks enough to fill the GPU twice over
// (sms multiprocessors), at most one per `warps` output rows.
HVDB_HD inline long long staged_row_groups(long long rows, long long batch, int bt, int warps,
                                           int sms) {
    const long long tiles = (batch + bt - 1) / bt;
    const long long want = (2LL * sms + tiles - 1) / tiles;
    const long long most = (rows + warps - 1) / warps;
    return want < 1 ? 1 : (want > most ? most : want);
}
