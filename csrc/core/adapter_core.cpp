#include "core/adapter_core.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#pragma GCC visibility push(default)
#include <openvdb/tools/Prune.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#pragma GCC visibility pop

namespace hyprvdb {

namespace {

// Re-packs a leaf's values from the cells of mask `from` to the cells of mask `to`, both in
// mask order: a cell in both keeps its values, a cell only in `to` is zeroed, a cell only in
// `from` is dropped. dst may be src when `to` is a subset of `from` (cells only move forward).
void repack(const Word* from, const Word* to, const float* src, float* dst, uint32_t cs) {
    uint32_t s = 0, d = 0;
    for (int i = 0; i < kLeafWords; ++i) {
        for (Word bits = from[i] | to[i]; bits; bits &= bits - 1) {
            const Word low = bits & (~bits + 1);
            const bool in_from = from[i] & low, in_to = to[i] & low;
            if (in_to) {
                float* out = dst + size_t(d++) * cs;
                if (!in_from)
                    std::memset(out, 0, cs * sizeof(float));
                else if (out != src + size_t(s) * cs)
                    std::memmove(out, src + size_t(s) * cs, cs * sizeof(float));
            }
            s += in_from;
        }
    }
}

float* alloc_floats(size_t n) {
    if (n == 0) return nullptr;
    auto* p = static_cast<float*>(std::malloc(n * sizeof(float)));
    if (!p) throw std::bad_alloc();
    return p;
}

}  // namespace

int choose_zbits(int64_t cell_cols) {
    int log2c = 0;
    while ((int64_t(1) << log2c) < cell_cols) ++log2c;
    return std::clamp(log2c - 5, kLeafLog2, 7);
}

AdapterCore::AdapterCore(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols)
    : rows_(rows), cols_(cols), bh_(block_rows), bw_(block_cols) {
    constexpr int64_t kMaxDim = int64_t(1) << 31;
    if (rows <= 0 || rows >= kMaxDim)
        throw BadValue("rows must be in 1.." + std::to_string(kMaxDim - 1) + ", got " +
                       std::to_string(rows));
    if (cols <= 0 || cols >= kMaxDim)
        throw BadValue("cols must be in 1.." + std::to_string(kMaxDim - 1) + ", got " +
                       std::to_string(cols));
    if (bh_ <= 0 || bw_ <= 0 || rows % bh_ || cols % bw_ || bh_ * bw_ > (1 << 20))
        throw BadValue("block_shape (" + std::to_string(bh_) + ", " + std::to_string(bw_) +
                       ") must divide the shape (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + ") and hold at most 2**20 weights");
    crows_ = rows_ / bh_;
    ccols_ = cols_ / bw_;
    zbits_ = choose_zbits(ccols_);
    leaves_x_ = uint64_t((crows_ + kLeafDim - 1) / kLeafDim);
    leaves_y_ = uint64_t((((ccols_ - 1) >> zbits_) + 1 + kLeafDim - 1) / kLeafDim);
    leaves_z_ = uint64_t(1) << (zbits_ - kLeafLog2);
}

AdapterCore::AdapterCore(const AdapterCore& other)
    : rows_(other.rows_), cols_(other.cols_), bh_(other.bh_), bw_(other.bw_),
      crows_(other.crows_), ccols_(other.ccols_), zbits_(other.zbits_),
      leaves_x_(other.leaves_x_), leaves_y_(other.leaves_y_), leaves_z_(other.leaves_z_),
      tree_(other.tree_) {
    // Copy only the blocks in use, renumbering them densely.
    blocks_.reserve(other.active_cells() ? tree_.leafCount() : 0);
    for (auto it = tree_.beginLeaf(); it; ++it) {
        const ValueBlock& src = other.block_of(*it);
        ValueBlock b;
        b.size = src.size;
        b.data = alloc_floats(src.size);
        if (src.size) std::memcpy(b.data, src.data, src.size * sizeof(float));
        blocks_.push_back(b);
        it->setTransientData(openvdb::Index32(blocks_.size()));
    }
}

AdapterCore::~AdapterCore() {
    for (auto& b : blocks_) std::free(b.data);
}

void AdapterCore::clear() {
    for (auto& b : blocks_) std::free(b.data);
    blocks_.clear();
    blocks_.shrink_to_fit();
    free_blocks_.clear();
    free_blocks_.shrink_to_fit();
    tree_.clear();
}

ValueBlock& AdapterCore::block_of(const MaskLeaf& leaf) {
    return blocks_[leaf.transientData() - 1];
}
const ValueBlock& AdapterCore::block_of(const MaskLeaf& leaf) const {
    return blocks_[leaf.transientData() - 1];
}

uint32_t AdapterCore::new_block() {
    if (!free_blocks_.empty()) {
        uint32_t id = free_blocks_.back();
        free_blocks_.pop_back();
        return id + 1;
    }
    blocks_.push_back(ValueBlock{});
    return uint32_t(blocks_.size());
}

void AdapterCore::free_block(MaskLeaf& leaf) {
    const uint32_t id = leaf.transientData();
    if (!id) return;
    std::free(blocks_[id - 1].data);
    blocks_[id - 1] = ValueBlock{};
    free_blocks_.push_back(id - 1);
    leaf.setTransientData(0);
}

void AdapterCore::drop_leaf(MaskLeaf& leaf) {
    free_block(leaf);
    // Replacing the leaf by an inactive tile deletes the leaf node.
    tree_.addTile(1, leaf.origin(), false, false);
}

openvdb::Coord AdapterCore::leaf_origin(uint64_t id) const {
    const uint64_t lz = id % leaves_z_;
    const uint64_t ly = (id / leaves_z_) % leaves_y_;
    const uint64_t lx = id / (leaves_z_ * leaves_y_);
    return openvdb::Coord(int(lx << kLeafLog2), int(ly << kLeafLog2), int(lz << kLeafLog2));
}

void AdapterCore::group(const int64_t* r, const int64_t* c, size_t n, LeafGroups& g) const {
    if (n >= (size_t(1) << 32)) throw BadValue("batches are limited to 2**32 - 1 entries");
    // Validate first, so that the hot loop below has no branch that throws.
    check_coords(r, c, n);
    std::unique_ptr<uint64_t[]> keys(new uint64_t[n]);
    g.cell_offset.reset(new uint16_t[n]);
    const bool tiled = cell_size() > 1;
    if (tiled) g.inner.reset(new uint32_t[n]);
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1 << 16), [&](const auto& range) {
        for (size_t i = range.begin(); i != range.end(); ++i) {
            const Where w = where(r[i], c[i]);
            keys[i] = w.slot;
            g.cell_offset[i] = uint16_t(w.offset);
            if (tiled) g.inner[i] = w.inner;
        }
    });
    g.order.reset(new uint32_t[n]);
    g.leaf_ids.clear();
    g.group_start.clear();
    group_by_key(keys.get(), n, leaves_x_ * leaves_y_ * leaves_z_, g.order.get(),
                 [&](uint64_t leaf, uint32_t first) {
                     g.leaf_ids.push_back(leaf);
                     g.group_start.push_back(first);
                 });
    g.group_start.push_back(uint32_t(n));
}

