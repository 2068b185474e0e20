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
