// Sparse LoRA delta inside the matmul. T is float, __half or __nv_bfloat16 (x, W, y, bias);
// the delta's values are float32 and every sum is accumulated in float32.
#include "sparse_ops.cuh"

__device__ inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// y[b, r] += scale * sum_c x[b, c] * dW[r, c]: one warp per output row, HVDB_NB batch rows
// per blockIdx.y.
template <typename T>
__global__ void delta_matmul(const int* __restrict__ indptr, const int* __restrict__ indices,
                             const float* __restrict__ data, const T* __restrict__ x,
                             long long ldx, T* y, long long ldy, int rows, int batch,
                             float scale) {
    const int row = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int b0 = blockIdx.y * HVDB_NB;
    const int nb = min(HVDB_NB, batch - b0);
    float acc[HVDB_NB];
HVDB_UNROLL
    for (int b = 0; b < HVDB_NB; ++b) acc[b] = 0.0f;
    csr_row_dot<T>(indptr, indices, data, x + b0 * ldx, ldx, nb, row, lane, 32, acc);
HVDB_UNROLL
    for (int b = 0; b < HVDB_NB; ++b) acc[b] = warp_sum(acc[b]);
    if (lane == 0)
        for (int b = 0; b < nb; ++b) {
            T* p = y + (b0 + b) * ldy + row;
            from_f32(to_f32(*p) + scale * acc[b], p);
        }
}

// One block of the staged kernels: a tile of nb <= bt batch rows of x (rows brows[0 .. nb),
// or x's first nb rows where brows is null) staged in shared memory (bt * k elements of T,
// dynamic), then the block's warps take output rows blockIdx.x * warps + warp, then every
// gridDim.x * warps-th; each warp's lanes split into nonzero slots of bt batch columns
// (staged_row_dot), and a shuffle tree adds the slots.
template <typename T>
__device__ inline void staged_block(const int* __restrict__ indptr,
                                    const int* __restrict__ indices,
                                    const float* __restrict__ data, const T* __restrict__ x,
                                    long long ldx, const int* __restrict__ brows, int nb, T* y,
                                    long long ldy, int rows, int k, int bt, float scale) {
    extern __shared__ __align__(16) unsigned char hvdb_staged[];
    T* xs = reinterpret_cast<T*>(hvdb_staged);
    stage_x_tile<T>(x, ldx, brows, nb, k, bt, xs, threadIdx.x, blockDim.x);
    __syncthreads();
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int row = blockIdx.x * warps + (threadIdx.x >> 5); row < rows;
         row += gridDim.x * warps) {
        float acc = staged_row_dot<T>(indptr, indices, data, xs, bt, row, lane);
        for (int o = 16; o >= bt; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
        if (lane < nb) {
            T* p = y + (long long)(brows ? brows[lane] : lane) * ldy + row;
            from_f32(to_f32(*p) + scale * acc, p);
        }
    }
}

// The product for wide batches (kernels/sparse_ops.cuh, kProductStaged): blockIdx.y is the
// tile of bt batch rows.
template <typename T>
__global__ void delta_matmul_staged(const int* __restrict__ indptr,
                                    const int* __restrict__ indices,
                                    const float* __restrict__ data, const T* __restrict__ x,
                                    long long ldx, T* y, long long ldy, int rows, int k,
                                    int batch, int bt, float scale) {
    const long long b0 = (long long)blockIdx.y * bt;
    staged_block<T>(indptr, indices, data, x + b0 * ldx, ldx, nullptr,
                    (int)min((long long)bt, batch - b0), y + b0 * ldy, ldy, rows, k, bt,
                    scale);
}

