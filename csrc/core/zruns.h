// Queries over a TemporalAdapter's Z-runs (see hyprvdb/_zruns.py for the layout).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace hyprvdb {

struct ZRunsView {
    const int64_t* base_idx; const double* base_val; size_t n_base;
    const int64_t* gaps; const int64_t* counts; size_t n_runs;  // per distinct weight
    const int32_t* t; const float* d; const uint8_t* reset;     // per change, run order
    const int64_t* tail_idx; const int32_t* tail_t; const double* tail_d;
    const uint8_t* tail_reset; size_t n_tail;                   // sorted by (idx, t)
};

// Every weight that is in the base or changed at a step <= t: its linear index and float64
// value at t, sorted by index.
void zruns_state(const ZRunsView& z, int64_t t, std::vector<int64_t>& idx,
                 std::vector<double>& val);

}  // namespace hyprvdb
