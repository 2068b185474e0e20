// Adapter switching: W += scale * dW in place for many layers in one launch (unmerge passes
// -scale). The layers' deltas are concatenated in COO form; offsets[l] .. offsets[l+1] are
// layer l's nonzeros and Ws[l] its dense weight (row-major, leading dimension ldw[l]).
#include "sparse_ops.cuh"

template <typename T>
__global__ void merge_layers(T** Ws, const long long* __restrict__ ldw,
                            const long long* __restrict__ offsets, int layers,
                            const int* __restrict__ rows, const int* __restrict__ cols,
                            const float* __restrict__ data, float scale) {
    const long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (j >= offsets[layers]) return;
    int lo = 0, hi = layers - 1;  // the layer holding nonzero j
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (offsets[mid] <= j) lo = mid; else hi = mid - 1;
    }
    merge_one<T>(Ws[lo], ldw[lo], rows[j], cols[j], data[j], scale);
}
