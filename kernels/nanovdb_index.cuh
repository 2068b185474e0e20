// A snapshot's weights looked up through NanoVDB's own tree walk: NanoGrid<ValueIndex> and its
// ReadAccessor, from the NanoVDB headers the grid was laid out for (nanovdb/NanoVDB.h), so a
// change of NanoVDB version is a change of headers here, not of byte offsets. The accessor gives
// the index of an active voxel's value and 0 (the background's index) for an inactive one.
#pragma once
#include "common.cuh"
#include <nanovdb/NanoVDB.h>

using hvdb_index_grid = nanovdb::NanoGrid<nanovdb::ValueIndex>;

// A weight (row, col) is the voxel (row, col >> 3, col & 7).
template <typename Accessor>
HVDB_HD inline float nvdb_gather(const Accessor& acc, const float* values, long long row,
                                 long long col) {
    return values[acc.getValue(nanovdb::Coord((int)row, (int)(col >> 3), (int)(col & 7)))];
}

// ---------------------------------------------------------------------------- set snapshots
// A set snapshot (hyprvdb/snapshot/_set.py) folds 64-column cells, not weights: cell g is the
// voxel below (bits 0-8 the leaf offset, 9-20 the lower node's slot, 21-35 the upper node's,
// 36 up the root tile), and the weights of the cell with index k are the in-cell offsets and
// values at [start(k), start(k + 1)), start(k) = base[k >> 4] + rel[k]. Its blind channels, in
// record order: rel (int16), base (int32), offsets (uint8), values (float), the matrix table
// (int64 x 7 per matrix: first cell, rows, cols, first weight, weights, name at, name length).
HVDB_HD inline nanovdb::Coord hvdb_cell_coord(long long g) {
    const int x = (int)((g >> 36) << 12 | ((g >> 31) & 31) << 7 | ((g >> 17) & 15) << 3 | ((g >> 6) & 7));
    const int y = (int)(((g >> 26) & 31) << 7 | ((g >> 13) & 15) << 3 | ((g >> 3) & 7));
    const int z = (int)(((g >> 21) & 31) << 7 | ((g >> 9) & 15) << 3 | (g & 7));
    return nanovdb::Coord(x, y, z);
}

struct hvdb_set_view {
    const short* rel;
    const int* base;
    const unsigned char* offs;
    const float* values;
    const long long* table;
};

HVDB_HD inline hvdb_set_view hvdb_set_channels(const hvdb_index_grid* grid) {
    hvdb_set_view s;
    s.rel = grid->blindMetaData(0).getBlindData<short>();
    s.base = grid->blindMetaData(1).getBlindData<int>();
    s.offs = grid->blindMetaData(2).getBlindData<unsigned char>();
    s.values = grid->blindMetaData(3).getBlindData<float>();
    s.table = grid->blindMetaData(4).getBlindData<long long>();
    return s;
}

// The value of weight (row, col) of matrix m; 0 where it is inactive.
template <typename Accessor>
HVDB_HD inline float nvdb_set_gather(const Accessor& acc, const hvdb_set_view& s, long long m,
                                     long long row, long long col) {
    const long long* t = s.table + 7 * m;
    const long long g = t[0] + row * ((t[2] + 63) >> 6) + (col >> 6);
    const unsigned long long k = acc.getValue(hvdb_cell_coord(g));
    const long long end = (long long)s.base[(k + 1) >> 4] + s.rel[k + 1];
    const unsigned char want = (unsigned char)(col & 63);
    for (long long j = (long long)s.base[k >> 4] + s.rel[k]; j < end; ++j) {
        const unsigned char o = s.offs[j];
        if (o >= want) return o == want ? s.values[j] : 0.0f;
    }
    return 0.0f;
}
