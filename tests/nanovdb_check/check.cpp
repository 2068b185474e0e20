// Independent check of hyprvdb .nvdb snapshots with NanoVDB 32.4.2's own headers.
//
//   g++ -std=c++17 -O1 -pthread -I/usr/include check.cpp -o check
//   ./check FILE < coords        (coords: one "row col" pair per line)
//   ./check --set FILE < coords  (a set snapshot; coords: one "matrix row col" per line)
//
// Reads the file with nanovdb::io::readGrid, runs nanovdb::isValid(grid, true, true), checks
// what the validator leaves out (counts, bboxes, breadth-first order, value offsets), then for
// every coordinate prints NanoVDB's ReadAccessor value (for an index grid: the index) and the
// float of the values channel at that index. A weight (row, col) is voxel (row, col >> 3, col & 7).
// In --set mode the voxels are 64-column cells (hyprvdb/snapshot/_set.py); the value of a
// weight is found here from NanoVDB's accessor and the channels read through getBlindData,
// written from the format's description, not from hyprvdb's kernels.
// Exit status: 0 when everything holds, 1 when a check fails, 2 when the file cannot be read.

#include <iostream>  // GridValidator.h uses std::cerr without including <iostream>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>

#include <nanovdb/NanoVDB.h>
#include <nanovdb/util/GridChecksum.h>
#include <nanovdb/util/GridValidator.h>
#include <nanovdb/util/IO.h>

using namespace nanovdb;
using GridT = NanoGrid<ValueIndex>;
using LeafT = NanoLeaf<ValueIndex>;
using LowerT = NanoLower<ValueIndex>;
using UpperT = NanoUpper<ValueIndex>;

