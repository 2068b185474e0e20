// Python bindings: type conversion only. Validation of dtypes and lengths happens in Python;
// coordinate ranges are checked in C++ (one pass, before anything changes).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <mutex>
#include <shared_mutex>

#include "core/adapter_core.h"
#include "core/block_tree.h"
#include "core/vdb_io.h"

namespace nb = nanobind;
using namespace nb::literals;
using hyprvdb::AdapterCore;
using hyprvdb::BlockTree;
using hyprvdb::MatrixView;

namespace {

template <typename T>
using Vec1 = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <typename T>
using Out1 = nb::ndarray<nb::numpy, T, nb::ndim<1>>;

template <typename T>
Out1<T> to_numpy(std::vector<T>&& v) {
    auto* owner = new std::vector<T>(std::move(v));
    nb::capsule free_owner(owner, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
    return Out1<T>(owner->data(), {owner->size()}, free_owner);
}

void same_length(size_t a, size_t b, const char* name_b) {
    if (a != b)
        throw nb::value_error((std::string("rows and ") + name_b + " must have the same length, got " +
                               std::to_string(a) + " and " + std::to_string(b))
                                  .c_str());
}

// The methods both live layouts share (AdapterCore for tile mode, MatrixView otherwise).
template <typename T>
void def_adapter(nb::class_<T>& cls) {
    cls.def("copy",
            [](const T& self) {
                std::shared_lock lock(self.mutex());
                return self.copy();
            })
        .def_prop_ro("rows", &T::rows)
        .def_prop_ro("cols", &T::cols)
        .def_prop_ro("block_rows", &T::block_rows)
        .def_prop_ro("block_cols", &T::block_cols)
        .def("set",
             [](T& self, Vec1<int64_t> r, Vec1<int64_t> c, Vec1<float> v, bool accumulate) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 same_length(r.shape(0), v.shape(0), "values");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex());
                 self.set(r.data(), c.data(), v.data(), r.shape(0), accumulate);
             },
             "rows"_a, "cols"_a, "values"_a, "accumulate"_a)
        .def("get",
             [](const T& self, Vec1<int64_t> r, Vec1<int64_t> c) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 std::vector<float> out;
                 std::vector<uint8_t> on;
                 out.reserve(r.shape(0));  // resized below without the GIL
                 on.reserve(r.shape(0));
                 {
                     nb::gil_scoped_release nogil;
                     std::shared_lock lock(self.mutex());
                     out.resize(r.shape(0));
                     on.resize(r.shape(0));
                     self.get(r.data(), c.data(), r.shape(0), out.data(), on.data());
                 }
                 return nb::make_tuple(to_numpy(std::move(out)), to_numpy(std::move(on)));
             },
             "rows"_a, "cols"_a)
        .def("remove",
             [](T& self, Vec1<int64_t> r, Vec1<int64_t> c) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex());
                 return self.remove(r.data(), c.data(), r.shape(0));
             },
             "rows"_a, "cols"_a)
        .def("prune",
             [](T& self, float tolerance) {
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex());
                 return self.prune(tolerance);
             },
             "tolerance"_a)
        .def("clear",
             [](T& self) {
                 std::unique_lock lock(self.mutex());
                 self.clear();
             })
        .def("active_count",
             [](const T& self) {
                 std::shared_lock lock(self.mutex());
                 return self.active_count();
             })
        .def("leaf_count",
             [](const T& self) {
                 std::shared_lock lock(self.mutex());
                 return self.leaf_count();
             })
        .def("memory_usage",
             [](const T& self) {
                 std::shared_lock lock(self.mutex());
                 return self.memory_usage();
             })
        .def("export_active",
             [](const T& self) {
                 std::vector<int64_t> r, c;
                 std::vector<float> v;
                 {
                     nb::gil_scoped_release nogil;
                     std::shared_lock lock(self.mutex());
                     self.export_active(r, c, v);
                 }
                 return nb::make_tuple(to_numpy(std::move(r)), to_numpy(std::move(c)),
                                       to_numpy(std::move(v)));
             })
        .def("to_dense",
             [](const T& self, nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu> out) {
                 if (int64_t(out.shape(0)) != self.rows() || int64_t(out.shape(1)) != self.cols())
                     throw nb::value_error("out has the wrong shape");
                 nb::gil_scoped_release nogil;
                 std::shared_lock lock(self.mutex());
                 self.to_dense(out.data());
             },
             "out"_a)
        .def("from_dense",
             [](T& self, nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> dense,
                float tolerance) {
                 if (int64_t(dense.shape(0)) != self.rows() || int64_t(dense.shape(1)) != self.cols())
                     throw nb::value_error("dense has the wrong shape");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex());
                 self.from_dense(dense.data(), tolerance);
             },
             "dense"_a, "tolerance"_a);
}

}  // namespace

