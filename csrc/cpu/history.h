// A history's stored changes as the CPU extension reads them (layout: hyprvdb/history/_changes.py),
// read in place: the runs' integer arrays in the narrow widths they are kept in, the resets as
// sorted change positions, so that no query copies or widens the history.
//
// Three streams sorted by linear index (row * cols + col): the base (Z[0]); the change runs
// (each weight's changes contiguous, in step order, the weights gap-coded); and the write tail
// (recent slices' changes, sorted by index then step).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace hyprvdb_cpu {

// An unsigned integer array of width 1, 2, 4 or 8 bytes (the narrowest that holds it).
struct Narrow {
    const void* p;
    int width;
    size_t n;
    int64_t operator[](size_t i) const {
        switch (width) {
            case 1: return static_cast<const uint8_t*>(p)[i];
            case 2: return static_cast<const uint16_t*>(p)[i];
            case 4: return static_cast<const uint32_t*>(p)[i];
            default: return int64_t(static_cast<const uint64_t*>(p)[i]);
        }
    }
};

// Reset flags of the runs' changes, given as their sorted positions. Reads must come in
// increasing position (the rule walks each run forward); seek() repositions for a new run.
struct ResetFlags {
    const int64_t* pos;
    size_t n;
    mutable size_t k = 0;
    void seek(int64_t j) const { k = size_t(std::lower_bound(pos, pos + n, j) - pos); }
    bool operator[](long long j) const {
        while (k < n && pos[k] < j) ++k;
        return k < n && pos[k] == j;
    }
};

struct HistoryView {
    const int64_t* base_idx; const double* base_val; size_t n_base;
    Narrow gaps, counts;   // per distinct weight
    Narrow t; const float* d; ResetFlags reset;  // per change, run order
    const int64_t* tail_idx; const int32_t* tail_t; const double* tail_d;
    const uint8_t* tail_reset; size_t n_tail;    // sorted by (idx, t)
    size_t n_runs() const { return gaps.n; }
};

// Every weight that is in the base or changed at a step <= step: its linear index and float64
// value at step, sorted by index.
void history_state(const HistoryView& h, int64_t step, std::vector<int64_t>& idx,
                   std::vector<double>& val);

// Every kRunStride-th run of a history, so that one weight's run is found by a binary search
// and a short walk (instead of a pass over every run): the run's linear index, its number,
// and the position of its first change.
constexpr int64_t kRunStride = 64;
struct RunCheckpoints {
    const int64_t* idx; const int64_t* run; const int64_t* change; size_t n;
};

// The float64 values at step of the weights query[0..n); 0 for a weight that is neither in
// the base nor changed by then. Costs O(n (log runs + kRunStride) + tail) at most; sorted
// queries (what every caller passes) walk on from each other, so their walks together pass
// each run at most once.
void history_values(const HistoryView& h, const RunCheckpoints& ck, int64_t step,
                    const int64_t* query, size_t n, double* out);

}  // namespace hyprvdb_cpu