void AdapterCore::set(const int64_t* r, const int64_t* c, const float* v, size_t n,
                      bool accumulate) {
    if (n == 0) return;
    LeafGroups g;
    group(r, c, n, g);
    // Structural changes (new leaves, new blocks) are serial; value work runs per leaf in
    // parallel since leaves share nothing.
    std::vector<MaskLeaf*> leaves(g.groups());
    {
        openvdb::tree::ValueAccessor<MaskTree> acc(tree_);
        for (size_t k = 0; k < g.groups(); ++k) {
            MaskLeaf* leaf = acc.touchLeaf(leaf_origin(g.leaf_ids[k]));
            if (!leaf->transientData()) leaf->setTransientData(new_block());
            leaves[k] = leaf;
        }
    }
    const uint32_t cs = uint32_t(cell_size());
    const bool tiled = cs > 1;
    tbb::parallel_for(tbb::blocked_range<size_t>(0, g.groups(), 16), [&](const auto& range) {
        uint32_t prefix[kLeafWords + 1];
        for (size_t k = range.begin(); k != range.end(); ++k) {
            MaskLeaf& leaf = *leaves[k];
            ValueBlock& b = blocks_[leaf.transientData() - 1];
            Word* w = words_of(leaf);
            Word old[kLeafWords];
            std::memcpy(old, w, sizeof(old));
            bool grew = false;
            for (uint32_t e = g.group_start[k]; e < g.group_start[k + 1]; ++e) {
                const uint32_t off = g.cell_offset[g.order[e]];
                const Word m = Word(1) << (off & 63);
                grew |= !(w[off >> 6] & m);
                w[off >> 6] |= m;
            }
            if (grew) {
                // Re-pack the block with the new cells zeroed, in mask order.
                const uint32_t total = count_on(w);
                float* data = alloc_floats(size_t(total) * cs);
                repack(old, w, b.data, data, cs);
                std::free(b.data);
                b.data = data;
                b.size = total * cs;
            }
            prefix_counts(w, prefix);
            for (uint32_t e = g.group_start[k]; e < g.group_start[k + 1]; ++e) {
                const uint32_t i = g.order[e];
                const size_t at = size_t(rank_of(w, prefix, g.cell_offset[i])) * cs +
                                  (tiled ? g.inner[i] : 0);
                if (accumulate)
                    b.data[at] += v[i];
                else
                    b.data[at] = v[i];
            }
        }
    });
}

