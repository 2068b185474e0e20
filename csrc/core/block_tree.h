// The live structure of unstructured adapters: one OpenVDB mask tree shared by any number of
// matrices, whose voxels are blocks of 64 consecutive columns of one row.
//
// Why this layout: a bitmask leaf over single weights costs at least 1 bit / density per
// active weight (62.5 B at 0.2%), and a tree per matrix pays for internal nodes that small
// matrices never fill. Here a voxel (a "cell") is active when any weight of its block is, and
// each leaf keeps its weights in one payload beside it, found through the leaf's transient-data
// word and the rank of the cell in the leaf's mask:
//
//   sparse form  values f32[n] | starts u16[k+1] | offsets u8[n]
//                (each cell's weights as sorted in-block offsets, as Roaring array
//                 containers keep them)
//   dense form   masks u64[k] | starts u32[k+1] | values f32[n]
//                (each cell's weights as a bitmask of its 64 columns)
//
// with n weights in k active cells, after an 8-byte header. A leaf takes the cheaper form
// (sparse costs n - 10k - 2 bytes more than dense), switching only when the difference is
// clear (dense above n >= 12k, sparse below n <= 8k) so that a leaf near the line does not
// flip on every write.
//
// Coordinates: matrix m owns a run of leaf slots from base(m); its cell (R, B) = (row,
// col >> 6) has the index g = 4096 base(m) + R * blocks + B, row-major, so one leaf holds
// 4096 consecutive cells and no leaf is shared by two matrices. fold(g) spreads g's bits over
// (x, y, z): the low 12 bits are the cell's offset in its leaf (x, y, z: 4 bits each, in
// OpenVDB's own leaf order), and each further 9 bits give 3 bits per axis, one node level at
// a time, so that consecutive leaves fill lower nodes and consecutive lower nodes fill upper
// nodes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <stdexcept>
#include <vector>

#include "core/errors.h"
#include "core/leaf_mask.h"

namespace hyprvdb {

constexpr int kBlockLog2 = 6;
constexpr int64_t kBlockCols = int64_t(1) << kBlockLog2;

openvdb::Coord fold(uint64_t g);
uint64_t unfold(const openvdb::Coord& xyz);

struct LeafData;  // a leaf's payload (block_tree.cpp)

struct MatrixInfo {
    int64_t rows, cols;
    int64_t blocks;     // cells per row: ceil(cols / 64)
    uint64_t base;      // first leaf slot
    uint64_t slots;     // leaf slots reserved: ceil(rows * blocks / 4096)
    uint64_t weights;   // active weights
};

class BlockTree {
public:
    BlockTree() = default;
    BlockTree(const BlockTree& other);
    BlockTree& operator=(const BlockTree&) = delete;
    ~BlockTree();

    // Reserves leaf slots for a rows x cols matrix; returns its id.
    uint32_t add_matrix(int64_t rows, int64_t cols);
    size_t matrices() const { return mats_.size(); }
    const MatrixInfo& matrix(uint32_t m) const { return mats_.at(m); }

    // Writes: assign (last entry wins for repeated coordinates) or accumulate (repeats sum, in
    // the order given). Every coordinate is checked before anything changes.
    void set(uint32_t m, const int64_t* r, const int64_t* c, const float* v, size_t n,
             bool accumulate);
    // Reads: value (0 where inactive) and whether the weight is active; either may be null.
    void get(uint32_t m, const int64_t* r, const int64_t* c, size_t n, float* out,
             uint8_t* active) const;
    // Deactivates weights; returns how many were active.
    size_t remove(uint32_t m, const int64_t* r, const int64_t* c, size_t n);
    // Drops weights with |w| <= tolerance and frees leaves left empty; returns how many.
    size_t prune(uint32_t m, float tolerance);
    void clear(uint32_t m);

    uint64_t active_count(uint32_t m) const { return mats_.at(m).weights; }
    uint64_t active_count() const;
    // Every byte the tree holds: nodes, payloads, tables, malloc's per-chunk words.
    size_t memory_usage() const;
    // Matrix m's leaves, payloads and table entry, and its share of the rest (nodes above the
    // leaves, tables) in proportion to its leaves; the matrices' figures add up to the total.
    size_t memory_usage(uint32_t m) const;
    size_t leaf_count(uint32_t m) const;
    // Per leaf of matrix m, in slot order: weights n, active cells k, and its form
    // (1 dense, 0 sparse).
    struct LeafStats {
        std::vector<uint32_t> n, k;
        std::vector<uint8_t> dense;
    };
    LeafStats leaf_stats(uint32_t m) const;

