// .vdb files: one standard FloatGrid, so that OpenVDB's own tools (vdb_print, pyopenvdb) read
// every weight. The file grid folds the matrix as (x, y, z) = (row, col >> 3, col & 7): an
// 8^3 leaf covers 8 rows x 64 columns, so an 8x64 tile is exactly one full leaf and an
// unstructured mask fills leaves as evenly as its density allows.
#include "core/vdb_io.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <string_view>

#pragma GCC visibility push(default)
#include <openvdb/openvdb.h>
#include <openvdb/io/File.h>
#include <openvdb/io/Stream.h>
#pragma GCC visibility pop

namespace hyprvdb {

namespace {

openvdb::Coord file_coord(int64_t row, int64_t col) {
    return openvdb::Coord(int(row), int(col >> 3), int(col & 7));
}

// Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF), as Python decodes.
bool valid_utf8(const std::string& s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        const unsigned c = *p++;
        if (c < 0x80) continue;
        int more;
        unsigned cp, lo;
        if (c >= 0xC2 && c <= 0xDF) { more = 1; cp = c & 0x1F; lo = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { more = 2; cp = c & 0x0F; lo = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { more = 3; cp = c & 0x07; lo = 0x10000; }
        else return false;
        if (end - p < more) return false;
        for (int i = 0; i < more; ++i) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        p += more;
        if (cp < lo || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    }
    return true;
}

// Text from a damaged file, shown in an error message: bytes outside printable ASCII as \\xNN.
std::string printable(const std::string& s) {
    std::string out;
    for (const unsigned char c : s) {
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out += char(c);
        } else {
            static const char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// Walks a .vdb file exactly as OpenVDB's io::Stream will read it, for the layout hyprvdb
// writes (file version 224, one float grid with active-mask compression, a uniform-scale
// transform), and refuses anything else before OpenVDB sees it. OpenVDB checks none of its
// reads: it sizes strings, metadata and node arrays by the counts a file claims and loops over
// reads past the end, and a node whose reading throws is leaked. After this walk every count
// fits the file, so OpenVDB allocates a few tens of times the file's size at most (an upper
// internal node, 270 KB, per 8 KB of masks) and reads to its end exactly. The delayed-load metadata that io::File adds (a count and blosc-compressed
// arrays, which OpenVDB drops after reading) is renamed to an unregistered type in the copy
// that OpenVDB reads, so it is skipped as raw bytes.
class LayoutWalk {
  public:
    LayoutWalk(std::string& data, const std::string& shown) : d_(data), shown_(shown) {}

    void run() {
        skip(8, "the magic number");
        const uint32_t version = get<uint32_t>("the file version");
        if (version != kFileVersion)
            throw ForeignFile(shown_ + " has OpenVDB file version " + std::to_string(version) +
                              "; hyprvdb reads version " + std::to_string(kFileVersion));
        skip(4 + 4 + 1 + 36, "the file header");  // library version, offsets flag, UUID
        meta_map("file metadata");
        const int32_t grids = get<int32_t>("the grid count");
        if (grids < 1) foreign("it holds " + std::to_string(grids) + " grids");
        for (int32_t g = 0; g < grids; ++g) grid();
        if (pos_ != d_.size())
            fail(std::to_string(d_.size() - pos_) + " bytes follow the grids");
    }

  private:
    static constexpr uint32_t kFileVersion = 224;  // the layout walked here

    void grid() {
        text("the grid name");
        expect_text("the grid type", "Tree_float_5_4_3");
        expect_text("the grid's instance parent", "");
        skip(3 * 8, "the grid's stream offsets");
        const uint32_t compression = get<uint32_t>("the grid compression");
        if (compression != openvdb::io::COMPRESS_ACTIVE_MASK)
            foreign("its grid compression is " + std::to_string(compression) +
                    ", hyprvdb writes " + std::to_string(openvdb::io::COMPRESS_ACTIVE_MASK) +
                    " (active mask)");
        meta_map("grid metadata");
        expect_text("the transform type", "UniformScaleMap");
        skip(5 * 3 * 8, "the transform");  // five Vec3d: scale, voxel size and inverses
        if (get<int32_t>("the tree's buffer count") != 1) fail("the tree claims several buffers");
        leaves_.clear();
        tree();
    }

    std::string& d_;
    const std::string& shown_;
    size_t pos_ = 0;
    std::vector<const char*> leaves_;  // each leaf's value mask in the topology, in order

    // Damage: the file is inconsistent with itself.
    [[noreturn]] void fail(const std::string& why) const {
        throw CorruptFile(shown_ + " is damaged: " + why);
    }
    // A well-formed file of a kind hyprvdb does not write.
    [[noreturn]] void foreign(const std::string& why) const {
        throw ForeignFile(shown_ + " holds no hyprvdb adapter grid: " + why);
    }
    void need(uint64_t n, const char* what) const {
        if (n > d_.size() - pos_) fail(std::string(what) + " runs past the end of the file");
    }
    void skip(uint64_t n, const char* what) {
        need(n, what);
        pos_ += size_t(n);
    }
    template <typename T>
    T get(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, d_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    // A u32 length and that many bytes.
    std::string_view text(const char* what) {
        const uint32_t n = get<uint32_t>(what);
        skip(n, what);
        return std::string_view(d_).substr(pos_ - n, n);
    }
    void expect_text(const char* what, const char* want) {
        const std::string_view got = text(what);
        if (got != want)
            foreign(std::string(what) + " is '" + printable(std::string(got)) +
                    "', hyprvdb writes '" + want + "'");
    }

    // OpenVDB reads a registered type's value by its own size, whatever length the file gives.
    static int64_t fixed_size(std::string_view type) {
        static const std::pair<const char*, int64_t> sizes[] = {
            {"bool", 1}, {"int32", 4}, {"int64", 8}, {"float", 4}, {"double", 8},
            {"vec3i", 12}, {"vec3s", 12}, {"vec3d", 24}};
        for (const auto& [name, n] : sizes)
            if (type == name) return n;
        return -1;
    }

    void meta_map(const char* what) {
        const uint32_t count = get<uint32_t>(what);
        for (uint32_t i = 0; i < count; ++i) {
            const std::string name(text(what));
            const std::string_view type = text(what);
            const uint32_t n = get<uint32_t>(what);
            skip(n, what);
            // io::DelayedLoadMetadata's type name, and an unregistered one of the same length.
            static constexpr char kDelayedLoad[] = "__delayedload", kRaw[] = "__hyprvdb_raw";
            static_assert(sizeof(kDelayedLoad) == sizeof(kRaw));
            if (type == kDelayedLoad) {
                d_.replace(size_t(type.data() - d_.data()), type.size(), kRaw);
            } else if (type == "string") {
            } else if (const int64_t size = fixed_size(type); size >= 0) {
                if (n != size)
                    fail(std::string(what) + " '" + printable(name) + "' of type " +
                         std::string(type) + " claims " + std::to_string(n) + " bytes");
            } else if (openvdb::Metadata::isRegisteredType(std::string(type))) {
                foreign(std::string(what) + " '" + printable(name) + "' has type '" +
                        std::string(type) + "', which hyprvdb does not write");
            }  // an unregistered type is read as raw bytes
        }
    }

    // A node mask of `bytes` bytes; returns its bits set.
    uint32_t mask(size_t bytes, const char* what, const char** at = nullptr) {
        need(bytes, what);
        if (at) *at = d_.data() + pos_;
        uint32_t on = 0;
        for (size_t i = 0; i < bytes; i += 8) {
            uint64_t w;
            std::memcpy(&w, d_.data() + pos_ + i, 8);
            on += uint32_t(__builtin_popcountll(w));
        }
        pos_ += bytes;
        return on;
    }

    // io::readCompressedValues with active-mask compression: a flag byte, at most two inactive
    // values, an optional selection mask, then the active values (or all of them).
    void values(uint32_t all, uint32_t active, const char* what) {
        const int8_t flag = get<int8_t>(what);
        using namespace openvdb::io;
        if (flag == NO_MASK_AND_ONE_INACTIVE_VAL || flag == MASK_AND_ONE_INACTIVE_VAL ||
            flag == MASK_AND_TWO_INACTIVE_VALS)
            skip(flag == MASK_AND_TWO_INACTIVE_VALS ? 8 : 4, what);
        if (flag == MASK_AND_NO_INACTIVE_VALS || flag == MASK_AND_ONE_INACTIVE_VAL ||
            flag == MASK_AND_TWO_INACTIVE_VALS)
            skip(all / 8, what);
        skip(uint64_t(flag == NO_MASK_AND_ALL_VALS ? all : active) * sizeof(float), what);
    }

    // InternalNode::readTopology: child mask, value mask, values, then each child in mask order.
    void internal(int log2dim) {
        const uint32_t n = 1u << (3 * log2dim);
        const char* children;
        const uint32_t kids = mask(n / 8, "an internal node's child mask", &children);
        const uint32_t active = mask(n / 8, "an internal node's value mask");
        values(n, active, "an internal node's values");
        // The children's bytes follow in mask order; no child can be smaller than a leaf's mask.
        need(uint64_t(kids) * 64, "an internal node's children");
        // Copy the mask: the children's walks move through the data.
        std::vector<uint64_t> bits(n / 64);
        std::memcpy(bits.data(), children, n / 8);
        for (uint64_t w : bits)
            for (; w; w &= w - 1) {
                if (log2dim == 5) {
                    internal(4);
                } else {
                    const char* leaf;
                    mask(64, "a leaf's value mask", &leaf);
                    leaves_.push_back(leaf);
                }
            }
    }

    void tree() {
        skip(4, "the background value");
        const uint32_t tiles = get<uint32_t>("the root's tile count");
        const uint32_t children = get<uint32_t>("the root's child count");
        if (tiles != 0) foreign("its tree has " + std::to_string(tiles) + " root tiles");
        // Children must come in the root table's order (origins ascending and aligned), so
        // that each is read once and the buffers below come in the same order.
        need(uint64_t(children) * (12 + 8192), "the root's children");
        int32_t prev[3] = {0, 0, 0};
        for (uint32_t i = 0; i < children; ++i) {
            int32_t o[3];
            for (int32_t& c : o) c = get<int32_t>("a child's origin");
            if ((o[0] | o[1] | o[2]) & 4095) fail("a root child's origin is not aligned");
            if (i > 0 && !std::lexicographical_compare(prev, prev + 3, o, o + 3))
                fail("the root's children are not in ascending order");
            std::copy(o, o + 3, prev);
            internal(5);
        }
        // Tree::readBuffers: per leaf, its value mask again, then its values.
        for (const char* topo : leaves_) {
            const char* again;
            const uint32_t active = mask(64, "a leaf's value mask", &again);
            if (std::memcmp(topo, again, 64) != 0)
                fail("a leaf's value mask differs between topology and values");
            values(512, active, "a leaf's values");
        }
    }
};

void put_meta(openvdb::MetaMap& m, const MetaPairs& pairs) {
    for (const auto& [k, v] : pairs) m.insertMeta(k, openvdb::StringMetadata(v));
}

}  // namespace

void save_vdb(const std::vector<GridOut>& grids, const std::string& path,
              const MetaPairs& file_meta) {
    openvdb::initialize();
    openvdb::GridPtrVec out;
    for (const GridOut& g : grids) {
        auto grid = openvdb::FloatGrid::create(0.0f);
        grid->setName(g.name);
        grid->setGridClass(openvdb::GRID_UNKNOWN);
        put_meta(*grid, g.meta);
        grid->insertMeta(kMetaRows, openvdb::Int64Metadata(g.rows));
        grid->insertMeta(kMetaCols, openvdb::Int64Metadata(g.cols));
        grid->insertMeta(kMetaBlockRows, openvdb::Int64Metadata(g.block_rows));
        grid->insertMeta(kMetaBlockCols, openvdb::Int64Metadata(g.block_cols));
        grid->insertMeta(kMetaCoordMap, openvdb::StringMetadata(kCoordMap));
        auto acc = grid->getAccessor();
        for (size_t i = 0; i < g.n; ++i) acc.setValueOn(file_coord(g.r[i], g.c[i]), g.v[i]);
        out.push_back(grid);
    }
    openvdb::MetaMap fmeta;
    put_meta(fmeta, file_meta);
    openvdb::io::File file(path);
    // Values are written raw for active voxels only: random float32 values do not compress,
    // and the masks say where they go.
    file.setCompression(openvdb::io::COMPRESS_ACTIVE_MASK);
    try {
        file.write(out, fmeta);
    } catch (const openvdb::Exception& e) {
        throw FileError(std::string("cannot write ") + path + ": " + e.what());
    }
    file.close();
}

namespace {

GridIn read_grid(const openvdb::FloatGrid& grid, const std::string& shown) {
    GridIn g;
    g.name = grid.getName();
    if (!valid_utf8(g.name)) throw CorruptFile(shown + ": a grid name is not UTF-8 text");
    const std::string where = shown + ": grid '" + g.name + "'";
    auto int_meta = [&](const char* key) -> int64_t {
        if (auto m = grid.getMetadata<openvdb::Int64Metadata>(key)) return m->value();
        // pyopenvdb writes Python ints as int32 metadata.
        if (auto m = grid.getMetadata<openvdb::Int32Metadata>(key)) return m->value();
        throw CorruptFile(where + ": metadata '" + key + "' is missing or not an integer");
    };
    g.rows = int_meta(kMetaRows);
    g.cols = int_meta(kMetaCols);
    g.block_rows = int_meta(kMetaBlockRows);
    g.block_cols = int_meta(kMetaBlockCols);
    auto map = grid.getMetadata<openvdb::StringMetadata>(kMetaCoordMap);
    if (!map || map->value() != kCoordMap)
        throw ForeignFile(shown + ": unknown coordinate mapping '" +
                          printable(map ? map->value() : "") + "', expected '" + kCoordMap +
                          "'");
    constexpr int64_t kMaxDim = int64_t(1) << 31;
    const bool ok = g.rows > 0 && g.rows < kMaxDim && g.cols > 0 && g.cols < kMaxDim &&
                    g.block_rows > 0 && g.block_cols > 0 && g.rows % g.block_rows == 0 &&
                    g.cols % g.block_cols == 0 && g.block_rows * g.block_cols <= (1 << 20);
    if (!ok)
        throw CorruptFile(where + ": bad shape in metadata: (" + std::to_string(g.rows) + ", " +
                          std::to_string(g.cols) + ") in blocks of (" +
                          std::to_string(g.block_rows) + ", " + std::to_string(g.block_cols) +
                          ")");
    const size_t n = size_t(grid.activeVoxelCount());
    g.r.reserve(n);
    g.c.reserve(n);
    g.v.reserve(n);
    for (auto it = grid.cbeginValueOn(); it; ++it) {
        if (!it.isVoxelValue())
            throw CorruptFile(where + ": active tiles are not part of the adapter format");
        const openvdb::Coord xyz = it.getCoord();
        const int64_t row = xyz.x(), col = (int64_t(xyz.y()) << 3) | xyz.z();
        if (xyz.z() < 0 || xyz.z() > 7 || row < 0 || row >= g.rows || xyz.y() < 0 || col >= g.cols)
            throw CorruptFile(where + ": voxel " + std::to_string(xyz.x()) + "," +
                              std::to_string(xyz.y()) + "," + std::to_string(xyz.z()) +
                              " lies outside the matrix");
        g.r.push_back(row);
        g.c.push_back(col);
        g.v.push_back(*it);
    }
    return g;
}

}  // namespace

std::vector<GridIn> load_vdb(const std::string& data, const std::string& shown) {
    openvdb::initialize();
    std::string checked = data;
    LayoutWalk(checked, shown).run();
    std::vector<openvdb::FloatGrid::Ptr> found;
    try {
        // After the walk no read should fail; should one, a stream that throws at its end stops
        // OpenVDB from reading on past it.
        std::istringstream is(checked);
        is.exceptions(std::ios::failbit | std::ios::badbit);
        openvdb::io::Stream stream(is, /*delayLoad=*/false);
        for (const auto& g : *stream.getGrids())
            if (g->isType<openvdb::FloatGrid>() && (*g)[kMetaRows])  // a hyprvdb grid
                found.push_back(openvdb::gridPtrCast<openvdb::FloatGrid>(g));
    } catch (const std::ios_base::failure&) {
        throw CorruptFile(shown + " is damaged: a count or length in its OpenVDB data runs past "
                          "the end of the file");
    } catch (const std::exception& e) {
        throw CorruptFile(shown + " is not a readable OpenVDB file: " + printable(e.what()));
    }
    if (found.empty())
        throw ForeignFile(shown + " holds no hyprvdb adapter grid (a float grid with '" +
                          std::string(kMetaRows) + "' metadata)");
    std::vector<GridIn> out;
    for (const auto& grid : found) out.push_back(read_grid(*grid, shown));
    return out;
}

}  // namespace hyprvdb
