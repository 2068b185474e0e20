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
