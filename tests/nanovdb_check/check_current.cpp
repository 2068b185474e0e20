// Independent check of hyprvdb .nvdb files written for current NanoVDB, with NanoVDB 32.9's
// own headers (../shared/third_party/nanovdb-32.9):
//
//   g++ -std=c++17 -O1 -pthread -I NANOVDB_32_9 check_current.cpp -o check_current
//   ./check_current FILE < coords        (a snapshot; coords: one "row col" per line)
//   ./check_current --set FILE < coords  (a set snapshot; one "matrix row col" per line)
//
// Reads the file with nanovdb::io::readGrid as a NanoGrid<ValueOnIndex>, runs
// tools::isValid(grid, CheckMode::Full), compares the stored checksum with
// tools::evalChecksum, then for every coordinate prints the accessor's index, whether the voxel
// is active and the float32 it leads to: for a snapshot values[index] of the first blind
// channel (voxel (row, col >> 3, col & 7)); for a set snapshot the weight found from the
// cell's index and the channels, as the format describes (hyprvdb/snapshot/_set.py).
// Exit status: 0 when the grid is valid and its checksum matches, 1 otherwise, 2 when the
// file cannot be read.

#include <iostream>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include <nanovdb/NanoVDB.h>
#include <nanovdb/io/IO.h>
#include <nanovdb/tools/GridChecksum.h>
#include <nanovdb/tools/GridValidator.h>

using namespace nanovdb;
using GridT = NanoGrid<ValueOnIndex>;

namespace {

Coord cellCoord(int64_t g) {
    auto bits = [g](int at, int n) { return (g >> at) & ((int64_t(1) << n) - 1); };
    return Coord(int((g >> 36) * 4096 + bits(31, 5) * 128 + bits(17, 4) * 8 + bits(6, 3)),
                 int(bits(26, 5) * 128 + bits(13, 4) * 8 + bits(3, 3)),
                 int(bits(21, 5) * 128 + bits(9, 4) * 8 + bits(0, 3)));
}

}  // namespace

int main(int argc, char** argv) {
    const bool set = argc == 3 && std::string(argv[1]) == "--set";
    if (argc != 2 && !set) {
        std::cerr << "usage: check_current [--set] FILE < coords\n";
        return 2;
    }
    GridHandle<HostBuffer> handle;
    try {
        handle = io::readGrid(argv[argc - 1]);
    } catch (const std::exception& e) {
        std::cout << "read error: " << e.what() << "\n";
        return 2;
    }
    const GridT* grid = handle.grid<ValueOnIndex>();
    if (!grid) {
        std::cout << "read error: not a ValueOnIndex grid\n";
        return 2;
    }
    const bool valid = tools::isValid(grid, CheckMode::Full, true);
    const Checksum eval = tools::evalChecksum(grid, CheckMode::Full);
    const auto& tree = grid->tree();
    std::printf("valid %d\n", int(valid));
    std::printf("version %u.%u.%u\n", grid->version().getMajor(), grid->version().getMinor(),
                grid->version().getPatch());
    std::printf("counts voxels %" PRIu64 " values %" PRIu64 " leaves %u lowers %u uppers %u\n",
                grid->activeVoxelCount(), grid->valueCount(), tree.nodeCount(0),
                tree.nodeCount(1), tree.nodeCount(2));
    std::printf("checksum stored %016" PRIx64 " eval %016" PRIx64 "\n", grid->checksum().full(),
                eval.full());
    std::printf("blind %u\n", grid->blindDataCount());
    auto acc = grid->getAccessor();
    if (set) {
        const auto* rel = static_cast<const int16_t*>(grid->blindMetaData(0).blindData());
        const auto* base = static_cast<const int32_t*>(grid->blindMetaData(1).blindData());
        const auto* offs = static_cast<const uint8_t*>(grid->blindMetaData(2).blindData());
        const auto* vals = static_cast<const float*>(grid->blindMetaData(3).blindData());
        const auto* table = static_cast<const int64_t*>(grid->blindMetaData(4).blindData());
        long long m, row, col;
        while (std::cin >> m >> row >> col) {
            const int64_t* t = table + 7 * m;
            const Coord ijk = cellCoord(t[0] + row * ((t[2] + 63) / 64) + col / 64);
            const uint64_t k = acc.getValue(ijk);
            const int64_t a = base[k / 16] + rel[k], b = base[(k + 1) / 16] + rel[k + 1];
            float v = 0.0f;
            for (int64_t j = a; j < b; ++j)
                if (offs[j] == col % 64) v = vals[j];
            uint32_t bits;
            std::memcpy(&bits, &v, 4);
            std::printf("at %lld %lld %" PRIu64 " %d %08x\n", row, col, k, int(acc.isActive(ijk)),
                        bits);
        }
    } else {
        const auto* vals = static_cast<const float*>(grid->blindMetaData(0).blindData());
        long long row, col;
        while (std::cin >> row >> col) {
            const Coord ijk(int(row), int(col >> 3), int(col & 7));
            const uint64_t k = acc.getValue(ijk);
            uint32_t bits;
            std::memcpy(&bits, vals + k, 4);
            std::printf("at %lld %lld %" PRIu64 " %d %08x\n", row, col, k, int(acc.isActive(ijk)),
                        bits);
        }
    }
    return valid && grid->checksum() == eval ? 0 : 1;
}
