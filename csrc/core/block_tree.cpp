#include "core/block_tree.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <numeric>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#pragma GCC visibility push(default)
#include <openvdb/tools/Prune.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#pragma GCC visibility pop

namespace hyprvdb {

struct LeafData {
    uint32_t n;     // weights held
    uint16_t k;     // active cells (at most 4096)
    uint8_t dense;  // the form: 0 sparse, 1 dense
    uint8_t pad;
};
static_assert(sizeof(LeafData) == 8);

openvdb::Coord fold(uint64_t g) {
    uint32_t x = uint32_t(g >> 8) & 15, y = uint32_t(g >> 4) & 15, z = uint32_t(g) & 15;
    g >>= 3 * kLeafLog2;
    for (int s = kLeafLog2; g; s += 3, g >>= 9) {
        z |= uint32_t(g & 7) << s;
        y |= uint32_t((g >> 3) & 7) << s;
        x |= uint32_t((g >> 6) & 7) << s;
    }
    return openvdb::Coord(int32_t(x), int32_t(y), int32_t(z));
}

uint64_t unfold(const openvdb::Coord& xyz) {
    const uint64_t x = uint32_t(xyz.x()), y = uint32_t(xyz.y()), z = uint32_t(xyz.z());
    uint64_t g = ((x & 15) << 8) | ((y & 15) << 4) | (z & 15);
    for (int s = kLeafLog2, at = 3 * kLeafLog2; at < 64; s += 3, at += 9) {
        const uint64_t chunk = ((z >> s) & 7) | (((y >> s) & 7) << 3) | (((x >> s) & 7) << 6);
        g |= chunk << at;
    }
    return g;
}

namespace {

constexpr uint32_t kCellMask = kLeafCells - 1;

// A sparse payload ends with kScanPad spare bytes, so that a scan may load 16 offsets at once.
constexpr size_t kScanPad = 15;

size_t payload_bytes(bool dense, uint32_t n, uint32_t k) {
    return sizeof(LeafData) + (dense ? 8 * size_t(k) + 4 * (size_t(k) + 1) + 4 * size_t(n)
                                     : 4 * size_t(n) + 2 * (size_t(k) + 1) + size_t(n) + kScanPad);
}

// The form a leaf of n weights in k cells takes, given the one it had (-1: a new leaf). A
// new leaf takes the cheaper form (dense past 10k + 2 weights), kept inside the band the
// other two rules hold: never sparse at 12k or more (which 10k + 2 would allow for k = 1).
bool choose_dense(uint32_t n, uint32_t k, int prev) {
    if (prev == 1) return n > 8 * k;
    if (prev == 0) return n >= 12 * k;
    return n > 10 * k + 2 || n >= 12 * k;
}

// Pointers into a payload.
struct Parts {
    float* vals = nullptr;
    uint64_t* masks = nullptr;  // dense
    uint32_t* s32 = nullptr;    // dense: starts
    uint16_t* s16 = nullptr;    // sparse: starts
    uint8_t* offs = nullptr;    // sparse: in-block offsets
    uint32_t n = 0, k = 0;
    bool dense = false;
};

Parts parts(const LeafData* d) {
    Parts p;
    if (!d) return p;
    char* base = reinterpret_cast<char*>(const_cast<LeafData*>(d) + 1);
    p.n = d->n;
    p.k = d->k;
    p.dense = d->dense;
    if (p.dense) {
        p.masks = reinterpret_cast<uint64_t*>(base);
        p.s32 = reinterpret_cast<uint32_t*>(p.masks + p.k);
        p.vals = reinterpret_cast<float*>(p.s32 + p.k + 1);
    } else {
        p.vals = reinterpret_cast<float*>(base);
        p.s16 = reinterpret_cast<uint16_t*>(p.vals + p.n);
        p.offs = reinterpret_cast<uint8_t*>(p.s16 + p.k + 1);
    }
    return p;
}

// Where `inner` is among `len` sorted, distinct in-block offsets, or -1. Sixteen are compared
// at once, so that the answer costs no data-dependent branch.
inline int64_t scan(const uint8_t* a, uint32_t len, uint32_t inner) {
#if defined(__SSE2__)
    const __m128i want = _mm_set1_epi8(char(inner));
    for (uint32_t base = 0;; base += 16, a += 16, len -= 16) {
        const __m128i got = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
        uint32_t hit = uint32_t(_mm_movemask_epi8(_mm_cmpeq_epi8(got, want)));
        if (len < 16) hit &= (1u << len) - 1;
        if (hit) return int64_t(base + uint32_t(__builtin_ctz(hit)));
        if (len <= 16) return -1;
    }
#else
    for (uint32_t j = 0; j < len && a[j] <= inner; ++j)
        if (a[j] == inner) return j;
    return -1;
#endif
}

// The in-block bitmask of the cell of rank i.
inline uint64_t cell_mask(const Parts& p, uint32_t i) {
    if (p.dense) return p.masks[i];
    uint64_t m = 0;
    for (uint32_t j = p.s16[i]; j < p.s16[i + 1]; ++j) m |= uint64_t(1) << p.offs[j];
    return m;
}

// Where weight `inner` of the cell of rank i sits in the leaf's values, or -1.
inline int64_t find_in_cell(const Parts& p, uint32_t i, uint32_t inner) {
    if (p.dense) {
        const uint64_t m = p.masks[i];
        if (!((m >> inner) & 1)) return -1;
        return int64_t(p.s32[i]) + __builtin_popcountll(m & ((uint64_t(1) << inner) - 1));
    }
    const uint32_t s = p.s16[i];
    const int64_t j = scan(p.offs + s, uint32_t(p.s16[i + 1]) - s, inner);
    return j < 0 ? -1 : int64_t(s) + j;
}

// Where weight `inner` of the cell at mask offset `off` sits in the leaf's values, or -1.
inline int64_t find(const Parts& p, const Word* w, const uint32_t* prefix, uint32_t off,
                    uint32_t inner) {
    if (!bit(w, off)) return -1;
    return find_in_cell(p, rank_of(w, prefix, off), inner);
}

// Per-thread work space of a leaf being changed, indexed by cell offset: the cells' in-block
// bitmasks after and before the change, and where each cell's values start. Only the entries
// of touched cells are written, and they are cleared again after use.
struct Scratch {
    std::vector<uint64_t> cell, old;
    std::vector<uint32_t> start;
    std::vector<int64_t> pos;
    Scratch() : cell(kLeafCells, 0), old(kLeafCells, 0), start(kLeafCells, 0) {}
};

// Leaves a thread's scratch all zero should a leaf's rebuild fail half way.
struct ScratchGuard {
    Scratch& s;
    explicit ScratchGuard(Scratch& scratch) : s(scratch) {}
    ~ScratchGuard() {
        if (std::uncaught_exceptions()) {
            std::fill(s.cell.begin(), s.cell.end(), 0);
            std::fill(s.old.begin(), s.old.end(), 0);
        }
    }
};

// Rebuilds a leaf's payload after new weights were added: `grown` is the leaf's new cell
// mask, s.cell[off] holds each cell's new weights' bits (old weights' bits are added here).
// Old weights keep their values, new ones start at 0. Leaves s.cell and s.start filled for
// the cells of `grown`; the caller clears them.
LeafData* regrow(const LeafData* d, const Word* w, const Word* grown, uint32_t added,
                 Scratch& s) {
    const Parts p = parts(d);
    if (d) {
        uint32_t i = 0;
        for (int wi = 0; wi < kLeafWords; ++wi)
            for (Word bits = w[wi]; bits; bits &= bits - 1, ++i) {
                const uint32_t off = uint32_t(wi * 64 + __builtin_ctzll(bits));
                s.old[off] = cell_mask(p, i);
                s.cell[off] |= s.old[off];
            }
    }
    const uint32_t n = p.n + added, k = count_on(grown);
    const bool dense = choose_dense(n, k, d ? d->dense : -1);
    auto* out = static_cast<LeafData*>(std::malloc(payload_bytes(dense, n, k)));
    if (!out) throw std::bad_alloc();
    *out = LeafData{n, uint16_t(k), uint8_t(dense), 0};
    const Parts q = parts(out);
    if (!d) std::memset(q.vals, 0, size_t(n) * sizeof(float));
    uint32_t i = 0, e = 0, from = 0;
    for (int wi = 0; wi < kLeafWords; ++wi)
        for (Word bits = grown[wi]; bits; bits &= bits - 1, ++i) {
            const uint32_t off = uint32_t(wi * 64 + __builtin_ctzll(bits));
            const uint64_t m = s.cell[off];
            s.start[off] = e;
            if (dense) {
                q.masks[i] = m;
                q.s32[i] = e;
            } else {
                q.s16[i] = uint16_t(e);
                for (uint64_t b = m; b; b &= b - 1) q.offs[e++] = uint8_t(__builtin_ctzll(b));
                e -= uint32_t(__builtin_popcountll(m));
            }
            if (d) {
                const uint64_t om = s.old[off];
                for (uint64_t b = m; b; b &= b - 1)
                    q.vals[e++] = (om >> __builtin_ctzll(b)) & 1 ? p.vals[from++] : 0.0f;
                s.old[off] = 0;
            } else {
                e += uint32_t(__builtin_popcountll(m));
            }
        }
    if (dense) q.s32[k] = n; else q.s16[k] = uint16_t(n);
    return out;
}

// Rebuilds a leaf's payload without the weights whose bits s.cell[off] holds (each one held
// by the leaf; `dropped` of them), and clears the leaf's mask of cells left empty. Returns
// null when nothing is left. Leaves the scratch all zero.
LeafData* shrink(const LeafData* d, Word* w, uint32_t dropped, Scratch& s) {
    const Parts p = parts(d);
    const uint32_t n = p.n - dropped;
    Word kept[kLeafWords];
    std::memcpy(kept, w, sizeof(kept));
    uint32_t i = 0;
    for (int wi = 0; wi < kLeafWords; ++wi)
        for (Word bits = w[wi]; bits; bits &= bits - 1, ++i) {
            const uint32_t off = uint32_t(wi * 64 + __builtin_ctzll(bits));
            s.old[off] = cell_mask(p, i);
            if (!(s.old[off] & ~s.cell[off])) kept[wi] &= ~(bits & (~bits + 1));
        }
    LeafData* out = nullptr;
    Parts q;
    bool dense = false;
    if (n) {
        const uint32_t k = count_on(kept);
        dense = choose_dense(n, k, p.dense);
        out = static_cast<LeafData*>(std::malloc(payload_bytes(dense, n, k)));
        if (!out) throw std::bad_alloc();
        *out = LeafData{n, uint16_t(k), uint8_t(dense), 0};
        q = parts(out);
        if (dense) q.s32[k] = n; else q.s16[k] = uint16_t(n);
    }
    uint32_t j = 0, e = 0, from = 0;
    for (int wi = 0; wi < kLeafWords; ++wi)
        for (Word bits = w[wi]; bits; bits &= bits - 1) {
            const uint32_t off = uint32_t(wi * 64 + __builtin_ctzll(bits));
            const uint64_t om = s.old[off], nm = om & ~s.cell[off];
            s.old[off] = s.cell[off] = 0;
            if (!nm) {
                from += uint32_t(__builtin_popcountll(om));
                continue;
            }
            if (dense) {
                q.masks[j] = nm;
                q.s32[j] = e;
            } else {
                q.s16[j] = uint16_t(e);
            }
            ++j;
            for (uint64_t b = om; b; b &= b - 1, ++from) {
                const uint32_t inner = uint32_t(__builtin_ctzll(b));
                if (!((nm >> inner) & 1)) continue;
                if (!dense) q.offs[e] = uint8_t(inner);
                q.vals[e++] = p.vals[from];
            }
        }
    std::memcpy(w, kept, sizeof(kept));
    return out;
}

}  // namespace

// Entries of one batch, validated and grouped by the leaf they fall in (input order kept).
struct BlockTree::Groups {
    std::unique_ptr<uint32_t[]> order;
    std::unique_ptr<uint32_t[]> key;  // in grouped order: cell offset << 6 | in-block offset
    std::vector<uint64_t> slots;      // one per group
    std::vector<uint32_t> start;      // groups + 1 offsets into order
    size_t size() const { return slots.size(); }
};

BlockTree::BlockTree(const BlockTree& other)
    : tree_(other.tree_), mats_(other.mats_), next_slot_(other.next_slot_) {
    data_.reserve(tree_.leafCount());
    for (auto it = tree_.beginLeaf(); it; ++it) {
        const LeafData* src = other.data_of(*it);
        const size_t bytes = payload_bytes(src->dense, src->n, src->k);
        auto* d = static_cast<LeafData*>(std::malloc(bytes));
        if (!d) throw std::bad_alloc();
        std::memcpy(d, src, bytes);
        data_.push_back(d);
        it->setTransientData(openvdb::Index32(data_.size()));
    }
}

BlockTree::~BlockTree() {
    for (LeafData* d : data_) std::free(d);
}

uint32_t BlockTree::add_matrix(int64_t rows, int64_t cols) {
    constexpr int64_t kMaxDim = int64_t(1) << 31;
    if (rows <= 0 || rows >= kMaxDim)
        throw BadValue("rows must be in 1.." + std::to_string(kMaxDim - 1) + ", got " +
                       std::to_string(rows));
    if (cols <= 0 || cols >= kMaxDim)
        throw BadValue("cols must be in 1.." + std::to_string(kMaxDim - 1) + ", got " +
                       std::to_string(cols));
    if (mats_.size() >= UINT32_MAX) throw BadValue("a tree holds at most 2**32 - 1 matrices");
    const int64_t blocks = (cols + kBlockCols - 1) >> kBlockLog2;
    const uint64_t cells = uint64_t(rows) * uint64_t(blocks);  // < 2**56
    const uint64_t slots = (cells + kLeafCells - 1) >> (3 * kLeafLog2);
    // Cell indices must stay below 2**63.
    if (next_slot_ + slots >= (uint64_t(1) << 51))
        throw BadValue("the tree has no room for a " + std::to_string(rows) + " x " +
                       std::to_string(cols) + " matrix beside the ones it holds");
    mats_.push_back(MatrixInfo{rows, cols, blocks, next_slot_, slots, 0});
    next_slot_ += slots;
    return uint32_t(mats_.size() - 1);
}

uint32_t BlockTree::new_id() {
    if (!free_.empty()) {
        const uint32_t id = free_.back();
        free_.pop_back();
        return id + 1;
    }
    data_.push_back(nullptr);
    return uint32_t(data_.size());
}

void BlockTree::drop_leaf(MaskLeaf& leaf) {
    const uint32_t id = leaf.transientData();
    if (id) {
        std::free(data_[id - 1]);
        data_[id - 1] = nullptr;
        free_.push_back(id - 1);
    }
    // Replacing the leaf by an inactive tile deletes the leaf node.
    tree_.addTile(1, leaf.origin(), false, false);
}

void BlockTree::check_coords(const MatrixInfo& mi, const int64_t* r, const int64_t* c,
                             size_t n) const {
    for (size_t i = 0; i < n; ++i) {
        if (r[i] < 0 || r[i] >= mi.rows) throw OutOfRange(coord_error("rows", i, r[i], mi.rows));
        if (c[i] < 0 || c[i] >= mi.cols) throw OutOfRange(coord_error("cols", i, c[i], mi.cols));
    }
}

void BlockTree::group(const MatrixInfo& mi, const int64_t* r, const int64_t* c, size_t n,
                      Groups& g) const {
    if (n >= (size_t(1) << 32)) throw BadValue("batches are limited to 2**32 - 1 entries");
    // Validate first, so that the hot loop below has no branch that throws.
    check_coords(mi, r, c, n);
    std::unique_ptr<uint64_t[]> local(new uint64_t[n]);  // leaf slot - base
    g.key.reset(new uint32_t[n]);
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1 << 16), [&](const auto& range) {
        for (size_t i = range.begin(); i != range.end(); ++i) {
            const uint64_t cell = uint64_t(r[i]) * uint64_t(mi.blocks) + uint64_t(c[i] >> kBlockLog2);
            local[i] = cell >> (3 * kLeafLog2);
            g.key[i] = (uint32_t(cell & kCellMask) << kBlockLog2) | uint32_t(c[i] & (kBlockCols - 1));
        }
    });
    g.order.reset(new uint32_t[n]);
    g.slots.clear();
    g.start.clear();
    group_by_key(local.get(), n, mi.slots, g.order.get(), [&](uint64_t slot, uint32_t first) {
        g.slots.push_back(mi.base + slot);
        g.start.push_back(first);
    });
    g.start.push_back(uint32_t(n));
    // Keys in grouped order, so that the passes over a leaf's entries read them in sequence.
    std::unique_ptr<uint32_t[]> grouped(new uint32_t[n]);
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1 << 16), [&](const auto& range) {
        for (size_t k = range.begin(); k != range.end(); ++k) grouped[k] = g.key[g.order[k]];
    });
    g.key = std::move(grouped);
}