NB_MODULE(_core, m) {
    m.doc() = "hyprvdb's C++ core: OpenVDB mask trees with packed values";

    nb::register_exception_translator([](const std::exception_ptr& p, void*) {
        try {
            std::rethrow_exception(p);
        } catch (const hyprvdb::OutOfRange& e) {
            PyErr_SetString(PyExc_IndexError, e.what());
        } catch (const hyprvdb::BadValue& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });
    static nb::exception<hyprvdb::FileError> file_error(m, "FileError", PyExc_RuntimeError);
    static nb::exception<hyprvdb::ForeignFile> foreign_file(m, "ForeignFile", PyExc_RuntimeError);
    static nb::exception<hyprvdb::CorruptFile> corrupt_file(m, "CorruptFile", PyExc_RuntimeError);

    auto core = nb::class_<AdapterCore>(m, "Core");
    core.def(nb::init<int64_t, int64_t, int64_t, int64_t>(), "rows"_a, "cols"_a, "block_rows"_a,
             "block_cols"_a)
        .def_prop_ro("zbits", &AdapterCore::zbits)
        .def("zero",
             [](AdapterCore& self, Vec1<int64_t> r, Vec1<int64_t> c) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex());
                 return self.zero(r.data(), c.data(), r.shape(0));
             },
             "rows"_a, "cols"_a);
    def_adapter(core);

    nb::class_<BlockTree>(m, "Tree")
        .def(nb::init<>())
        .def("add_matrix",
             [](BlockTree& self, int64_t rows, int64_t cols) {
                 std::unique_lock lock(self.mutex);
                 return self.add_matrix(rows, cols);
             },
             "rows"_a, "cols"_a)
        .def("copy",
             [](const BlockTree& self) {
                 std::shared_lock lock(self.mutex);
                 return std::make_shared<BlockTree>(self);
             })
        .def("matrices",
             [](const BlockTree& self) {
                 std::shared_lock lock(self.mutex);
                 return self.matrices();
             })
        .def("active_count",
             [](const BlockTree& self) {
                 std::shared_lock lock(self.mutex);
                 return self.active_count();
             })
        .def("memory_usage", [](const BlockTree& self) {
            std::shared_lock lock(self.mutex);
            return self.memory_usage();
        });

    auto view = nb::class_<MatrixView>(m, "View");
    view.def(nb::init<int64_t, int64_t>(), "rows"_a, "cols"_a)
        .def(nb::init<std::shared_ptr<BlockTree>, uint32_t>(), "tree"_a, "index"_a)
        .def_prop_ro("tree", &MatrixView::tree)
        .def_prop_ro("index", &MatrixView::index)
        .def("leaf_stats", [](const MatrixView& self) {
            // (weights, active cells, dense) per leaf: for tests of the leaf forms.
            std::shared_lock lock(self.mutex());
            auto s = self.tree()->leaf_stats(self.index());
            return nb::make_tuple(to_numpy(std::move(s.n)), to_numpy(std::move(s.k)),
                                  to_numpy(std::move(s.dense)));
        });
    def_adapter(view);

    // The fold of cell indices into tree coordinates (block_tree.h), for tests.
    m.def("fold", [](uint64_t g) {
        const openvdb::Coord xyz = hyprvdb::fold(g);
        return nb::make_tuple(xyz.x(), xyz.y(), xyz.z());
    }, "g"_a);
    m.def("unfold", [](int32_t x, int32_t y, int32_t z) {
        return hyprvdb::unfold(openvdb::Coord(x, y, z));
    }, "x"_a, "y"_a, "z"_a);

    m.def("save_vdb",
          [](nb::list grids, const std::string& path, const hyprvdb::MetaPairs& file_meta) {
              // Each grid: (name, rows, cols, block_rows, block_cols, rows[], cols[], values[],
              // metadata).
              std::vector<hyprvdb::GridOut> out;
              std::vector<nb::object> keep;  // the arrays stay alive while the GIL is released
              for (nb::handle h : grids) {
                  auto t = nb::cast<nb::tuple>(h);
                  auto r = nb::cast<Vec1<int64_t>>(t[5]);
                  auto c = nb::cast<Vec1<int64_t>>(t[6]);
                  auto v = nb::cast<Vec1<float>>(t[7]);
                  same_length(r.shape(0), c.shape(0), "cols");
                  same_length(r.shape(0), v.shape(0), "values");
                  out.push_back({nb::cast<std::string>(t[0]), nb::cast<int64_t>(t[1]),
                                 nb::cast<int64_t>(t[2]), nb::cast<int64_t>(t[3]),
                                 nb::cast<int64_t>(t[4]), r.data(), c.data(), v.data(),
                                 r.shape(0), nb::cast<hyprvdb::MetaPairs>(t[8])});
                  keep.push_back(nb::borrow(h));
              }
              nb::gil_scoped_release nogil;
              hyprvdb::save_vdb(out, path, file_meta);
          },
          "grids"_a, "path"_a, "file_meta"_a);
    m.def("load_vdb", [](nb::bytes data, const std::string& shown) {
        const std::string bytes(data.c_str(), data.size());
        std::vector<hyprvdb::GridIn> grids;
        {
            nb::gil_scoped_release nogil;
            grids = hyprvdb::load_vdb(bytes, shown);
        }
        nb::list out;
        for (auto& g : grids)
            out.append(nb::make_tuple(g.name, g.rows, g.cols, g.block_rows, g.block_cols,
                                      to_numpy(std::move(g.r)), to_numpy(std::move(g.c)),
                                      to_numpy(std::move(g.v))));
        return out;
    }, "data"_a, "shown"_a);
}
