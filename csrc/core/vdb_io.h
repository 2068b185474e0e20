// Reading and writing adapters as standard OpenVDB files.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/errors.h"

namespace hyprvdb {

using MetaPairs = std::vector<std::pair<std::string, std::string>>;

// A file that cannot be written; mapped to _core.FileError.
struct FileError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A readable OpenVDB file that holds no hyprvdb adapter; mapped to hyprvdb.ForeignFileError.
struct ForeignFile : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A hyprvdb file whose contents are damaged or inconsistent; mapped to
// hyprvdb.CorruptFileError.
struct CorruptFile : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline constexpr const char* kMetaRows = "hyprvdb_rows";
inline constexpr const char* kMetaCols = "hyprvdb_cols";
inline constexpr const char* kMetaBlockRows = "hyprvdb_block_rows";
inline constexpr const char* kMetaBlockCols = "hyprvdb_block_cols";
inline constexpr const char* kMetaCoordMap = "hyprvdb_coord_map";
inline constexpr const char* kCoordMap = "x=row y=col>>3 z=col&7";

// One adapter's grid, to be written: its shape, block shape and active weights.
struct GridOut {
    std::string name;
    int64_t rows, cols, block_rows, block_cols;
    const int64_t* r;
    const int64_t* c;
    const float* v;
    size_t n;
    MetaPairs meta;
};

// One adapter's grid, as read: its shape is checked, its weights lie inside it.
struct GridIn {
    std::string name;
    int64_t rows, cols, block_rows, block_cols;
    std::vector<int64_t> r, c;
    std::vector<float> v;
};

// Writes a standard .vdb file of one FloatGrid per adapter.
void save_vdb(const std::vector<GridOut>& grids, const std::string& path,
              const MetaPairs& file_meta);

// Parse a whole .vdb file held in memory (``data``; ``shown`` names it in errors): every
// hyprvdb grid in it, in file order. Its layout is walked and checked before OpenVDB reads it,
// so damaged counts cannot make the reader loop or allocate beyond a constant factor of the
// file's size.
std::vector<GridIn> load_vdb(const std::string& data, const std::string& shown);

}  // namespace hyprvdb
