// Python bindings: type conversion only. Validation of dtypes and lengths happens in Python;
// coordinate ranges are checked in C++ (one pass, before anything changes).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <mutex>
#include <shared_mutex>

#include "core/adapter_core.h"
#include "core/vdb_io.h"

namespace nb = nanobind;
using namespace nb::literals;
using hyprvdb::AdapterCore;

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

    nb::class_<AdapterCore>(m, "Core")
        .def(nb::init<int64_t, int64_t, int64_t, int64_t>(), "rows"_a, "cols"_a, "block_rows"_a,
             "block_cols"_a)
        .def("copy",
             [](const AdapterCore& self) {
                 std::shared_lock lock(self.mutex);
                 return new AdapterCore(self);
             })
        .def_prop_ro("rows", &AdapterCore::rows)
        .def_prop_ro("cols", &AdapterCore::cols)
        .def_prop_ro("block_rows", &AdapterCore::block_rows)
        .def_prop_ro("block_cols", &AdapterCore::block_cols)
        .def_prop_ro("zbits", &AdapterCore::zbits)
        .def("set",
             [](AdapterCore& self, Vec1<int64_t> r, Vec1<int64_t> c, Vec1<float> v, bool accumulate) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 same_length(r.shape(0), v.shape(0), "values");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex);
                 self.set(r.data(), c.data(), v.data(), r.shape(0), accumulate);
             },
             "rows"_a, "cols"_a, "values"_a, "accumulate"_a)
        .def("get",
             [](const AdapterCore& self, Vec1<int64_t> r, Vec1<int64_t> c) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 std::vector<float> out;
                 std::vector<uint8_t> on;
                 out.reserve(r.shape(0));  // resized below without the GIL
                 on.reserve(r.shape(0));
                 {
                     nb::gil_scoped_release nogil;
                     std::shared_lock lock(self.mutex);
                     out.resize(r.shape(0));
                     on.resize(r.shape(0));
                     self.get(r.data(), c.data(), r.shape(0), out.data(), on.data());
                 }
                 return nb::make_tuple(to_numpy(std::move(out)), to_numpy(std::move(on)));
             },
             "rows"_a, "cols"_a)
        .def("remove",
             [](AdapterCore& self, Vec1<int64_t> r, Vec1<int64_t> c) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex);
                 return self.remove(r.data(), c.data(), r.shape(0));
             },
             "rows"_a, "cols"_a)
        .def("zero",
             [](AdapterCore& self, Vec1<int64_t> r, Vec1<int64_t> c) {
                 same_length(r.shape(0), c.shape(0), "cols");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex);
                 return self.zero(r.data(), c.data(), r.shape(0));
             },
             "rows"_a, "cols"_a)
        .def("prune",
             [](AdapterCore& self, float tolerance) {
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex);
                 return self.prune(tolerance);
             },
             "tolerance"_a)
        .def("clear",
             [](AdapterCore& self) {
                 std::unique_lock lock(self.mutex);
                 self.clear();
             })
        .def("active_count",
             [](const AdapterCore& self) {
                 std::shared_lock lock(self.mutex);
                 return self.active_count();
             })
        .def("active_cells",
             [](const AdapterCore& self) {
                 std::shared_lock lock(self.mutex);
                 return self.active_cells();
             })
        .def("leaf_count",
             [](const AdapterCore& self) {
                 std::shared_lock lock(self.mutex);
                 return self.leaf_count();
             })
        .def("memory_usage",
             [](const AdapterCore& self) {
                 std::shared_lock lock(self.mutex);
                 return self.memory_usage();
             })
        .def("export_active",
             [](const AdapterCore& self) {
                 std::vector<int64_t> r, c;
                 std::vector<float> v;
                 {
                     nb::gil_scoped_release nogil;
                     std::shared_lock lock(self.mutex);
                     self.export_active(r, c, v);
                 }
                 return nb::make_tuple(to_numpy(std::move(r)), to_numpy(std::move(c)),
                                       to_numpy(std::move(v)));
             })
        .def("to_dense",
             [](const AdapterCore& self, nb::ndarray<float, nb::ndim<2>, nb::c_contig, nb::device::cpu> out) {
                 if (int64_t(out.shape(0)) != self.rows() || int64_t(out.shape(1)) != self.cols())
                     throw nb::value_error("out has the wrong shape");
                 nb::gil_scoped_release nogil;
                 std::shared_lock lock(self.mutex);
                 self.to_dense(out.data());
             },
             "out"_a)
        .def("from_dense",
             [](AdapterCore& self, nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> dense,
                float tolerance) {
                 if (int64_t(dense.shape(0)) != self.rows() || int64_t(dense.shape(1)) != self.cols())
                     throw nb::value_error("dense has the wrong shape");
                 nb::gil_scoped_release nogil;
                 std::unique_lock lock(self.mutex);
                 self.from_dense(dense.data(), tolerance);
             },
             "dense"_a, "tolerance"_a);

    m.def("save_vdb",
          [](const AdapterCore& core, const std::string& path, const std::string& name,
             const hyprvdb::MetaPairs& grid_meta, const hyprvdb::MetaPairs& file_meta) {
              nb::gil_scoped_release nogil;
              std::shared_lock lock(core.mutex);
              hyprvdb::save_vdb(core, path, name, grid_meta, file_meta);
          },
          "core"_a, "path"_a, "grid_name"_a, "grid_meta"_a, "file_meta"_a);
    m.def("load_vdb", [](nb::bytes data, const std::string& shown) {
        const std::string bytes(data.c_str(), data.size());
        std::string name;
        std::unique_ptr<AdapterCore> core;
        {
            nb::gil_scoped_release nogil;
            core = hyprvdb::load_vdb(bytes, shown, name);
        }
        return nb::make_tuple(std::move(core), name);
    }, "data"_a, "shown"_a);
}
