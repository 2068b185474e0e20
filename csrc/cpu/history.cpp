// A history's state at step t: one merge pass by linear index over the base, the change runs and
// the write tail, each weight's value given by the rule of kernels/history.cuh.
#include "cpu/history.h"

#include <algorithm>
#include <limits>

#include "../../kernels/history.cuh"

namespace hyprvdb_cpu {

namespace {

// Calls visit(idx, value) for every weight present in any stream and wanted by want(idx), in
// index order; value is nullopt-like (touched = false) when the weight has no entry <= step.
template <typename Want, typename Visit>
void walk(const HistoryView& h, int64_t step, Want&& want, Visit&& visit) {
    constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();
    size_t b = 0, r = 0, k = 0;  // cursors: base entry, run, tail change
    size_t change = 0;           // first change of run r
    int64_t run_idx = h.n_runs ? h.gaps[0] : kEnd;
    while (true) {
        const int64_t bi = b < h.n_base ? h.base_idx[b] : kEnd;
        const int64_t ki = k < h.n_tail ? h.tail_idx[k] : kEnd;
        const int64_t idx = std::min({bi, run_idx, ki});
        if (idx == kEnd) break;
        const bool wanted = want(idx);
        double v = 0.0;
        bool touched = false;
        if (bi == idx) {
            v = h.base_val[b++];
            touched = true;
        }
        if (run_idx == idx) {
            const size_t stop = change + size_t(h.counts[r]);
            if (wanted && hvdb_changed_by(h.t, (long long)change, (long long)stop, step)) {
                v = hvdb_value_at(v, h.t, h.d, h.reset, (long long)change, (long long)stop, step);
                touched = true;
            }
            change = stop;
            ++r;
            run_idx = r < h.n_runs ? run_idx + h.gaps[r] : kEnd;
        }
        size_t stop = k;
        while (stop < h.n_tail && h.tail_idx[stop] == idx) ++stop;
        if (wanted && hvdb_changed_by(h.tail_t, (long long)k, (long long)stop, step)) {
            v = hvdb_value_at(v, h.tail_t, h.tail_d, h.tail_reset, (long long)k, (long long)stop,
                              step);
            touched = true;
        }
        k = stop;
        if (wanted && touched) visit(idx, v);
    }
}

}  // namespace

void history_state(const HistoryView& h, int64_t step, std::vector<int64_t>& idx,
                   std::vector<double>& val) {
    idx.clear();
    val.clear();
    walk(h, step, [](int64_t) { return true; }, [&](int64_t i, double v) {
        idx.push_back(i);
        val.push_back(v);
    });
}

void history_values(const HistoryView& h, int64_t step, const int64_t* query, size_t n,
                    double* out) {
    std::fill(out, out + n, 0.0);
    size_t q = 0;  // the walk visits indices in increasing order, as the queries are sorted
    auto want = [&](int64_t i) {
        while (q < n && query[q] < i) ++q;
        return q < n && query[q] == i;
    };
    walk(h, step, want, [&](int64_t, double v) { out[q] = v; });
}

}  // namespace hyprvdb_cpu