namespace {

std::string failure;

void fail(const std::string& what) {
    if (failure.empty()) failure = what;
}

bool sameBBox(const CoordBBox& a, const CoordBBox& b) { return a[0] == b[0] && a[1] == b[1]; }

void join(CoordBBox& a, const CoordBBox& b) {  // 32.4's BBox<Coord>::expand takes a Coord only
    a[0].minComponent(b[0]);
    a[1].maxComponent(b[1]);
}

std::string str(const CoordBBox& b) {
    std::ostringstream s;
    s << b[0][0] << " " << b[0][1] << " " << b[0][2] << " "
      << b[1][0] << " " << b[1][1] << " " << b[1][2];
    return s.str();
}

// Active bbox of a leaf, computed from its mask alone.
CoordBBox maskBBox(const LeafT& leaf) {
    CoordBBox b;
    for (auto it = leaf.beginValueOn(); it; ++it) b.expand(it.getCoord());
    return b;
}

bool setMode = false;
const char* const kSetChannels[7] = {"hyprvdb_cell_start", "hyprvdb_cell_base",
                                     "hyprvdb_offsets",    "hyprvdb_values",
                                     "hyprvdb_matrices",   "hyprvdb_names", "hyprvdb_meta"};
const GridType kSetTypes[7] = {GridType::Int16, GridType::Int32, GridType::Unknown,
                               GridType::Float, GridType::Int64, GridType::Unknown,
                               GridType::Int64};

void checkStructure(const GridT& grid) {
    const auto& tree = grid.tree();
    const auto& root = tree.root();
    const LeafT* firstLeaf = tree.getFirstLeaf();
    const LowerT* firstLower = tree.getFirstLower();
    const UpperT* firstUpper = tree.getFirstUpper();
    if (!grid.isBreadthFirst()) fail("grid is not flagged breadth-first");
    if (grid.gridClass() != GridClass::IndexGrid) fail("grid class is not IndexGrid");
    if (root.background() != 0) fail("background index is not 0");

    uint64_t voxels = 0, nextValue = 1;
    uint32_t leaves = 0, lowers = 0, uppers = 0;
    CoordBBox total;
    uint64_t prevKey = 0;
    for (uint32_t t = 0; t < root.tileCount(); ++t) {
        const auto* tile = root.data()->tile(t);
        if (t && !(tile->key > prevKey)) fail("root tiles are not sorted by key");
        prevKey = tile->key;
        if (!tile->isChild()) { fail("root tile without a child"); continue; }
        const UpperT* upper = root.data()->getChild(tile);
        if (upper != firstUpper + uppers++) fail("upper nodes are not in breadth-first order");
        if (upper->origin() != tile->origin()) fail("upper node origin differs from its tile key");
        if (upper->valueMask().countOn() != 0) fail("upper node has active tiles");
        CoordBBox ub;
        for (auto it2 = upper->beginChild(); it2; ++it2) {
            const LowerT* lower = &*it2;
            if (lower != firstLower + lowers++) fail("lower nodes are not in breadth-first order");
            if (lower->valueMask().countOn() != 0) fail("lower node has active tiles");
            CoordBBox lb;
            for (auto it1 = lower->beginChild(); it1; ++it1) {
                const LeafT* leaf = &*it1;
                if (leaf != firstLeaf + leaves++) fail("leaves are not in breadth-first order");
                const auto* d = leaf->data();
                if (d->mFlags != 18) fail("leaf flags are not 18 (has bbox, active voxels only)");
                if (d->mStatsOff != 0) fail("leaf has a stats offset");
                if (d->mValueOff != nextValue) fail("leaf value offsets are not contiguous");
                const uint32_t n = leaf->valueMask().countOn();
                if (n == 0) fail("empty leaf");
                nextValue += n;
                voxels += n;
                const CoordBBox mb = maskBBox(*leaf);
                if (!sameBBox(mb, leaf->bbox()))
                    fail("leaf bbox " + str(leaf->bbox()) + " differs from its mask's " + str(mb));
                join(lb, mb);
                // *v is the index, v.pos() the offset in the leaf
                for (auto v = leaf->beginValueOn(); v; ++v) {
                    if (*v != d->mValueOff + leaf->valueMask().countOn(v.pos())) fail("leaf index");
                    if (tree.getValue(v.getCoord()) != *v) fail("tree lookup disagrees with leaf");
                }
            }
            if (!sameBBox(lb, lower->bbox()))
                fail("lower bbox " + str(lower->bbox()) + " differs from its leaves' " + str(lb));
            if (!(lower->data()->mFlags & 2)) fail("lower node not flagged active");
            join(ub, lb);
        }
        if (!sameBBox(ub, upper->bbox())) fail("upper bbox differs from its children's");
        join(total, ub);
    }
    if (leaves != tree.nodeCount(0) || lowers != tree.nodeCount(1) || uppers != tree.nodeCount(2))
        fail("node counts in the tree header differ from the nodes reached");
    if (tree.activeTileCount(1) || tree.activeTileCount(2) || tree.activeTileCount(3))
        fail("active tile counts");
    if (voxels != grid.activeVoxelCount()) fail("active voxel count");
    if (grid.valueCount() != voxels + 1) fail("valueCount is not active voxels + 1");
    if (voxels && !sameBBox(total, root.bbox()))
        fail("root bbox " + str(root.bbox()) + " differs from " + str(total));
    if (voxels) {
        const auto& wb = grid.worldBBox();
        const auto& ib = root.bbox();
        for (int a = 0; a < 3; ++a)
            if (wb[0][a] != double(ib[0][a]) || wb[1][a] != double(ib[1][a]) + 1.0)
                fail("world bbox");
        if (!grid.hasBBox()) fail("HasBBox flag missing");
    } else if (!root.bbox().empty()) {
        fail("empty grid with a non-empty bbox");
    }
    if (grid.voxelSize() != Vec3R(1.0)) fail("voxel size");
    if (setMode) {
        if (grid.blindDataCount() != 7) { fail("expected 7 blind-data channels"); return; }
        for (uint32_t i = 0; i < 7; ++i) {
            const auto& m = grid.blindMetaData(i);
            if (std::strcmp(m.mName, kSetChannels[i]) || m.mDataType != kSetTypes[i])
                fail(std::string("channel ") + kSetChannels[i]);
        }
        const auto& start = grid.blindMetaData(0);
        if (start.mElementCount != grid.valueCount() + 1) fail("cell_start count");
        return;
    }
    if (grid.blindDataCount() != 2) { fail("expected 2 blind-data channels"); return; }
    const auto& m0 = grid.blindMetaData(0);
    if (std::strcmp(m0.mName, "hyprvdb_values") || m0.mDataType != GridType::Float ||
        m0.mElementCount != grid.valueCount())
        fail("values channel");
    const auto& m1 = grid.blindMetaData(1);
    if (std::strcmp(m1.mName, "hyprvdb_meta") || m1.mDataType != GridType::Int64 ||
        m1.mElementCount != 4)
        fail("meta channel");
}

}  // namespace

