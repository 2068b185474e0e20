// Time windows: weights rebuilt on the GPU from the history's change runs. Thread per run (one
// weight's changes in step order). mode 0 writes the sum of the slices in (t0, t1], mode 1
// the weight at t1; out is the dense row-major matrix, indexed by the run's linear index.
#include "history.cuh"

extern "C" __global__ void window_rebuild(const long long* __restrict__ run_start,
                                          const long long* __restrict__ run_idx,
                                          const int* __restrict__ t,
                                          const float* __restrict__ d,
                                          const unsigned char* __restrict__ reset,
                                          const double* __restrict__ base_of_run, int n_runs,
                                          int t0, int t1, int mode, float* out) {
    const long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (r >= n_runs) return;
    const long long a = run_start[r], b = run_start[r + 1];
    const double v1 = hvdb_value_at(base_of_run[r], t, d, reset, a, b, t1);
    if (mode == 0)
        out[run_idx[r]] = (float)(v1 - hvdb_value_at(base_of_run[r], t, d, reset, a, b, t0));
    else
        out[run_idx[r]] = (float)v1;
}