    // Every active weight in row-major order (row, then column).
    void export_active(uint32_t m, std::vector<int64_t>& rows, std::vector<int64_t>& cols,
                       std::vector<float>& vals) const;
    // Fills a row-major dense matrix (rows x cols floats, zeroed by the caller).
    void to_dense(uint32_t m, float* out) const;
    // Every weight with |w| > tolerance becomes active. The matrix must be empty.
    void from_dense(uint32_t m, const float* dense, float tolerance);
    // A tree holding a copy of matrix m alone.
    std::unique_ptr<BlockTree> copy_matrix(uint32_t m) const;

    // Guards concurrent use from Python threads (the bindings release the GIL).
    mutable std::shared_mutex mutex;

private:
    struct Groups;
    struct Leaf {
        uint64_t slot;
        const MaskLeaf* leaf;
    };
    void group(const MatrixInfo& mi, const int64_t* r, const int64_t* c, size_t n,
               Groups& g) const;
    void check_coords(const MatrixInfo& mi, const int64_t* r, const int64_t* c,
                      size_t n) const;
    // Matrix m's leaves in slot order (so in row-major order of their cells).
    std::vector<Leaf> leaves_of(uint32_t m) const;
    LeafData*& data_of(const MaskLeaf& leaf) { return data_[leaf.transientData() - 1]; }
    const LeafData* data_of(const MaskLeaf& leaf) const { return data_[leaf.transientData() - 1]; }
    uint32_t new_id();
    void drop_leaf(MaskLeaf& leaf);
    // Calls visit(row, col, value) for every active weight of matrix m, in row-major order.
    template <typename Visit>
    void for_each_active(uint32_t m, Visit&& visit) const;

    MaskTree tree_;
    std::vector<LeafData*> data_;  // leaf transient data = index + 1
    std::vector<uint32_t> free_;
    std::vector<MatrixInfo> mats_;
    uint64_t next_slot_ = 0;
};

// One matrix of a tree, with AdapterCore's interface, so that the bindings serve both alike.
class MatrixView {
public:
    // A new tree holding one rows x cols matrix.
    MatrixView(int64_t rows, int64_t cols)
        : tree_(std::make_shared<BlockTree>()), m_(tree_->add_matrix(rows, cols)) {}
    MatrixView(std::shared_ptr<BlockTree> tree, uint32_t m) : tree_(std::move(tree)), m_(m) {
        tree_->matrix(m_);  // throws for an unknown matrix
    }

    const std::shared_ptr<BlockTree>& tree() const { return tree_; }
    uint32_t index() const { return m_; }
    std::shared_mutex& mutex() const { return tree_->mutex; }

    int64_t rows() const { return tree_->matrix(m_).rows; }
    int64_t cols() const { return tree_->matrix(m_).cols; }
    int64_t block_rows() const { return 1; }
    int64_t block_cols() const { return 1; }

    void set(const int64_t* r, const int64_t* c, const float* v, size_t n, bool accumulate) {
        tree_->set(m_, r, c, v, n, accumulate);
    }
    void get(const int64_t* r, const int64_t* c, size_t n, float* out, uint8_t* active) const {
        tree_->get(m_, r, c, n, out, active);
    }
    size_t remove(const int64_t* r, const int64_t* c, size_t n) { return tree_->remove(m_, r, c, n); }
    size_t prune(float tolerance) { return tree_->prune(m_, tolerance); }
    void clear() { tree_->clear(m_); }
    uint64_t active_count() const { return tree_->active_count(m_); }
    size_t memory_usage() const { return tree_->memory_usage(m_); }
    size_t leaf_count() const { return tree_->leaf_count(m_); }
    void export_active(std::vector<int64_t>& r, std::vector<int64_t>& c, std::vector<float>& v) const {
        tree_->export_active(m_, r, c, v);
    }
    void to_dense(float* out) const { tree_->to_dense(m_, out); }
    void from_dense(const float* dense, float tolerance) { tree_->from_dense(m_, dense, tolerance); }
    MatrixView* copy() const {
        return new MatrixView(std::shared_ptr<BlockTree>(tree_->copy_matrix(m_)), 0);
    }

private:
    std::shared_ptr<BlockTree> tree_;
    uint32_t m_;
};

}  // namespace hyprvdb
