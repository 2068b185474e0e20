// The live structure of a tile-mode SparseAdapter (block shape larger than 1x1): an OpenVDB
// mask tree that holds which blocks of the matrix are active, with each leaf's values packed
// in one small block beside it. Unstructured adapters live in a BlockTree (block_tree.h).
//
// Why this layout: a FloatGrid leaf stores every one of its 512 values, so at 1% density it
// costs hundreds of bytes per active weight. A ValueMask leaf of 16^3 cells costs one bit per
// cell; its values live in a block of exactly (active cells x cell size) floats, found through
// the leaf's transient-data word, in the order of the leaf's mask bits. The rank of a cell
// (popcount of the mask bits before it) is the position of its values in the block.
//
// Cells: a cell is a whole block of weights (tile-structured sparsity, e.g. 8x64), whose
// values are stored densely; the code also handles 1x1 cells, one weight each.
//
// Coordinates: the matrix of cells (R, C) is folded into the tree as (x, y, z) =
// (R, C >> zbits, C & (2^zbits - 1)), zbits chosen from the shape so that both the leaves and
// the internal nodes fill up (see choose_zbits).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/leaf_mask.h"

namespace hyprvdb {

struct ValueBlock {
    float* data = nullptr;
    uint32_t size = 0;  // floats held, = active cells of the leaf x cell size
};

// Entries of one batch, validated and grouped by the leaf they fall in.
// Per-entry arrays are left uninitialized (every slot is written before it is read).
struct LeafGroups {
    std::unique_ptr<uint32_t[]> order;        // entry indices, grouped by leaf, input order kept
    std::vector<uint64_t> leaf_ids;           // one per group
    std::vector<uint32_t> group_start;        // groups + 1 offsets into order
    std::unique_ptr<uint16_t[]> cell_offset;  // per entry: cell offset inside its leaf
    std::unique_ptr<uint32_t[]> inner;        // per entry: index inside its cell (tile mode)
    size_t groups() const { return leaf_ids.size(); }
};

class AdapterCore {
public:
    AdapterCore(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols);
    AdapterCore(const AdapterCore& other);
    AdapterCore& operator=(const AdapterCore&) = delete;
    ~AdapterCore();

    int64_t rows() const { return rows_; }
    int64_t cols() const { return cols_; }
    int64_t block_rows() const { return bh_; }
    int64_t block_cols() const { return bw_; }
    int zbits() const { return zbits_; }
    int64_t cell_size() const { return bh_ * bw_; }

    // Writes: assign (last entry wins for repeated coordinates) or accumulate (repeats sum).
    // Every coordinate is checked before anything changes.
    void set(const int64_t* r, const int64_t* c, const float* v, size_t n, bool accumulate);
    // Reads: value (0 where inactive) and whether the weight is active; either may be null.
    void get(const int64_t* r, const int64_t* c, size_t n, float* out, uint8_t* active) const;
    // Deactivates cells (whole blocks in tile mode); returns how many cells were active.
    size_t remove(const int64_t* r, const int64_t* c, size_t n);
    // In tile mode, zeroes entries without deactivating their block; returns entries touched.
    size_t zero(const int64_t* r, const int64_t* c, size_t n);
    // Drops cells whose values all have |w| <= tolerance, frees empty leaves and nodes,
    // returns the number of cells dropped.
    size_t prune(float tolerance);
    void clear();

    uint64_t active_cells() const;
    uint64_t active_count() const { return active_cells() * uint64_t(cell_size()); }
    size_t memory_usage() const;
    size_t leaf_count() const;

    // Every active weight in row-major order (row, then column).
    void export_active(std::vector<int64_t>& rows, std::vector<int64_t>& cols,
                       std::vector<float>& vals) const;
    // Fills a row-major dense matrix (rows x cols floats, zeroed by the caller).
    void to_dense(float* out) const;

    // Bulk load of cells from a dense matrix: every cell with a value |w| > tolerance
    // becomes active (the whole block in tile mode). The adapter must be empty.
    void from_dense(const float* dense, float tolerance);

