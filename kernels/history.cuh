// The one rule for a weight's value at step t, shared by the GPU (window.cu), the CPU
// extension (csrc/cpu/history.cpp: states, values of chosen weights, windows) and, as its numpy
// twin, hyprvdb/_zaxis.py. A weight's changes are kept in step order; a reset sets the value,
// an increment adds to it; sums are float64 and are rounded once by the caller.
#pragma once
#include "common.cuh"

// The value after every change j in [start, stop) with t[j] <= step, starting from v. The
// arrays are anything indexable (pointers on the GPU; the CPU reads the history's narrow
// integer arrays in place), read in increasing j.
template <typename TA, typename DA, typename RA>
HVDB_HD inline double hvdb_value_at(double v, const TA& t, const DA& d, const RA& reset,
                                    long long start, long long stop, long long step) {
    for (long long j = start; j < stop && (long long)t[j] <= step; ++j)
        v = reset[j] ? (double)d[j] : v + (double)d[j];
    return v;
}

// Whether the weight has a change at a step <= step (it then belongs to the state at step).
template <typename TA>
HVDB_HD inline bool hvdb_changed_by(const TA& t, long long start, long long stop, long long step) {
    return start < stop && (long long)t[start] <= step;
}