void BlockTree::set(uint32_t m, const int64_t* r, const int64_t* c, const float* v, size_t n,
                    bool accumulate) {
    MatrixInfo& mi = mats_.at(m);
    if (n == 0) return;
    Groups g;
    group(mi, r, c, n, g);
    // New leaves and payload ids are made serially; each leaf's payload is then rebuilt in
    // parallel, since leaves share nothing.
    std::vector<MaskLeaf*> leaves(g.size());
    {
        openvdb::tree::ValueAccessor<MaskTree> acc(tree_);
        for (size_t k = 0; k < g.size(); ++k) {
            MaskLeaf* leaf = acc.touchLeaf(fold(g.slots[k] << (3 * kLeafLog2)));
            if (!leaf->transientData()) leaf->setTransientData(new_id());
            leaves[k] = leaf;
        }
    }
    std::atomic<uint64_t> added{0};
    // Entries in input order within a leaf: repeats sum (accumulate) or the last wins.
    auto write = [&](float* vals, uint32_t e0, uint32_t e1, auto&& position) {
        for (uint32_t e = e0; e < e1; ++e) {
            float& dst = vals[position(e)];
            if (accumulate)
                dst += v[g.order[e]];
            else
                dst = v[g.order[e]];
        }
    };
    tbb::parallel_for(tbb::blocked_range<size_t>(0, g.size(), 4), [&](const auto& range) {
        thread_local Scratch s;
        ScratchGuard guard(s);
        uint32_t prefix[kLeafWords + 1];
        for (size_t k = range.begin(); k != range.end(); ++k) {
            MaskLeaf& leaf = *leaves[k];
            LeafData*& d = data_of(leaf);
            Word* w = words_of(leaf);
            const uint32_t e0 = g.start[k], e1 = g.start[k + 1];
            if (d) s.pos.resize(e1 - e0);
            Word grown[kLeafWords];
            std::memcpy(grown, w, sizeof(grown));
            uint32_t fresh_keys = 0;
            const Parts p = parts(d);
            if (d) prefix_counts(w, prefix);
            for (uint32_t e = e0; e < e1; ++e) {
                const uint32_t key = g.key[e];
                const uint32_t off = key >> kBlockLog2, inner = key & (kBlockCols - 1);
                const int64_t at = d ? find(p, w, prefix, off, inner) : -1;
                if (d) s.pos[e - e0] = at;
                if (at < 0) {
                    const uint64_t b = uint64_t(1) << inner;
                    fresh_keys += !(s.cell[off] & b);
                    s.cell[off] |= b;
                    grown[off >> 6] |= Word(1) << (off & 63);
                }
            }
            if (!fresh_keys) {
                write(p.vals, e0, e1, [&](uint32_t e) { return s.pos[e - e0]; });
                continue;
            }
            // Rebuild with the new weights (as 0) in place; positions then come from the new
            // cell masks, without a search.
            const uint32_t n0 = p.n;
            LeafData* fresh = regrow(d, w, grown, fresh_keys, s);
            std::free(d);
            d = fresh;
            std::memcpy(w, grown, sizeof(grown));
            added += d->n - n0;
            write(parts(d).vals, e0, e1, [&](uint32_t e) {
                const uint32_t key = g.key[e];
                const uint32_t off = key >> kBlockLog2, inner = key & (kBlockCols - 1);
                return int64_t(s.start[off]) +
                       __builtin_popcountll(s.cell[off] & ((uint64_t(1) << inner) - 1));
            });
            for (int wi = 0; wi < kLeafWords; ++wi)
                for (Word bits = grown[wi]; bits; bits &= bits - 1)
                    s.cell[uint32_t(wi * 64 + __builtin_ctzll(bits))] = 0;
        }
    });
    mi.weights += added.load();
}

