// The CPU delta product shared by the extension's functions and the XLA FFI targets:
// y[b, r] (+)= scale * x[b] . dW[r] (+ W[r] . x[b] + bias[r] when W is given), over the
// per-thread functions of kernels/sparse_ops.cuh.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../../kernels/sparse_ops.cuh"
#include "cpu/delta_avx2.h"

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

// Batches past a few rows: chunks of kChunk batch rows, each transposed (k x chunk) so that
// every nonzero is one contiguous, vectorized axpy over the chunk; the chunk's operands stay
// in cache and threads take whole chunks, so nothing is shared or waited for.
template <typename T>
void linear_chunked(const Csr& m, const T* x, long long ldx, int batch, const T* W,
                    long long ldw, int k, const T* bias, T* y, long long ldy, float scale,
                    bool accumulate, bool parallel) {
    // Chunks of up to 64 rows, at least one per thread when the batch is small.
    int threads = 1;
#ifdef _OPENMP
    if (parallel) threads = omp_get_max_threads();
#endif
    const int kChunk = std::clamp((batch + threads - 1) / threads, 4, 64);
    const int kx = int(ldx);
    const int chunks = (batch + kChunk - 1) / kChunk;
#pragma omp parallel if (parallel && chunks > 1)
    {
        std::vector<float> xt(size_t(kx) * kChunk), yt(size_t(m.rows) * kChunk),
            sacc(kChunk);
#pragma omp for schedule(dynamic, 1)
        for (int ci = 0; ci < chunks; ++ci) {
            const int b0 = ci * kChunk, nb = std::min(kChunk, batch - b0);
            for (int b = 0; b < nb; ++b) {
                const T* xr = x + (b0 + b) * ldx;
                for (int i = 0; i < kx; ++i) xt[size_t(i) * nb + b] = to_f32(xr[i]);
            }
            std::fill(yt.begin(), yt.begin() + size_t(m.rows) * nb, 0.0f);
            for (int r = 0; r < m.rows; ++r) {
                float* acc = yt.data() + size_t(r) * nb;
                if (W) {
                    const T* w = W + r * ldw;
                    for (int i = 0; i < k; ++i) {
                        const float wv = to_f32(w[i]);
                        const float* xc = xt.data() + size_t(i) * nb;
                        for (int b = 0; b < nb; ++b) acc[b] += wv * xc[b];
                    }
                    std::fill(sacc.begin(), sacc.begin() + nb, 0.0f);
                    csr_row_axpy(m.indptr, m.indices, m.data, xt.data(), nb, nb, r, sacc.data());
                    for (int b = 0; b < nb; ++b) acc[b] += scale * sacc[b];
                } else {
                    csr_row_axpy(m.indptr, m.indices, m.data, xt.data(), nb, nb, r, acc);
                    if (scale != 1.0f)
                        for (int b = 0; b < nb; ++b) acc[b] *= scale;
                }
            }
            for (int b = 0; b < nb; ++b) {
                T* yr = y + (b0 + b) * ldy;
                for (int r = 0; r < m.rows; ++r) {
                    const float base = accumulate ? to_f32(yr[r]) : (bias ? to_f32(bias[r]) : 0.0f);
                    from_f32(base + yt[size_t(r) * nb + b], yr + r);
                }
            }
        }
    }
}

// Whether float32 delta products may take the AVX2 kernel (when the CPU has it); tests switch
// it off to check the portable kernels against it.
inline std::atomic<bool>& simd_enabled() {
    static std::atomic<bool> on{avx2_supported()};
    return on;
}

// The float32 delta product over token chunks (delta_avx2.cpp). With fewer chunks than twice
// the threads, each chunk's rows are split too, so that every thread has work.
inline void linear_avx2(const Csr& m, const float* x, long long ldx, int batch, float* y,
                        long long ldy, float scale, bool accumulate, bool parallel) {
    int threads = 1;
#ifdef _OPENMP
    if (parallel) threads = omp_get_max_threads();
#endif
    const int chunk = avx2_chunk(), chunks = (batch + chunk - 1) / chunk;
    const int splits = chunks >= 2 * threads
                           ? 1
                           : std::clamp((2 * threads + chunks - 1) / chunks, 1, std::max(1, m.rows / 64));
    const int per = ((m.rows + splits - 1) / splits + 7) / 8 * 8;
    const int items = chunks * splits;
    const int k = int(ldx);
#pragma omp parallel if (parallel && items > 1)
    {
        std::vector<float> scratch(avx2_scratch_floats(k));
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; ++it) {
            const int r0 = (it % splits) * per, r1 = std::min(m.rows, r0 + per);
            if (r0 < r1)
                delta_avx2(m.indptr, m.indices, m.data, x, ldx, k, batch, y, ldy, scale,
                           accumulate, it / splits, r0, r1, scratch.data());
        }
    }
}

