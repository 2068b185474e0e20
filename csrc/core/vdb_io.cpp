// .vdb files: one standard FloatGrid, so that OpenVDB's own tools (vdb_print, pyopenvdb) read
// every weight. The file grid folds the matrix as (x, y, z) = (row, col >> 3, col & 7): an
// 8^3 leaf covers 8 rows x 64 columns, so an 8x64 tile is exactly one full leaf and an
// unstructured mask fills leaves as evenly as its density allows.
#include "core/vdb_io.h"

#include <sstream>

#pragma GCC visibility push(default)
#include <openvdb/io/File.h>
#pragma GCC visibility pop

namespace hyprvdb {

namespace {

openvdb::Coord file_coord(int64_t row, int64_t col) {
    return openvdb::Coord(int(row), int(col >> 3), int(col & 7));
}

void put_meta(openvdb::MetaMap& m, const MetaPairs& pairs) {
    for (const auto& [k, v] : pairs) m.insertMeta(k, openvdb::StringMetadata(v));
}

}  // namespace

void save_vdb(const AdapterCore& core, const std::string& path, const std::string& grid_name,
              const MetaPairs& grid_meta, const MetaPairs& file_meta) {
    openvdb::initialize();
    auto grid = openvdb::FloatGrid::create(0.0f);
    grid->setName(grid_name);
    grid->setGridClass(openvdb::GRID_UNKNOWN);
    put_meta(*grid, grid_meta);
    grid->insertMeta(kMetaRows, openvdb::Int64Metadata(core.rows()));
    grid->insertMeta(kMetaCols, openvdb::Int64Metadata(core.cols()));
    grid->insertMeta(kMetaBlockRows, openvdb::Int64Metadata(core.block_rows()));
    grid->insertMeta(kMetaBlockCols, openvdb::Int64Metadata(core.block_cols()));
    grid->insertMeta(kMetaCoordMap, openvdb::StringMetadata(kCoordMap));

    std::vector<int64_t> rows, cols;
    std::vector<float> vals;
    core.export_active(rows, cols, vals);
    {
        auto acc = grid->getAccessor();
        for (size_t i = 0; i < vals.size(); ++i)
            acc.setValueOn(file_coord(rows[i], cols[i]), vals[i]);
    }

    openvdb::MetaMap fmeta;
    put_meta(fmeta, file_meta);
    openvdb::io::File file(path);
    // Values are written raw for active voxels only: random float32 values do not compress,
    // and the masks say where they go.
    file.setCompression(openvdb::io::COMPRESS_ACTIVE_MASK);
    openvdb::GridPtrVec grids{grid};
    try {
        file.write(grids, fmeta);
    } catch (const openvdb::Exception& e) {
        throw FileError(std::string("cannot write ") + path + ": " + e.what());
    }
    file.close();
}

std::unique_ptr<AdapterCore> load_vdb(const std::string& path, std::string& grid_name,
                                      MetaPairs& grid_meta) {
    openvdb::initialize();
    openvdb::FloatGrid::Ptr grid;
    try {
        openvdb::io::File file(path);
        file.open(/*delayLoad=*/false);
        openvdb::GridPtrVecPtr heads = file.readAllGridMetadata();
        for (const auto& head : *heads) {
            if (head->isType<openvdb::FloatGrid>() && (*head)[kMetaRows]) {  // a hyprvdb grid
                grid = openvdb::gridPtrCast<openvdb::FloatGrid>(file.readGrid(head->getName()));
                break;
            }
        }
        file.close();
    } catch (const openvdb::Exception& e) {
        throw FileError(path + " is not a readable OpenVDB file: " + e.what());
    } catch (const std::exception& e) {
        throw FileError(path + " is not a readable OpenVDB file: " + e.what());
    }
    if (!grid)
        throw FileError(path + " holds no hyprvdb adapter grid (a float grid with '" +
                        std::string(kMetaRows) + "' metadata)");

    auto int_meta = [&](const char* key) -> int64_t {
        if (auto m = grid->getMetadata<openvdb::Int64Metadata>(key)) return m->value();
        // pyopenvdb writes Python ints as int32 metadata.
        if (auto m = grid->getMetadata<openvdb::Int32Metadata>(key)) return m->value();
        throw FileError(path + ": grid metadata '" + key + "' is missing or not an integer");
    };
    const int64_t rows = int_meta(kMetaRows), cols = int_meta(kMetaCols);
    const int64_t bh = int_meta(kMetaBlockRows), bw = int_meta(kMetaBlockCols);
    auto map = grid->getMetadata<openvdb::StringMetadata>(kMetaCoordMap);
    if (!map || map->value() != kCoordMap)
        throw FileError(path + ": unknown coordinate mapping '" + (map ? map->value() : "") +
                        "', expected '" + kCoordMap + "'");

    std::unique_ptr<AdapterCore> core;
    try {
        core = std::make_unique<AdapterCore>(rows, cols, bh, bw);
    } catch (const BadValue& e) {
        throw FileError(path + ": bad shape in metadata: " + e.what());
    }
    const size_t n = size_t(grid->activeVoxelCount());
    std::vector<int64_t> r, c;
    std::vector<float> v;
    r.reserve(n);
    c.reserve(n);
    v.reserve(n);
    for (auto it = grid->cbeginValueOn(); it; ++it) {
        if (!it.isVoxelValue())
            throw FileError(path + ": active tiles are not part of the adapter format");
        const openvdb::Coord xyz = it.getCoord();
        if (xyz.z() < 0 || xyz.z() > 7)
            throw FileError(path + ": voxel " + std::to_string(xyz.x()) + "," + std::to_string(xyz.y()) + "," + std::to_string(xyz.z()) + " is outside the coordinate map");
        r.push_back(xyz.x());
        c.push_back((int64_t(xyz.y()) << 3) | xyz.z());
        v.push_back(*it);
    }
    try {
        core->set(r.data(), c.data(), v.data(), r.size(), false);
    } catch (const OutOfRange& e) {
        throw FileError(path + ": a voxel lies outside the matrix: " + e.what());
    }
    if (core->active_count() != n)
        throw FileError(path + ": " + std::to_string(n) + " active voxels do not fill whole " +
                        std::to_string(bh) + "x" + std::to_string(bw) + " blocks");
    grid_name = grid->getName();
    for (auto it = grid->beginMeta(); it != grid->endMeta(); ++it)
        if (it->second->typeName() == openvdb::StringMetadata::staticTypeName())
            grid_meta.emplace_back(it->first, it->second->str());
    return core;
}

}  // namespace hyprvdb
