// Values of a snapshot at a batch of (row, col) coordinates, by walking its NanoVDB tree on
// the GPU; 0 where a weight is inactive (values[0] is the background).
#include "nanovdb_index.cuh"

extern "C" __global__ void gather_index(const unsigned char* __restrict__ grid,
                                        const float* __restrict__ values,
                                        const long long* __restrict__ rows,
                                        const long long* __restrict__ cols, long long n,
                                        float* __restrict__ out) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const auto acc = reinterpret_cast<const hvdb_index_grid*>(grid)->getAccessor();
    out[i] = nvdb_gather(acc, values, rows[i], cols[i]);
}

// Values of matrices of a set snapshot at (matrix, row, col) triples; 0 where inactive.
extern "C" __global__ void gather_set(const unsigned char* __restrict__ grid,
                                      const long long* __restrict__ mats,
                                      const long long* __restrict__ rows,
                                      const long long* __restrict__ cols, long long n,
                                      float* __restrict__ out) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const auto* g = reinterpret_cast<const hvdb_index_grid*>(grid);
    const auto acc = g->getAccessor();
    out[i] = nvdb_set_gather(acc, hvdb_set_channels(g), mats[i], rows[i], cols[i]);
}