void AdapterCore::get(const int64_t* r, const int64_t* c, size_t n, float* out,
                      uint8_t* active) const {
    if (n == 0) return;
    const uint64_t slots = leaves_x_ * leaves_y_ * leaves_z_;
    const size_t leaves = tree_.leafCount();
    if (slots <= (uint64_t(1) << 22) && n >= 4 * leaves && n >= 4096) {
        get_direct(r, c, n, out, active);
        return;
    }
    LeafGroups g;
    group(r, c, n, g);
    const uint32_t cs = uint32_t(cell_size());
    const bool tiled = cs > 1;
    tbb::parallel_for(tbb::blocked_range<size_t>(0, g.groups(), 16), [&](const auto& range) {
        uint32_t prefix[kLeafWords + 1];
        for (size_t k = range.begin(); k != range.end(); ++k) {
            const MaskLeaf* leaf = tree_.probeConstLeaf(leaf_origin(g.leaf_ids[k]));
            const uint32_t e0 = g.group_start[k], e1 = g.group_start[k + 1];
            if (!leaf) {
                for (uint32_t e = e0; e < e1; ++e) {
                    if (out) out[g.order[e]] = 0.0f;
                    if (active) active[g.order[e]] = 0;
                }
                continue;
            }
            const Word* w = words_of(*leaf);
            const float* data = block_of(*leaf).data;
            prefix_counts(w, prefix);
            for (uint32_t e = e0; e < e1; ++e) {
                const uint32_t i = g.order[e];
                const uint32_t off = g.cell_offset[i];
                const bool on = bit(w, off);
                if (active) active[i] = on;
                if (out)
                    out[i] = on ? data[size_t(rank_of(w, prefix, off)) * cs +
                                       (tiled ? g.inner[i] : 0)]
                                : 0.0f;
            }
        }
    });
}

// Many queries: a table from leaf slot to leaf, and every leaf's per-word popcount prefix,
// built once (O(leaves)), make each lookup O(1) with no sorting of the queries.
void AdapterCore::get_direct(const int64_t* r, const int64_t* c, size_t n, float* out,
                             uint8_t* active) const {
    check_coords(r, c, n);
    const uint64_t slots = leaves_x_ * leaves_y_ * leaves_z_;
    std::vector<int32_t> slot_leaf(slots, -1);
    std::vector<const MaskLeaf*> leaves;
    leaves.reserve(tree_.leafCount());
    for (auto it = tree_.cbeginLeaf(); it; ++it) {
        const openvdb::Coord o = it->origin();
        slot_leaf[slot_of(uint64_t(o.x()), uint64_t(o.y()), uint64_t(o.z()))] =
            int32_t(leaves.size());
        leaves.push_back(&*it);
    }
    std::vector<uint32_t> prefix(leaves.size() * (kLeafWords + 1));
    tbb::parallel_for(tbb::blocked_range<size_t>(0, leaves.size(), 256), [&](const auto& rg) {
        for (size_t l = rg.begin(); l != rg.end(); ++l)
            prefix_counts(words_of(*leaves[l]), &prefix[l * (kLeafWords + 1)]);
    });
    const int64_t cs = cell_size();
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1 << 14), [&](const auto& rg) {
        for (size_t i = rg.begin(); i != rg.end(); ++i) {
            const Where at = where(r[i], c[i]);
            const int32_t l = slot_leaf[at.slot];
            float v = 0.0f;
            bool on = false;
            if (l >= 0) {
                const Word* w = words_of(*leaves[size_t(l)]);
                on = bit(w, at.offset);
                if (on) {
                    const uint32_t rank = rank_of(w, &prefix[size_t(l) * (kLeafWords + 1)], at.offset);
                    v = block_of(*leaves[size_t(l)]).data[size_t(rank) * cs + at.inner];
                }
            }
            if (out) out[i] = v;
            if (active) active[i] = on;
        }
    });
}

void AdapterCore::check_coords(const int64_t* r, const int64_t* c, size_t n) const {
    for (size_t i = 0; i < n; ++i) {
        if (r[i] < 0 || r[i] >= rows_) throw OutOfRange(coord_error("rows", i, r[i], rows_));
        if (c[i] < 0 || c[i] >= cols_) throw OutOfRange(coord_error("cols", i, c[i], cols_));
    }
}