// Below this many multiply-adds a single thread wins: waking a team costs more.
constexpr double kParallelWork = 2e5;

// y[b, r] (+)= scale * x[b] . dW[r] (+ W[r] . x[b] + bias[r] when W is given).
template <typename T>
void linear(const Csr& m, const T* x, long long ldx, int batch, const T* W, long long ldw, int k,
            const T* bias, T* y, long long ldy, float scale, bool accumulate) {
    const double nnz = double(m.indptr[m.rows] - m.indptr[0]);
    const double work = double(batch) * (nnz + (W ? double(m.rows) * k : 0.0));
    const bool par = work > kParallelWork;
    if (!W) k = int(ldx);
    if constexpr (std::is_same_v<T, float>) {
        if (!W && !bias && batch >= 8 && simd_enabled().load(std::memory_order_relaxed))
            return linear_avx2(m, x, ldx, batch, y, ldy, scale, accumulate, par);
    }
    switch (batch) {
        case 1: return linear_tiled<T, 1>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
        case 2: return linear_tiled<T, 2>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
        case 3: case 4: return linear_tiled<T, 4>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
        default:
            // Chunks transpose x and y in cache: worth it with dense rows or several nonzeros
            // per row and column; sparser deltas gather from tiles of x rows instead.
            if (W || nnz >= 4.0 * (double(k) + m.rows))
                return linear_chunked<T>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
            return linear_tiled<T, HVDB_NB>(m, x, ldx, batch, W, ldw, k, bias, y, ldy, scale, accumulate, par);
    }
}

// One tile of the CUDA staged kernels (kernels/matmul.cu) run on the CPU lane by lane: the
// same staging, the same per-lane sums, the warp's shuffle tree done in order. brows: the
// tile's rows of x and y (null: the nb rows from x and y on).
template <typename T>
void staged_tile_lanes(const Csr& m, const T* x, long long ldx, const int* brows, int nb, int k,
                       int bt, T* y, long long ldy, float scale, T* xs) {
    stage_x_tile<T>(x, ldx, brows, nb, k, bt, xs, 0, 1);
    for (int r = 0; r < m.rows; ++r) {
        float lanes[32];
        for (int l = 0; l < 32; ++l)
            lanes[l] = staged_row_dot<T>(m.indptr, m.indices, m.data, xs, bt, r, l);
        for (int o = 16; o >= bt; o >>= 1)  // __shfl_down_sync: lane l reads lane l + o
            for (int l = 0; l + o < 32; ++l) lanes[l] += lanes[l + o];
        for (int l = 0; l < nb; ++l) {
            T* p = y + (long long)(brows ? brows[l] : l) * ldy + r;
            from_f32(to_f32(*p) + scale * lanes[l], p);
        }
    }
}

inline void check_bt(int bt) {
    if (bt < 1 || bt > 32 || (bt & (bt - 1)))
        throw std::invalid_argument("bt must be a power of two in 1..32, got " +
                                    std::to_string(bt));
}

// delta_matmul_staged's program on the CPU (not a fast path: the reference the kernel's logic
// is tested against here).
template <typename T>
void linear_staged_lanes(const Csr& m, const T* x, long long ldx, int batch, int k, int bt,
                         T* y, long long ldy, float scale) {
    check_bt(bt);
    std::vector<T> xs(size_t(k) * bt);
    for (int b0 = 0; b0 < batch; b0 += bt)
        staged_tile_lanes<T>(m, x + b0 * ldx, ldx, nullptr, std::min(bt, batch - b0), k, bt,
                             y + b0 * ldy, ldy, scale, xs.data());
}

// ---------------------------------------------------------------- mixed batches
// A batch where row b takes its own delta: segment seg[b] of nseg deltas of one shape (-1:
// none). The deltas are stacked: segment s's row r is indices/data[indptr[s * (rows + 1) + r]
// .. indptr[s * (rows + 1) + r + 1]), offsets into the concatenated entries.

// The batch rows grouped by segment (a counting sort: batch order within a segment) in tiles
// of at most nb rows of one segment: tile t covers order[tiles[3t] .. tiles[3t] +
// tiles[3t + 1]) and segment tiles[3t + 2]. Rows of segment -1 are left out. Throws on a
// segment outside -1..nseg-1. The CUDA launch takes the same tiles.
inline void segment_tiles(const int32_t* seg, int batch, int nseg, int nb,
                          std::vector<int32_t>& order, std::vector<int32_t>& tiles) {
    std::vector<int32_t> start(size_t(nseg) + 1, 0);
    for (int b = 0; b < batch; ++b) {
        if (seg[b] < -1 || seg[b] >= nseg)
            throw std::out_of_range("segment_ids[" + std::to_string(b) + "] = " +
                                    std::to_string(seg[b]) + " is not in -1.." +
                                    std::to_string(nseg - 1));
        if (seg[b] >= 0) ++start[size_t(seg[b]) + 1];
    }
    for (int s = 0; s < nseg; ++s) start[s + 1] += start[s];
    order.assign(size_t(start[nseg]), 0);
    tiles.clear();
    for (int s = 0; s < nseg; ++s)
        for (int at = start[s]; at < start[s + 1]; at += nb)
            tiles.insert(tiles.end(), {at, std::min(nb, start[s + 1] - at), s});
    std::vector<int32_t> fill(start.begin(), start.end() - 1);
    for (int b = 0; b < batch; ++b)
        if (seg[b] >= 0) order[size_t(fill[seg[b]]++)] = b;
}