void BlockTree::get(uint32_t m, const int64_t* r, const int64_t* c, size_t n, float* out,
                    uint8_t* active) const {
    const MatrixInfo& mi = mats_.at(m);
    if (n == 0) return;
    auto answer = [&](size_t i, int64_t at, const Parts& p) {
        if (out) out[i] = at >= 0 ? p.vals[at] : 0.0f;
        if (active) active[i] = at >= 0;
    };
    if (mi.slots <= (uint64_t(1) << 22) && n >= 4096) {
        // Many queries: a table from leaf slot to leaf, and every leaf's rank prefix, built
        // once, make each lookup O(1) with no sorting of the queries.
        const std::vector<Leaf> leaves = leaves_of(m);
        if (n >= 4 * leaves.size()) {
            check_coords(mi, r, c, n);
            std::vector<int32_t> slot_leaf(mi.slots, -1);
            for (size_t l = 0; l < leaves.size(); ++l) slot_leaf[leaves[l].slot - mi.base] = int32_t(l);
            std::vector<uint32_t> prefix(leaves.size() * (kLeafWords + 1));
            std::vector<Parts> ps(leaves.size());
            for (size_t l = 0; l < leaves.size(); ++l) {
                prefix_counts(words_of(*leaves[l].leaf), &prefix[l * (kLeafWords + 1)]);
                ps[l] = parts(data_of(*leaves[l].leaf));
            }
            std::vector<const Word*> lw(leaves.size());
            for (size_t l = 0; l < leaves.size(); ++l) lw[l] = words_of(*leaves[l].leaf);
            tbb::parallel_for(tbb::blocked_range<size_t>(0, n, 1 << 14), [&](const auto& rg) {
                // In batches, in three passes, so that the cache misses of a batch's lookups
                // (cell start, offsets, value) overlap instead of following one another.
                constexpr size_t kBatch = 16;
                int32_t leaf[kBatch];
                uint32_t rank[kBatch], inner[kBatch], start[kBatch];
                for (size_t i0 = rg.begin(); i0 < rg.end(); i0 += kBatch) {
                    const size_t nb = std::min(kBatch, rg.end() - i0);
                    for (size_t j = 0; j < nb; ++j) {
                        const size_t i = i0 + j;
                        const uint64_t cell = uint64_t(r[i]) * uint64_t(mi.blocks) + uint64_t(c[i] >> kBlockLog2);
                        const int32_t l = slot_leaf[cell >> (3 * kLeafLog2)];
                        inner[j] = uint32_t(c[i] & (kBlockCols - 1));
                        const uint32_t off = uint32_t(cell & kCellMask);
                        if (l < 0 || !bit(lw[size_t(l)], off)) {
                            leaf[j] = -1;
                            continue;
                        }
                        leaf[j] = l;
                        rank[j] = rank_of(lw[size_t(l)], &prefix[size_t(l) * (kLeafWords + 1)], off);
                        const Parts& p = ps[size_t(l)];
                        if (p.dense) {
                            __builtin_prefetch(p.masks + rank[j]);
                            __builtin_prefetch(p.s32 + rank[j]);
                        } else {
                            __builtin_prefetch(p.s16 + rank[j]);
                        }
                    }
                    for (size_t j = 0; j < nb; ++j) {
                        if (leaf[j] < 0) continue;
                        const Parts& p = ps[size_t(leaf[j])];
                        start[j] = p.dense ? p.s32[rank[j]] : p.s16[rank[j]];
                        if (!p.dense) __builtin_prefetch(p.offs + start[j]);
                        __builtin_prefetch(p.vals + start[j]);
                    }
                    for (size_t j = 0; j < nb; ++j) {
                        const size_t i = i0 + j;
                        if (leaf[j] < 0) {
                            if (out) out[i] = 0.0f;
                            if (active) active[i] = 0;
                            continue;
                        }
                        const Parts& p = ps[size_t(leaf[j])];
                        answer(i, find_in_cell(p, rank[j], inner[j]), p);
                    }
                }
            });
            return;
        }
    }
    Groups g;
    group(mi, r, c, n, g);
    tbb::parallel_for(tbb::blocked_range<size_t>(0, g.size(), 16), [&](const auto& range) {
        uint32_t prefix[kLeafWords + 1];
        for (size_t k = range.begin(); k != range.end(); ++k) {
            const MaskLeaf* leaf = tree_.probeConstLeaf(fold(g.slots[k] << (3 * kLeafLog2)));
            const Parts p = leaf ? parts(data_of(*leaf)) : Parts{};
            if (leaf) prefix_counts(words_of(*leaf), prefix);
            for (uint32_t e = g.start[k]; e < g.start[k + 1]; ++e) {
                const uint32_t i = g.order[e], key = g.key[e];
                const int64_t at = leaf ? find(p, words_of(*leaf), prefix, key >> kBlockLog2,
                                               key & (kBlockCols - 1))
                                        : -1;
                answer(i, at, p);
            }
        }
    });
}

