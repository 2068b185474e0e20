// The CPU delta product shared by the extension's functions and the XLA FFI targets:
// y[b, r] (+)= scale * x[b] . dW[r] (+ W[r] . x[b] + bias[r] when W is given), over the
// per-thread functions of kernels/sparse_ops.cuh.
#pragma once

#include <algorithm>
#include <vector>

#include "../../kernels/sparse_ops.cuh"

namespace hyprvdb_cpu {

struct Csr {
    const int* indptr;
    const int* indices;
    const float* data;
    int rows;
};

// One pass per row and tile of NB batch rows (the tile unrolled at compile time). Tiles write
// disjoint outputs, so threads share one static row partition and never wait for each other.
template <typename T, int NB>
void linear_tiled(const Csr& m, const T* x, long long ldx, int batch, const T* W, long long ldw,
                  int k, const T* bias, T* y, long long ldy, float scale, bool accumulate,
                  bool parallel) {
#pragma omp parallel if (parallel)
    for (int b0 = 0; b0 < batch; b0 += NB) {
        const int nb = std::min(NB, batch - b0);
        const T* xb = x + b0 * ldx;
#pragma omp for schedule(static) nowait
        for (int r = 0; r < m.rows; ++r) {
            float acc[NB] = {0}, sacc[NB] = {0};
            if (W) dense_row_dot<T, NB>(W, ldw, xb, ldx, nb, k, r, 0, 1, acc);
            csr_row_dot<T, NB>(m.indptr, m.indices, m.data, xb, ldx, nb, r, 0, 1, sacc);
            const float bv = bias ? to_f32(bias[r]) : 0.0f;
            for (int b = 0; b < nb; ++b) {
                T* p = y + (b0 + b) * ldy + r;
                const float base = accumulate ? to_f32(*p) : bv;
                from_f32(base + acc[b] + scale * sacc[b], p);
            }
        }
    }
}

// Big batches: x transposed once (k x batch) so each nonzero is a contiguous axpy into a
// (rows x batch) buffer, transposed into y at the end.
template <typename T>
void linear_big(const Csr& m, const T* x, long long ldx, int batch, const T* W, long long ldw,
                int k, const T* bias, T* y, long long ldy, float scale, bool accumulate,
                bool parallel) {
    const int kx = int(ldx);
    std::vector<float> xt(size_t(kx) * batch), yt(size_t(m.rows) * batch);
    constexpr int kTile = 64;
#pragma omp parallel for schedule(static) if (parallel)
    for (int i0 = 0; i0 < kx; i0 += kTile)
        for (int b = 0; b < batch; ++b)
            for (int i = i0; i < std::min(kx, i0 + kTile); ++i)
                xt[size_t(i) * batch + b] = to_f32(x[b * ldx + i]);
#pragma omp parallel for schedule(dynamic, 64) if (parallel)
    for (int r = 0; r < m.rows; ++r) {
        float* acc = yt.data() + size_t(r) * batch;
        if (!W) {
            csr_row_axpy(m.indptr, m.indices, m.data, xt.data(), batch, batch, r, acc);
            if (scale != 1.0f)
                for (int b = 0; b < batch; ++b) acc[b] *= scale;
            continue;
        }
        const T* w = W + r * ldw;
        for (int i = 0; i < k; ++i) {
            const float wv = to_f32(w[i]);
            const float* xc = xt.data() + size_t(i) * batch;
            for (int b = 0; b < batch; ++b) acc[b] += wv * xc[b];
        }
        std::vector<float> sacc(batch, 0.0f);
        csr_row_axpy(m.indptr, m.indices, m.data, xt.data(), batch, batch, r, sacc.data());
        for (int b = 0; b < batch; ++b) acc[b] += scale * sacc[b];
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int r0 = 0; r0 < m.rows; r0 += kTile)
        for (int b = 0; b < batch; ++b)
            for (int r = r0; r < std::min(m.rows, r0 + kTile); ++r) {
                T* p = y + b * ldy + r;
                const float base = accumulate ? to_f32(*p) : (bias ? to_f32(bias[r]) : 0.0f);
                from_f32(base + yt[size_t(r) * batch + b], p);
            }
}

// Below this many multiply-adds a single thread wins: waking a team costs more.
constexpr double kParallelWork = 2e5;

// y[b, r] (+)= scale * x[b] . dW[r] (+ W[r] . x[b] + bias[r] when W is given).
template <typename T>
void linear(const Csr& m, const T* x, long long ldx, int batch, const T* W, long long ldw, int k,
            const T* bias, T* y, long long ldy, float scale, bool accumulate) {
    const long long nnz = m.indptr[m.rows] - m.indptr[0];
    const double work = double(batch) * (double(nnz) + (W ? double(m.rows) * k : 0.0));
    const bool par = work > kParallelWork;
    if (!W) k = int(ldx);
    switch (batch) {
        case 1: return linear_tiled<T, 1>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
        case 2: return linear_tiled<T, 2>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
        case 3: case 4: return linear_tiled<T, 4>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
        default:
            // Transposing x once (then one contiguous axpy per nonzero) pays off with dense
            // rows, or when there are several nonzeros per input column; a very sparse delta
            // gathers from tiles of x that stay in cache instead.
            if (W || nnz >= 4 * (long long)(k + m.rows))
                return linear_big<T>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
            return linear_tiled<T, HVDB_NB>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
    }
}

}  // namespace hyprvdb_cpu
