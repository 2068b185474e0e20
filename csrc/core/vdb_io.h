// Reading and writing adapters as standard OpenVDB files.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/adapter_core.h"

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

void save_vdb(const AdapterCore& core, const std::string& path, const std::string& grid_name,
              const MetaPairs& grid_meta, const MetaPairs& file_meta);

// Parse a whole .vdb file held in memory (``data``; ``shown`` names it in errors). Its layout
// is walked and checked before OpenVDB reads it, so damaged counts cannot make the reader loop
// or allocate beyond a constant factor of the file's size.
std::unique_ptr<AdapterCore> load_vdb(const std::string& data, const std::string& shown,
                                      std::string& grid_name);

}  // namespace hyprvdb