size_t BlockTree::remove(uint32_t m, const int64_t* r, const int64_t* c, size_t n) {
    MatrixInfo& mi = mats_.at(m);
    if (n == 0) return 0;
    Groups g;
    group(mi, r, c, n, g);
    std::vector<MaskLeaf*> leaves(g.size());
    for (size_t k = 0; k < g.size(); ++k)
        leaves[k] = const_cast<MaskLeaf*>(tree_.probeConstLeaf(fold(g.slots[k] << (3 * kLeafLog2))));
    std::vector<uint8_t> emptied(g.size(), 0);
    std::atomic<uint64_t> removed{0};
    tbb::parallel_for(tbb::blocked_range<size_t>(0, g.size(), 4), [&](const auto& range) {
        thread_local Scratch s;
        ScratchGuard guard(s);
        uint32_t prefix[kLeafWords + 1];
        for (size_t k = range.begin(); k != range.end(); ++k) {
            if (!leaves[k]) continue;
            LeafData*& d = data_of(*leaves[k]);
            Word* w = words_of(*leaves[k]);
            const Parts p = parts(d);
            prefix_counts(w, prefix);
            uint32_t dropped = 0;
            for (uint32_t e = g.start[k]; e < g.start[k + 1]; ++e) {
                const uint32_t off = g.key[e] >> kBlockLog2, inner = g.key[e] & (kBlockCols - 1);
                if (find(p, w, prefix, off, inner) < 0) continue;
                const uint64_t b = uint64_t(1) << inner;
                dropped += !(s.cell[off] & b);
                s.cell[off] |= b;
            }
            if (!dropped) continue;
            removed += dropped;
            LeafData* fresh = shrink(d, w, dropped, s);
            std::free(d);
            d = fresh;
            emptied[k] = !fresh;
        }
    });
    for (size_t k = 0; k < g.size(); ++k)
        if (emptied[k]) drop_leaf(*leaves[k]);
    mi.weights -= removed.load();
    return removed.load();
}