void AdapterCore::shrink(ValueBlock& b, uint32_t floats) {
    float* smaller = static_cast<float*>(std::realloc(b.data, size_t(floats) * sizeof(float)));
    if (smaller) b.data = smaller;
    b.size = floats;
}

size_t AdapterCore::remove(const int64_t* r, const int64_t* c, size_t n) {
    if (n == 0) return 0;
    LeafGroups g;
    group(r, c, n, g);
    const uint32_t cs = uint32_t(cell_size());
    size_t removed = 0;
    std::vector<MaskLeaf*> emptied;
    for (size_t k = 0; k < g.groups(); ++k) {
        MaskLeaf* leaf = tree_.probeLeaf(leaf_origin(g.leaf_ids[k]));
        if (!leaf) continue;
        Word* w = words_of(*leaf);
        Word old[kLeafWords];
        std::memcpy(old, w, sizeof(old));
        for (uint32_t e = g.group_start[k]; e < g.group_start[k + 1]; ++e) {
            const uint32_t off = g.cell_offset[g.order[e]];
            w[off >> 6] &= ~(Word(1) << (off & 63));
        }
        const uint32_t total = count_on(w), before = count_on(old);
        if (total == before) continue;
        removed += before - total;
        if (total == 0) {
            emptied.push_back(leaf);
            continue;
        }
        ValueBlock& b = block_of(*leaf);
        repack(old, w, b.data, b.data, cs);  // compact in place: kept cells move forward
        shrink(b, total * cs);
    }
    for (MaskLeaf* leaf : emptied) drop_leaf(*leaf);
    return removed;
}

size_t AdapterCore::zero(const int64_t* r, const int64_t* c, size_t n) {
    if (n == 0) return 0;
    std::vector<uint8_t> on(n);
    get(r, c, n, nullptr, on.data());
    std::vector<int64_t> rr, cc, keys;
    for (size_t i = 0; i < n; ++i)
        if (on[i]) {
            rr.push_back(r[i]);
            cc.push_back(c[i]);
            keys.push_back(r[i] * cols_ + c[i]);
        }
    std::vector<float> zeros(rr.size(), 0.0f);
    set(rr.data(), cc.data(), zeros.data(), rr.size(), false);
    // A weight listed twice is still one weight.
    std::sort(keys.begin(), keys.end());
    return size_t(std::unique(keys.begin(), keys.end()) - keys.begin());
}

size_t AdapterCore::prune(float tolerance) {
    const uint32_t cs = uint32_t(cell_size());
    size_t dropped = 0;
    std::vector<MaskLeaf*> emptied;
    for (auto it = tree_.beginLeaf(); it; ++it) {
        MaskLeaf& leaf = *it;
        ValueBlock& b = block_of(leaf);
        Word* w = words_of(leaf);
        Word old[kLeafWords];
        std::memcpy(old, w, sizeof(old));
        uint32_t cell = 0;
        for (int i = 0; i < kLeafWords; ++i) {
            for (Word bits = old[i]; bits; bits &= bits - 1, ++cell) {
                const float* values = b.data + size_t(cell) * cs;
                bool keep = false;
                // NaN is never "within the tolerance": only |w| <= tolerance drops a weight.
                for (uint32_t j = 0; j < cs && !keep; ++j) keep = !(std::fabs(values[j]) <= tolerance);
                if (!keep) w[i] &= ~(bits & (~bits + 1));
            }
        }
        const uint32_t kept = count_on(w);
        dropped += cell - kept;
        if (kept == 0) {
            emptied.push_back(&leaf);
        } else if (kept != cell) {
            repack(old, w, b.data, b.data, cs);
            shrink(b, kept * cs);
        }
    }
    for (MaskLeaf* leaf : emptied) free_block(*leaf);
    // Leaves left empty (here or by earlier removals) and internal nodes with no children go.
    openvdb::tools::pruneInactive(tree_);
    // Renumber the blocks densely so the table holds no holes.
    std::vector<ValueBlock> packed;
    packed.reserve(tree_.leafCount());
    for (auto it = tree_.beginLeaf(); it; ++it) {
        packed.push_back(block_of(*it));
        it->setTransientData(openvdb::Index32(packed.size()));
    }
    blocks_.swap(packed);
    free_blocks_.clear();
    free_blocks_.shrink_to_fit();
    return dropped;
}

uint64_t AdapterCore::active_cells() const { return tree_.activeVoxelCount(); }