    MaskTree& tree() { return tree_; }
    const MaskTree& tree() const { return tree_; }

    // Guards concurrent use from Python threads (the bindings release the GIL).
    std::shared_mutex& mutex() const { return mutex_; }
    AdapterCore* copy() const { return new AdapterCore(*this); }

private:
    void group(const int64_t* r, const int64_t* c, size_t n, LeafGroups& g) const;
    void get_direct(const int64_t* r, const int64_t* c, size_t n, float* out,
                    uint8_t* active) const;
    openvdb::Coord leaf_origin(uint64_t leaf_id) const;
    // The leaf slot (a dense id over the grid of leaf positions) of tree coordinate (x, y, z);
    // leaf_origin is its inverse.
    uint64_t slot_of(uint64_t x, uint64_t y, uint64_t z) const {
        return ((x >> kLeafLog2) * leaves_y_ + (y >> kLeafLog2)) * leaves_z_ + (z >> kLeafLog2);
    }
    // Where weight (r, c) lives: its leaf's slot, its cell's offset inside the leaf (in mask
    // order), and its index inside the cell (tile mode; 0 otherwise).
    struct Where {
        uint64_t slot;
        uint32_t offset, inner;
    };
    Where where(int64_t r, int64_t c) const {
        const bool tiled = cell_size() > 1;
        const uint64_t R = uint64_t(tiled ? r / bh_ : r), C = uint64_t(tiled ? c / bw_ : c);
        const uint64_t y = C >> zbits_, z = C & ((uint64_t(1) << zbits_) - 1);
        constexpr uint64_t m = kLeafDim - 1;
        return {slot_of(R, y, z),
                uint32_t(((R & m) << (2 * kLeafLog2)) | ((y & m) << kLeafLog2) | (z & m)),
                tiled ? uint32_t((r % bh_) * bw_ + c % bw_) : 0u};
    }
    // Raises OutOfRange naming the first coordinate outside the matrix.
    void check_coords(const int64_t* r, const int64_t* c, size_t n) const;
    // Frees what a leaf's block no longer holds after it shrank to `floats` values.
    static void shrink(ValueBlock& b, uint32_t floats);
    ValueBlock& block_of(const MaskLeaf& leaf);
    const ValueBlock& block_of(const MaskLeaf& leaf) const;
    uint32_t new_block();
    void free_block(MaskLeaf& leaf);
    void drop_leaf(MaskLeaf& leaf);
    // Calls visit(row, col, value) for every active weight, leaf by leaf in mask order.
    template <typename Visit>
    void for_each_active(Visit&& visit) const {
        const int64_t cs = cell_size();
        for (auto it = tree_.cbeginLeaf(); it; ++it) {
            const float* data = block_of(*it).data;
            size_t cell = 0;
            for (auto on = it->cbeginValueOn(); on; ++on, ++cell) {
                int64_t R, C;
                cell_of(on.getCoord(), R, C);
                for (int64_t j = 0; j < cs; ++j)
                    visit(R * bh_ + j / bw_, C * bw_ + j % bw_, data[cell * cs + j]);
            }
        }
    }
    // Cell (R, C) of a tree coordinate.
    void cell_of(const openvdb::Coord& xyz, int64_t& R, int64_t& C) const {
        R = xyz.x();
        C = (int64_t(xyz.y()) << zbits_) | int64_t(xyz.z());
    }

    int64_t rows_, cols_, bh_, bw_;
    int64_t crows_, ccols_;  // shape in cells
    int zbits_;
    uint64_t leaves_x_, leaves_y_, leaves_z_;  // leaf slots along each axis
    MaskTree tree_;
    std::vector<ValueBlock> blocks_;  // leaf transient data = index + 1
    std::vector<uint32_t> free_blocks_;
    mutable std::shared_mutex mutex_;
};

int choose_zbits(int64_t cell_cols);

}  // namespace hyprvdb