size_t BlockTree::prune(uint32_t m, float tolerance) {
    MatrixInfo& mi = mats_.at(m);
    const std::vector<Leaf> leaves = leaves_of(m);
    std::vector<uint8_t> emptied(leaves.size(), 0);
    std::atomic<uint64_t> dropped{0};
    tbb::parallel_for(tbb::blocked_range<size_t>(0, leaves.size(), 4), [&](const auto& range) {
        thread_local Scratch s;
        ScratchGuard guard(s);
        for (size_t l = range.begin(); l != range.end(); ++l) {
            MaskLeaf& leaf = *const_cast<MaskLeaf*>(leaves[l].leaf);
            LeafData*& d = data_of(leaf);
            Word* w = words_of(leaf);
            const Parts p = parts(d);
            uint32_t i = 0, e = 0, gone = 0;
            for (int wi = 0; wi < kLeafWords; ++wi)
                for (Word bits = w[wi]; bits; bits &= bits - 1, ++i) {
                    const uint32_t off = uint32_t(wi * 64 + __builtin_ctzll(bits));
                    for (uint64_t b = cell_mask(p, i); b; b &= b - 1, ++e) {
                        // NaN is never "within the tolerance": only |w| <= tolerance drops.
                        if (!(std::fabs(p.vals[e]) <= tolerance)) continue;
                        s.cell[off] |= b & (~b + 1);
                        ++gone;
                    }
                }
            if (!gone) continue;
            dropped += gone;
            LeafData* fresh = shrink(d, w, gone, s);
            std::free(d);
            d = fresh;
            emptied[l] = !fresh;
        }
    });
    for (size_t l = 0; l < leaves.size(); ++l)
        if (emptied[l]) drop_leaf(*const_cast<MaskLeaf*>(leaves[l].leaf));
    // Internal nodes left without children go too.
    openvdb::tools::pruneInactive(tree_);
    mi.weights -= dropped.load();
    return dropped.load();
}