// The value of weight (row, col) of matrix m of a set snapshot, from the format's description.
float setValue(const GridT& grid, int64_t m, int64_t row, int64_t col, uint64_t* cellIndex) {
    const int16_t* rel = grid.blindMetaData(0).getBlindData<int16_t>();
    const int32_t* base = grid.blindMetaData(1).getBlindData<int32_t>();
    const uint8_t* offs = grid.blindMetaData(2).getBlindData<uint8_t>();
    const float* vals = grid.blindMetaData(3).getBlindData<float>();
    const int64_t* t = grid.blindMetaData(4).getBlindData<int64_t>() + 7 * m;
    const int64_t perRow = (t[2] + 63) / 64;
    const int64_t g = t[0] + row * perRow + col / 64;
    // cell g: leaf offset in bits 0-8, lower slot 9-20, upper slot 21-35, root tile 36 up
    auto bits = [g](int at, int n) { return (g >> at) & ((int64_t(1) << n) - 1); };
    const Coord ijk(int((g >> 36) * 4096 + bits(31, 5) * 128 + bits(17, 4) * 8 + bits(6, 3)),
                    int(bits(26, 5) * 128 + bits(13, 4) * 8 + bits(3, 3)),
                    int(bits(21, 5) * 128 + bits(9, 4) * 8 + bits(0, 3)));
    const uint64_t k = grid.tree().getValue(ijk);
    *cellIndex = k;
    const int64_t a = base[k / 16] + rel[k], b = base[(k + 1) / 16] + rel[k + 1];
    for (int64_t j = a; j < b; ++j)
        if (offs[j] == col % 64) return vals[j];
    return 0.0f;
}

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--set") {
        setMode = true;
        argv[1] = argv[2];
        argc = 2;
    }
    if (argc != 2) {
        std::cerr << "usage: check [--set] FILE < coords\n";
        return 2;
    }
    GridHandle<HostBuffer> handle;
    try {
        handle = io::readGrid(argv[1]);
    } catch (const std::exception& e) {
        std::cout << "read error: " << e.what() << "\n";
        return 2;
    }
    const GridT* grid = handle.grid<ValueIndex>();
    if (!grid) {
        std::cout << "read error: not a ValueIndex grid\n";
        return 2;
    }
    const bool valid = isValid(*grid, true, true);
    const auto full = checksum(*grid, ChecksumMode::Full);
    const auto partial = checksum(*grid, ChecksumMode::Partial);
    checkStructure(*grid);
    const auto& tree = grid->tree();
    if (setMode) {
        std::printf("valid %d\n", int(valid));
        std::printf("counts voxels %" PRIu64 " values %" PRIu64
                    " leaves %u lowers %u uppers %u tiles %u\n",
                    grid->activeVoxelCount(), grid->valueCount(), tree.nodeCount(0),
                    tree.nodeCount(1), tree.nodeCount(2), tree.root().tileCount());
        std::printf("checksum stored %016" PRIx64 " full %016" PRIx64 "\n", grid->checksum(),
                    full);
        std::printf("structure %s\n", failure.empty() ? "ok" : failure.c_str());
        if (!failure.empty()) return 1;
        long long m, row, col;
        while (std::cin >> m >> row >> col) {
            uint64_t k = 0;
            const float v = setValue(*grid, m, row, col, &k);
            uint32_t bits;
            std::memcpy(&bits, &v, 4);
            std::printf("at %lld %lld %" PRIu64 " %d %08x %.9g\n", row, col, k, int(k != 0),
                        bits, v);
        }
        return valid && grid->checksum() == full ? 0 : 1;
    }
    if (grid->blindDataCount() != 2) {
        std::printf("valid %d\nstructure %s\n", int(valid), failure.c_str());
        return 1;
    }
    const int64_t* meta = grid->blindMetaData(1).getBlindData<int64_t>();
    std::printf("valid %d\n", int(valid));
    std::printf("type %s class %s name %s\n", toStr(grid->gridType()),
                toStr(grid->gridClass()), grid->gridName());
    std::printf("version %s\n", grid->version().c_str());
    std::printf("counts voxels %" PRIu64 " values %" PRIu64
                " leaves %u lowers %u uppers %u tiles %u\n",
                grid->activeVoxelCount(), grid->valueCount(), tree.nodeCount(0), tree.nodeCount(1),
                tree.nodeCount(2), tree.root().tileCount());
    std::printf("bbox %s\n", str(tree.root().bbox()).c_str());
    std::printf("checksum stored %016" PRIx64 " full %016" PRIx64 " partial %016" PRIx64 "\n",
                grid->checksum(), full, partial);
    std::printf("meta %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n",
                meta[0], meta[1], meta[2], meta[3]);
    std::printf("structure %s\n", failure.empty() ? "ok" : failure.c_str());

    auto acc = grid->getAccessor();
    const float* values = grid->blindMetaData(0).getBlindData<float>();
    long long row, col;
    while (std::cin >> row >> col) {
        const Coord ijk(int(row), int(col >> 3), int(col & 7));
        const uint64_t index = acc.getValue(ijk);
        const bool active = acc.isActive(ijk);
        uint32_t bits;
        std::memcpy(&bits, values + index, 4);
        std::printf("at %lld %lld %" PRIu64 " %d %08x %.9g\n", row, col, index, int(active), bits,
                    values[index]);
    }
    return valid && failure.empty() && grid->checksum() == full ? 0 : 1;
}
