// Bit work on the value masks of 16^3 mask leaves, shared by both live layouts: the rank of a
// cell (set bits before it) is where its values sit in the leaf's packed arrays.
#pragma once

#include <malloc.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

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

}  // namespace hyprvdb