void BlockTree::clear(uint32_t m) {
    MatrixInfo& mi = mats_.at(m);
    for (const Leaf& l : leaves_of(m)) drop_leaf(*const_cast<MaskLeaf*>(l.leaf));
    mi.weights = 0;
    if (active_count() == 0) {
        tree_.clear();
        for (LeafData* d : data_) std::free(d);
        std::vector<LeafData*>().swap(data_);
        std::vector<uint32_t>().swap(free_);
    } else {
        openvdb::tools::pruneInactive(tree_);
    }
}

uint64_t BlockTree::active_count() const {
    uint64_t n = 0;
    for (const MatrixInfo& mi : mats_) n += mi.weights;
    return n;
}

std::vector<BlockTree::Leaf> BlockTree::leaves_of(uint32_t m) const {
    const MatrixInfo& mi = mats_.at(m);
    std::vector<Leaf> out;
    const uint64_t lo = mi.base, hi = mi.base + mi.slots;
    const uint64_t leaves = tree_.leafCount();
    if (mi.slots <= 4 * leaves + 64) {
        openvdb::tree::ValueAccessor<const MaskTree> acc(tree_);
        for (uint64_t s = lo; s < hi; ++s)
            if (const MaskLeaf* leaf = acc.probeConstLeaf(fold(s << (3 * kLeafLog2))))
                out.push_back({s, leaf});
        return out;
    }
    // Few leaves in a large matrix: walk the tree's leaves instead of the matrix's slots.
    for (auto it = tree_.cbeginLeaf(); it; ++it) {
        const uint64_t s = unfold(it->origin()) >> (3 * kLeafLog2);
        if (s >= lo && s < hi) out.push_back({s, &*it});
    }
    std::sort(out.begin(), out.end(), [](const Leaf& a, const Leaf& b) { return a.slot < b.slot; });
    return out;
}