size_t AdapterCore::leaf_count() const { return tree_.leafCount(); }

size_t AdapterCore::memory_usage() const {
    // Tree nodes as OpenVDB counts them, plus what the heap really spends on each leaf.
    size_t bytes = sizeof(*this) + size_t(tree_.memUsage());
    for (auto it = tree_.cbeginLeaf(); it; ++it) {
        bytes += heap_bytes(&*it) - sizeof(MaskLeaf);
        bytes += heap_bytes(block_of(*it).data);
    }
    bytes += blocks_.capacity() * sizeof(ValueBlock) + kChunkHeader;
    bytes += free_blocks_.capacity() * sizeof(uint32_t);
    return bytes;
}

void AdapterCore::export_active(std::vector<int64_t>& rows, std::vector<int64_t>& cols,
                                std::vector<float>& vals) const {
    const uint64_t total = active_count();
    std::vector<int64_t> r(total), c(total);
    std::vector<float> v(total);
    size_t k = 0;
    for_each_active([&](int64_t row, int64_t col, float value) {
        r[k] = row;
        c[k] = col;
        v[k++] = value;
    });
    if (uint64_t(rows_) > 4 * total) {
        // Few weights in many rows: a comparison sort, so the cost follows the weights and
        // not the shape.
        std::vector<uint64_t> order(total);
        std::iota(order.begin(), order.end(), uint64_t(0));
        std::sort(order.begin(), order.end(), [&](uint64_t a, uint64_t b) {
            return r[a] != r[b] ? r[a] < r[b] : c[a] < c[b];
        });
        rows.resize(total);
        cols.resize(total);
        vals.resize(total);
        for (size_t i = 0; i < total; ++i) {
            rows[i] = r[order[i]];
            cols[i] = c[order[i]];
            vals[i] = v[order[i]];
        }
        return;
    }
    // Row-major order: counting sort on the row, then sort each row by column.
    std::vector<uint64_t> start(size_t(rows_) + 1, 0);
    for (size_t i = 0; i < total; ++i) ++start[size_t(r[i]) + 1];
    for (int64_t i = 0; i < rows_; ++i) start[i + 1] += start[i];
    rows.assign(total, 0);
    cols.resize(total);
    vals.resize(total);
    {
        std::vector<uint64_t> next(start.begin(), start.end() - 1);
        for (size_t i = 0; i < total; ++i) {
            const uint64_t at = next[size_t(r[i])]++;
            rows[at] = r[i];
            cols[at] = c[i];
            vals[at] = v[i];
        }
    }
    std::vector<std::pair<int64_t, float>> tmp;
    for (int64_t row = 0; row < rows_; ++row) {
        const uint64_t a = start[row], b = start[row + 1];
        if (b - a < 2) continue;
        bool sorted = true;
        for (uint64_t i = a + 1; i < b && sorted; ++i) sorted = cols[i - 1] < cols[i];
        if (sorted) continue;
        tmp.clear();
        for (uint64_t i = a; i < b; ++i) tmp.emplace_back(cols[i], vals[i]);
        std::sort(tmp.begin(), tmp.end(),
                  [](const auto& x, const auto& y) { return x.first < y.first; });
        for (uint64_t i = a; i < b; ++i) {
            cols[i] = tmp[i - a].first;
            vals[i] = tmp[i - a].second;
        }
    }
}

void AdapterCore::to_dense(float* out) const {
    for_each_active([&](int64_t row, int64_t col, float value) { out[row * cols_ + col] = value; });
}

void AdapterCore::from_dense(const float* dense, float tolerance) {
    if (active_cells() != 0) throw BadValue("from_dense needs an empty adapter");
    // Collect the active cells' coordinates, then load them in one batch.
    std::vector<int64_t> r, c;
    std::vector<float> v;
    for (int64_t R = 0; R < crows_; ++R) {
        for (int64_t C = 0; C < ccols_; ++C) {
            bool on = false;
            for (int64_t i = 0; i < bh_ && !on; ++i)
                for (int64_t j = 0; j < bw_ && !on; ++j)
                    on = !(std::fabs(dense[(R * bh_ + i) * cols_ + C * bw_ + j]) <= tolerance);
            if (!on) continue;
            for (int64_t i = 0; i < bh_; ++i)
                for (int64_t j = 0; j < bw_; ++j) {
                    r.push_back(R * bh_ + i);
                    c.push_back(C * bw_ + j);
                    v.push_back(dense[(R * bh_ + i) * cols_ + C * bw_ + j]);
                }
        }
    }
    set(r.data(), c.data(), v.data(), r.size(), false);
}

}  // namespace hyprvdb
