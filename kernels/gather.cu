// Values of a snapshot at a batch of (row, col) coordinates, by walking its NanoVDB tree on
// the GPU; 0 where a weight is inactive (values[0] is the background).
#include "nanovdb_index.cuh"

extern "C" __global__ void gather_index(const unsigned char* __restrict__ grid, long long root_off,
                                        long long tiles_off, int tile_count,
                                        const float* __restrict__ values,
                                        const long long* __restrict__ rows,
                                        const long long* __restrict__ cols, long long n,
                                        float* __restrict__ out) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = nvdb_gather(grid, root_off, tiles_off, tile_count, values, rows[i], cols[i]);
}