size_t BlockTree::leaf_count(uint32_t m) const { return leaves_of(m).size(); }

BlockTree::LeafStats BlockTree::leaf_stats(uint32_t m) const {
    LeafStats out;
    for (const Leaf& l : leaves_of(m)) {
        const LeafData* d = data_of(*l.leaf);
        out.n.push_back(d->n);
        out.k.push_back(d->k);
        out.dense.push_back(d->dense);
    }
    return out;
}

size_t BlockTree::memory_usage() const {
    // Tree nodes as OpenVDB counts them, plus what the heap really spends on each leaf.
    size_t bytes = sizeof(*this) + size_t(tree_.memUsage());
    for (auto it = tree_.cbeginLeaf(); it; ++it)
        bytes += heap_bytes(&*it) - sizeof(MaskLeaf) + heap_bytes(data_of(*it));
    auto table = [](size_t cap, size_t each) { return cap ? cap * each + kChunkHeader : 0; };
    bytes += table(data_.capacity(), sizeof(LeafData*));
    bytes += table(free_.capacity(), sizeof(uint32_t));
    bytes += table(mats_.capacity(), sizeof(MatrixInfo));
    return bytes;
}

size_t BlockTree::memory_usage(uint32_t m) const {
    mats_.at(m);
    if (mats_.size() == 1) return memory_usage();
    size_t all_leaves = 0, leaf_bytes = 0;
    for (auto it = tree_.cbeginLeaf(); it; ++it) {
        ++all_leaves;
        leaf_bytes += heap_bytes(&*it) + heap_bytes(data_of(*it));
    }
    // Its leaves, payloads and table entry are its own; the rest is shared.
    size_t own = sizeof(MatrixInfo);
    const std::vector<Leaf> mine = leaves_of(m);
    for (const Leaf& l : mine) own += heap_bytes(l.leaf) + heap_bytes(data_of(*l.leaf));
    const double rest = double(memory_usage() - leaf_bytes - mats_.size() * sizeof(MatrixInfo));
    const double share = all_leaves ? double(mine.size()) / double(all_leaves)
                                    : 1.0 / double(mats_.size());
    return own + size_t(rest * share + 0.5);
}

