// Bit work on the value masks of 16^3 mask leaves, shared by both live layouts: the rank of a
// cell (set bits before it) is where its values sit in the leaf's packed arrays.
#pragma once

#include <malloc.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#pragma GCC visibility push(default)
#include <openvdb/openvdb.h>
#include <openvdb/tree/Tree.h>
#pragma GCC visibility pop

namespace hyprvdb {

using MaskTree = openvdb::tree::Tree4<openvdb::ValueMask, 3, 3, 4>::Type;
using MaskLeaf = MaskTree::LeafNodeType;

constexpr int kLeafLog2 = 4;
constexpr int kLeafDim = 1 << kLeafLog2;
constexpr int kLeafCells = kLeafDim * kLeafDim * kLeafDim;
constexpr int kLeafWords = kLeafCells / 64;

using Word = uint64_t;

// malloc's bookkeeping word in front of every chunk (glibc, 64-bit).
constexpr size_t kChunkHeader = sizeof(size_t);

inline size_t heap_bytes(const void* p) {
    return p ? malloc_usable_size(const_cast<void*>(p)) + kChunkHeader : 0;
}

inline Word* words_of(MaskLeaf& leaf) { return &leaf.getValueMask().template getWord<Word>(0); }
// NodeMask holds nothing but its words, so its address is that of the first word.
inline const Word* words_of(const MaskLeaf& leaf) {
    static_assert(sizeof(MaskLeaf::NodeMaskType) == kLeafWords * sizeof(Word));
    return reinterpret_cast<const Word*>(&leaf.getValueMask());
}

// prefix[i] = number of set bits in words [0, i).
inline void prefix_counts(const Word* w, uint32_t* prefix) {
    uint32_t acc = 0;
    for (int i = 0; i < kLeafWords; ++i) {
        prefix[i] = acc;
        acc += uint32_t(__builtin_popcountll(w[i]));
    }
    prefix[kLeafWords] = acc;
}

inline uint32_t rank_of(const Word* w, const uint32_t* prefix, uint32_t off) {
    const Word below = (Word(1) << (off & 63)) - 1;
    return prefix[off >> 6] + uint32_t(__builtin_popcountll(w[off >> 6] & below));
}

inline bool bit(const Word* w, uint32_t off) { return (w[off >> 6] >> (off & 63)) & 1; }

inline uint32_t count_on(const Word* w) {
    uint32_t n = 0;
    for (int i = 0; i < kLeafWords; ++i) n += uint32_t(__builtin_popcountll(w[i]));
    return n;
}

// "rows[3] = 9 is out of range for 8 rows (valid: 0..7)"
inline std::string coord_error(const char* arg, size_t i, int64_t v, int64_t hi) {
    std::ostringstream s;
    s << arg << "[" << i << "] = " << v << " is out of range for " << hi
      << (std::string(arg) == "rows" ? " rows" : " columns") << " (valid: 0.." << hi - 1 << ")";
    return s.str();
}

// Group n entries by their key in [0, slots), stably: order[] receives the entries' indices
// grouped by key in ascending key order, and emit(key, first) is called once per distinct key,
// in that order, with the group's first position in order[]. A counting sort where the key
// range is small next to n, a stable sort otherwise.
template <typename Emit>
inline void group_by_key(const uint64_t* keys, size_t n, uint64_t slots, uint32_t* order,
                         Emit emit) {
    if (slots <= std::max<uint64_t>(uint64_t(1) << 16, 4 * uint64_t(n))) {
        std::vector<uint32_t> count(slots + 1, 0);  // one pass to count, one to scatter
        for (size_t i = 0; i < n; ++i) ++count[keys[i] + 1];
        for (uint64_t s = 0; s < slots; ++s) {
            if (count[s + 1]) emit(s, count[s]);
            count[s + 1] += count[s];
        }
        for (size_t i = 0; i < n; ++i) order[count[keys[i]]++] = uint32_t(i);
    } else {
        std::iota(order, order + n, 0u);
        std::stable_sort(order, order + n,
                         [&](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
        for (size_t k = 0; k < n; ++k)
            if (k == 0 || keys[order[k]] != keys[order[k - 1]]) emit(keys[order[k]], uint32_t(k));
    }
}

}  // namespace hyprvdb