// y[b] += scale * x[b] @ dW_seg[b].T, tile by tile with the kernels' per-thread function (the
// CUDA kernel's logic, one lane): the reference the grouped path below is tested against.
template <typename T>
void linear_segments_tiles(const int* indptr, const int* indices, const float* data, int rows,
                           int nseg, const int32_t* seg, const T* x, long long ldx, int batch,
                           T* y, long long ldy, float scale) {
    std::vector<int32_t> order, tiles;
    segment_tiles(seg, batch, nseg, HVDB_NB, order, tiles);
    const int n_tiles = int(tiles.size() / 3);
    for (int t = 0; t < n_tiles; ++t) {
        const int* brows = order.data() + tiles[3 * t];
        const int nb = tiles[3 * t + 1];
        const int* ip = indptr + size_t(tiles[3 * t + 2]) * (rows + 1);
        for (int r = 0; r < rows; ++r) {
            float acc[HVDB_NB] = {0};
            csr_row_dot_rows<T>(ip, indices, data, x, ldx, brows, nb, r, 0, 1, acc);
            for (int b = 0; b < nb; ++b) {
                T* p = y + brows[b] * ldy + r;
                from_f32(to_f32(*p) + scale * acc[b], p);
            }
        }
    }
}

// delta_matmul_segments_staged's program on the CPU: tiles of at most bt rows of one segment.
template <typename T>
void linear_segments_staged_lanes(const int* indptr, const int* indices, const float* data,
                                  int rows, int nseg, const int32_t* seg, const T* x,
                                  long long ldx, int batch, T* y, long long ldy, float scale,
                                  int bt) {
    check_bt(bt);
    std::vector<int32_t> order, tiles;
    segment_tiles(seg, batch, nseg, bt, order, tiles);
    const int k = int(ldx);
    std::vector<T> xs(size_t(k) * bt);
    for (size_t t = 0; t < tiles.size(); t += 3) {
        const Csr m{indptr + size_t(tiles[t + 2]) * (rows + 1), indices, data, rows};
        staged_tile_lanes<T>(m, x, ldx, order.data() + tiles[t], tiles[t + 1], k, bt, y, ldy,
                             scale, xs.data());
    }
}

// The same product, fast: each segment's rows run through linear() (the tuned kernels: AVX2,
// tiles, chunks) as one batch, in place where they are consecutive rows of x and y, through a
// gathered copy otherwise.
template <typename T>
void linear_segments(const int* indptr, const int* indices, const float* data, int rows,
                     int nseg, const int32_t* seg, const T* x, long long ldx, int batch, T* y,
                     long long ldy, float scale) {
    std::vector<int32_t> order, tiles;
    segment_tiles(seg, batch, nseg, batch > 0 ? batch : 1, order, tiles);  // a tile a segment
    const int k = int(ldx);
    std::vector<T> xs, ys;
    for (size_t t = 0; t < tiles.size(); t += 3) {
        const int* brows = order.data() + tiles[t];
        const int n = tiles[t + 1];
        const Csr m{indptr + size_t(tiles[t + 2]) * (rows + 1), indices, data, rows};
        if (brows[n - 1] - brows[0] == n - 1) {  // consecutive rows: in place
            linear<T>(m, x + brows[0] * ldx, ldx, n, nullptr, 0, 0, nullptr,
                      y + brows[0] * ldy, ldy, scale, true);
            continue;
        }
        xs.resize(size_t(n) * k);
        ys.resize(size_t(n) * rows);
        for (int b = 0; b < n; ++b) {
            std::copy_n(x + brows[b] * ldx, k, xs.data() + size_t(b) * k);
            std::copy_n(y + brows[b] * ldy, rows, ys.data() + size_t(b) * rows);
        }
        linear<T>(m, xs.data(), k, n, nullptr, 0, 0, nullptr, ys.data(), rows, scale, true);
        for (int b = 0; b < n; ++b)
            std::copy_n(ys.data() + size_t(b) * rows, rows, y + brows[b] * ldy);
    }
}

}  // namespace hyprvdb_cpu