template <typename Visit>
void BlockTree::for_each_active(uint32_t m, Visit&& visit) const {
    const MatrixInfo& mi = mats_.at(m);
    for (const Leaf& l : leaves_of(m)) {
        const Parts p = parts(data_of(*l.leaf));
        const Word* w = words_of(*l.leaf);
        const uint64_t first = (l.slot - mi.base) << (3 * kLeafLog2);
        uint32_t cell = 0, e = 0;
        for (int i = 0; i < kLeafWords; ++i) {
            for (Word bits = w[i]; bits; bits &= bits - 1, ++cell) {
                const uint64_t at = first + uint64_t(i * 64 + __builtin_ctzll(bits));
                const int64_t row = int64_t(at / uint64_t(mi.blocks));
                const int64_t col0 = int64_t(at % uint64_t(mi.blocks)) << kBlockLog2;
                if (p.dense) {
                    for (uint64_t mask = p.masks[cell]; mask; mask &= mask - 1, ++e)
                        visit(row, col0 + __builtin_ctzll(mask), p.vals[e]);
                } else {
                    for (; e < p.s16[cell + 1]; ++e) visit(row, col0 + p.offs[e], p.vals[e]);
                }
            }
        }
    }
}

void BlockTree::export_active(uint32_t m, std::vector<int64_t>& rows, std::vector<int64_t>& cols,
                              std::vector<float>& vals) const {
    const uint64_t total = active_count(m);
    rows.resize(total);
    cols.resize(total);
    vals.resize(total);
    size_t k = 0;
    // Leaves come in slot order and cells in mask order, so the weights come row-major.
    for_each_active(m, [&](int64_t row, int64_t col, float value) {
        rows[k] = row;
        cols[k] = col;
        vals[k++] = value;
    });
}

void BlockTree::to_dense(uint32_t m, float* out) const {
    const int64_t cols = mats_.at(m).cols;
    for_each_active(m, [&](int64_t row, int64_t col, float value) { out[row * cols + col] = value; });
}

void BlockTree::from_dense(uint32_t m, const float* dense, float tolerance) {
    const MatrixInfo& mi = mats_.at(m);
    if (mi.weights != 0) throw BadValue("from_dense needs an empty adapter");
    std::vector<int64_t> r, c;
    std::vector<float> v;
    for (int64_t i = 0; i < mi.rows; ++i)
        for (int64_t j = 0; j < mi.cols; ++j) {
            const float x = dense[i * mi.cols + j];
            if (std::fabs(x) <= tolerance) continue;
            r.push_back(i);
            c.push_back(j);
            v.push_back(x);
        }
    set(m, r.data(), c.data(), v.data(), r.size(), false);
}

std::unique_ptr<BlockTree> BlockTree::copy_matrix(uint32_t m) const {
    const MatrixInfo& mi = mats_.at(m);
    auto out = std::make_unique<BlockTree>();
    out->add_matrix(mi.rows, mi.cols);
    const std::vector<Leaf> leaves = leaves_of(m);
    out->data_.reserve(leaves.size());
    openvdb::tree::ValueAccessor<MaskTree> acc(out->tree_);
    for (const Leaf& l : leaves) {
        MaskLeaf* leaf = acc.touchLeaf(fold((l.slot - mi.base) << (3 * kLeafLog2)));
        std::memcpy(words_of(*leaf), words_of(*l.leaf), kLeafWords * sizeof(Word));
        const LeafData* src = data_of(*l.leaf);
        const size_t bytes = payload_bytes(src->dense, src->n, src->k);
        auto* d = static_cast<LeafData*>(std::malloc(bytes));
        if (!d) throw std::bad_alloc();
        std::memcpy(d, src, bytes);
        out->data_.push_back(d);
        leaf->setTransientData(openvdb::Index32(out->data_.size()));
    }
    out->mats_[0].weights = mi.weights;
    return out;
}

}  // namespace hyprvdb
