// The walk of NanoVDB 32.4.2's ReadAccessor<ValueIndex> over a snapshot's grid buffer, for
// one voxel: root tile by key, upper (32^3) and lower (16^3) child masks and relative child
// offsets, then the leaf's mValueOff plus the popcount of its mask below the voxel. Byte
// offsets follow nanovdb/NanoVDB.h 32.4.2 (see hyprvdb/_nanovdb.py). Returns 0 — the
// background's index — for an inactive voxel.
#pragma once
#include "common.cuh"

#define HVDB_NVDB_UPPER_CHILD_MASK 4128
#define HVDB_NVDB_UPPER_TABLE 8256
#define HVDB_NVDB_LOWER_CHILD_MASK 544
#define HVDB_NVDB_LOWER_TABLE 1088
#define HVDB_NVDB_LEAF_MASK 16
#define HVDB_NVDB_LEAF_VALUE_OFF 88
#define HVDB_NVDB_TILE_SIZE 32

HVDB_HD inline unsigned long long nvdb_u64(const unsigned char* p) {
    return *reinterpret_cast<const unsigned long long*>(p);  // every field is 8-byte aligned
}

HVDB_HD inline unsigned long long nvdb_index(const unsigned char* grid, long long root_off,
                                             long long tiles_off, int tile_count, int x, int y,
                                             int z) {
    const unsigned long long key = ((unsigned long long)(x >> 12) << 42) |
                                   ((unsigned long long)(y >> 12) << 21) |
                                   (unsigned long long)(z >> 12);
    long long node = -1;
    for (int i = 0; i < tile_count; ++i) {  // a handful of tiles: a linear scan is cheapest
        const unsigned char* tile = grid + tiles_off + (long long)i * HVDB_NVDB_TILE_SIZE;
        if (nvdb_u64(tile) == key) {
            node = root_off + (long long)nvdb_u64(tile + 8);
            break;
        }
    }
    if (node < 0) return 0;
    int slot = (((x >> 7) & 31) << 10) | (((y >> 7) & 31) << 5) | ((z >> 7) & 31);
    if (!((nvdb_u64(grid + node + HVDB_NVDB_UPPER_CHILD_MASK + (slot >> 6) * 8) >> (slot & 63)) & 1))
        return 0;
    node += (long long)nvdb_u64(grid + node + HVDB_NVDB_UPPER_TABLE + (long long)slot * 8);
    slot = (((x >> 3) & 15) << 8) | (((y >> 3) & 15) << 4) | ((z >> 3) & 15);
    if (!((nvdb_u64(grid + node + HVDB_NVDB_LOWER_CHILD_MASK + (slot >> 6) * 8) >> (slot & 63)) & 1))
        return 0;
    node += (long long)nvdb_u64(grid + node + HVDB_NVDB_LOWER_TABLE + (long long)slot * 8);
    const int n = ((x & 7) << 6) | ((y & 7) << 3) | (z & 7);
    const unsigned char* mask = grid + node + HVDB_NVDB_LEAF_MASK;
    const unsigned long long word = nvdb_u64(mask + (n >> 6) * 8);
    if (!((word >> (n & 63)) & 1)) return 0;
    unsigned long long idx = nvdb_u64(grid + node + HVDB_NVDB_LEAF_VALUE_OFF);
    for (int w = 0; w < (n >> 6); ++w) idx += hvdb_popcount64(nvdb_u64(mask + w * 8));
    return idx + hvdb_popcount64(word & ((1ull << (n & 63)) - 1));
}

// A weight (row, col) is the voxel (row, col >> 3, col & 7).
HVDB_HD inline float nvdb_gather(const unsigned char* grid, long long root_off,
                                 long long tiles_off, int tile_count, const float* values,
                                 long long row, long long col) {
    return values[nvdb_index(grid, root_off, tiles_off, tile_count, (int)row, (int)(col >> 3),
                             (int)(col & 7))];
}
