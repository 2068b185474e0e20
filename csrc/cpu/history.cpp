// A history's state at step t: one merge pass by linear index over the base, the change runs and
// the write tail, each weight's value given by the rule of kernels/history.cuh.
#include "cpu/history.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "../../kernels/history.cuh"

namespace hyprvdb_cpu {

namespace {

// Calls visit(idx, value) for every weight that is in the base or has a change at a step <= step,
// in index order.
template <typename Visit>
void walk(const HistoryView& h, int64_t step, Visit&& visit) {
    constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();
    size_t b = 0, r = 0, k = 0;  // cursors: base entry, run, tail change
    size_t change = 0;           // first change of run r
    const size_t n_runs = h.n_runs();
    int64_t run_idx = n_runs ? h.gaps[0] : kEnd;
    while (true) {
        const int64_t bi = b < h.n_base ? h.base_idx[b] : kEnd;
        const int64_t ki = k < h.n_tail ? h.tail_idx[k] : kEnd;
        const int64_t idx = std::min({bi, run_idx, ki});
        if (idx == kEnd) break;
        double v = 0.0;
        bool touched = false;
        if (bi == idx) {
            v = h.base_val[b++];
            touched = true;
        }
        if (run_idx == idx) {
            const size_t stop = change + size_t(h.counts[r]);  // resets are read in order
            if (hvdb_changed_by(h.t, (long long)change, (long long)stop, step)) {
                v = hvdb_value_at(v, h.t, h.d, h.reset, (long long)change, (long long)stop, step);
                touched = true;
            }
            change = stop;
            ++r;
            run_idx = r < n_runs ? run_idx + h.gaps[r] : kEnd;
        }
        size_t stop = k;
        while (stop < h.n_tail && h.tail_idx[stop] == idx) ++stop;
        if (hvdb_changed_by(h.tail_t, (long long)k, (long long)stop, step)) {
            v = hvdb_value_at(v, h.tail_t, h.tail_d, h.tail_reset, (long long)k, (long long)stop,
                              step);
            touched = true;
        }
        k = stop;
        if (touched) visit(idx, v);
    }
}

}  // namespace

void history_state(const HistoryView& h, int64_t step, std::vector<int64_t>& idx,
                   std::vector<double>& val) {
    idx.clear();
    val.clear();
    walk(h, step, [&](int64_t i, double v) {
        idx.push_back(i);
        val.push_back(v);
    });
}

void history_values(const HistoryView& h, const RunCheckpoints& ck, int64_t step,
                    const int64_t* query, size_t n, double* out) {
    // Sorted queries continue from where the one before stopped: a cursor over the runs (run
    // r, its index, the position of its first change) and over the base and the tail. A query
    // below the one before restarts them (any order is answered; sorted is fast).
    const int64_t* const base_end = h.base_idx + h.n_base;
    const int64_t* const tail_end = h.tail_idx + h.n_tail;
    const int64_t* bcur = h.base_idx;
    const int64_t* tcur = h.tail_idx;
    int64_t r = -1, idx = 0, change = 0, prev = INT64_MIN;
    for (size_t i = 0; i < n; ++i) {
        const int64_t q = query[i];
        if (q < prev) {
            bcur = h.base_idx;
            tcur = h.tail_idx;
            r = -1;
        }
        prev = q;
        double v = 0.0;
        // the base
        bcur = std::lower_bound(bcur, base_end, q);
        if (bcur != base_end && *bcur == q) v = h.base_val[bcur - h.base_idx];
        // the run: from the cursor, or from the last checkpoint at or before q where that is
        // further on; then a walk of at most kRunStride runs
        const int64_t* c = std::upper_bound(ck.idx, ck.idx + ck.n, q);
        if (c != ck.idx) {
            const size_t k = size_t(c - ck.idx) - 1;
            if (r < ck.run[k]) r = ck.run[k], idx = ck.idx[k], change = ck.change[k];
            while (idx < q && r + 1 < int64_t(h.n_runs())) {
                change += h.counts[r];
                idx += h.gaps[++r];
            }
            if (idx == q) {
                const long long start = change, stop = change + h.counts[r];
                if (stop > (long long)h.t.n) throw std::out_of_range("a run ends past the changes");
                h.reset.seek(start);
                v = hvdb_value_at(v, h.t, h.d, h.reset, start, stop, step);
            }
        }
        // the tail: this weight's changes are contiguous (sorted by index, then step)
        tcur = std::lower_bound(tcur, tail_end, q);
        const int64_t* t1 = std::upper_bound(tcur, tail_end, q);
        v = hvdb_value_at(v, h.tail_t, h.tail_d, h.tail_reset, (long long)(tcur - h.tail_idx),
                          (long long)(t1 - h.tail_idx), step);
        out[i] = v;
    }
}

}  // namespace hyprvdb_cpu