// A mixed batch: y[b, r] += scale * sum_c x[b, c] * dW_seg[b][r, c] over stacked deltas
// (segment s's CSR offsets at indptr + s * (rows + 1)). One warp per output row, for tile t:
// at most HVDB_NB batch rows of one segment (order[tiles[3t] ..], length tiles[3t + 1],
// segment tiles[3t + 2]: csrc/cpu/linear.h segment_tiles builds them on the host,
// csrc/cuda/jax_ffi.cu on the device).
template <typename T>
__device__ inline void segments_tile(const int* __restrict__ indptr,
                                     const int* __restrict__ indices,
                                     const float* __restrict__ data, const T* __restrict__ x,
                                     long long ldx, T* y, long long ldy, int rows,
                                     const int* __restrict__ order,
                                     const int* __restrict__ tiles, int t, float scale) {
    const int row = (int)((blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int* tile = tiles + 3 * t;
    const int* brows = order + tile[0];
    const int nb = tile[1];
    const int* ip = indptr + (long long)tile[2] * (rows + 1);
    float acc[HVDB_NB];
HVDB_UNROLL
    for (int b = 0; b < HVDB_NB; ++b) acc[b] = 0.0f;
    csr_row_dot_rows<T>(ip, indices, data, x, ldx, brows, nb, row, lane, 32, acc);
HVDB_UNROLL
    for (int b = 0; b < HVDB_NB; ++b) acc[b] = warp_sum(acc[b]);
    if (lane == 0)
        for (int b = 0; b < nb; ++b) {
            T* p = y + brows[b] * ldy + row;
            from_f32(to_f32(*p) + scale * acc[b], p);
        }
}

// The mixed batch with blockIdx.y as the tile.
template <typename T>
__global__ void delta_matmul_segments(const int* __restrict__ indptr,
                                      const int* __restrict__ indices,
                                      const float* __restrict__ data, const T* __restrict__ x,
                                      long long ldx, T* y, long long ldy, int rows,
                                      const int* __restrict__ order,
                                      const int* __restrict__ tiles, float scale) {
    segments_tile<T>(indptr, indices, data, x, ldx, y, ldy, rows, order, tiles, blockIdx.y,
                     scale);
}

// A tile of a mixed batch by the staged kernel's way: the tile's rows of x (order[tiles[3t]
// ..], at most bt of them, one segment), each output row with the tile's segment's delta.
template <typename T>
__device__ inline void segments_staged_tile(const int* __restrict__ indptr,
                                            const int* __restrict__ indices,
                                            const float* __restrict__ data,
                                            const T* __restrict__ x, long long ldx, T* y,
                                            long long ldy, int rows, int k, int bt,
                                            const int* __restrict__ order,
                                            const int* __restrict__ tiles, int t, float scale) {
    const int* tile = tiles + 3 * t;
    staged_block<T>(indptr + (long long)tile[2] * (rows + 1), indices, data, x, ldx,
                    order + tile[0], tile[1], y, ldy, rows, k, bt, scale);
}

// The mixed batch, staged, with blockIdx.y as the tile (tiles of at most bt rows).
template <typename T>
__global__ void delta_matmul_segments_staged(const int* __restrict__ indptr,
                                             const int* __restrict__ indices,
                                             const float* __restrict__ data,
                                             const T* __restrict__ x, long long ldx, T* y,
                                             long long ldy, int rows, int k, int bt,
                                             const int* __restrict__ order,
                                             const int* __restrict__ tiles, float scale) {
    segments_staged_tile<T>(indptr, indices, data, x, ldx, y, ldy, rows, k, bt, order, tiles,
                            blockIdx.y, scale);
}

// y[b, r] = sum_i x[b, i] * W[r, i] + bias[r] + scale * sum_c x[b, c] * dW[r, c], in one pass
// over W's row and the delta's row: one block per output row and batch tile.
template <typename T>
__global__ void fused_linear(const T* __restrict__ W, long long ldw, const T* __restrict__ bias,
                             const int* __restrict__ indptr, const int* __restrict__ indices,
                             const float* __restrict__ data, const T* __restrict__ x,
                             long long ldx, T* __restrict__ y, long long ldy, int rows, int k,
                             int batch, float scale) {
    __shared__ float partial[32][HVDB_NB];
    const int row = blockIdx.x;
    const int b0 = blockIdx.y * HVDB_NB;
    const int nb = min(HVDB_NB, batch - b0);
    float acc[HVDB_NB], sacc[HVDB_NB];
HVDB_UNROLL
    for (int b = 0; b < HVDB_NB; ++b) acc[b] = sacc[b] = 0.0f;
    dense_row_dot<T>(W, ldw, x + b0 * ldx, ldx, nb, k, row, threadIdx.x, blockDim.x, acc);
    csr_row_dot<T>(indptr, indices, data, x + b0 * ldx, ldx, nb, row, threadIdx.x, blockDim.x,
                   sacc);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
HVDB_UNROLL
    for (int b = 0; b < HVDB_NB; ++b) {
        const float v = warp_sum(acc[b] + scale * sacc[b]);
        if (lane == 0) partial[warp][b] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        const int warps = (blockDim.x + 31) >> 5;
        const float bv = bias ? to_f32(bias[row]) : 0.0f;
        for (int b = 0; b < nb; ++b) {
            float s = bv;
            for (int w = 0; w < warps; ++w) s += partial[w][b];
            from_f32(s, y + (b0 + b) * ldy + row);
        }
    }
}
