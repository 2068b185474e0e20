// The weights at step t from a history's three sorted streams, merged by linear index in one
// pass: the base (Z[0]), the Z-runs (each weight's changes contiguous, in step order) and the
// tail (recent slices, sorted by index then step). A reset sets the value, an increment adds;
// sums are float64.
#include "core/zruns.h"

#include <algorithm>
#include <limits>

namespace hyprvdb {

void zruns_state(const ZRunsView& z, int64_t t, std::vector<int64_t>& idx_out,
                 std::vector<double>& val_out) {
    idx_out.clear();
    val_out.clear();
    constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();
    size_t b = 0, r = 0, k = 0;  // cursors: base entry, run, tail change
    size_t change = 0;           // first change of run r
    int64_t run_idx = z.n_runs ? z.gaps[0] : kEnd;
    while (true) {
        const int64_t bi = b < z.n_base ? z.base_idx[b] : kEnd;
        const int64_t ki = k < z.n_tail ? z.tail_idx[k] : kEnd;
        const int64_t idx = std::min({bi, run_idx, ki});
        if (idx == kEnd) break;
        double v = 0.0;
        bool touched = false;
        if (bi == idx) {
            v = z.base_val[b++];
            touched = true;
        }
        if (run_idx == idx) {
            const size_t stop = change + size_t(z.counts[r]);
            for (size_t j = change; j < stop && z.t[j] <= t; ++j) {
                v = z.reset[j] ? double(z.d[j]) : v + double(z.d[j]);
                touched = true;
            }
            change = stop;
            ++r;
            run_idx = r < z.n_runs ? run_idx + z.gaps[r] : kEnd;
        }
        for (; k < z.n_tail && z.tail_idx[k] == idx; ++k) {
            if (z.tail_t[k] > t) continue;
            v = z.tail_reset[k] ? z.tail_d[k] : v + z.tail_d[k];
            touched = true;
        }
        if (touched) {
            idx_out.push_back(idx);
            val_out.push_back(v);
        }
    }
}

}  // namespace hyprvdb
