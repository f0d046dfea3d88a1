// Bindings of the dense kernels: validation and glue only; the GIL is released around the search. The
// test and benchmark knobs (dense_testing.hpp, private to csrc/src) go to the submodule _core._testing.
#include <pybind11/stl.h>

#include <cfloat>

#include "../src/dense_testing.hpp"
#include "common.hpp"
#include "ragcore/common.hpp"
#include "ragcore/dense.hpp"

namespace ragcore_py {
using namespace ragcore;

namespace {

std::string dtype_str(const py::array& a) { return std::string(py::str(a.dtype())); }

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

dense::DType dtype_of(const py::array& a) {
  const char kind = a.dtype().kind();
  if (kind == 'f' && a.itemsize() == 4) return dense::DType::f32;
  if (kind == 'f' && a.itemsize() == 2) return dense::DType::f16;
  if (kind == 'i' && a.itemsize() == 1) return dense::DType::i8;
  RAGCORE_THROW_(type_error, "vectors have dtype " << dtype_str(a) << ", expected float32, float16 or int8");
}

// A per-row side array of the collection (scales, prefilter codes or aux): `what` (kind, itemsize: its
// dtype, named `dtype`), C-contiguous (rows, cols); raises TypeError / ValueError naming it otherwise.
py::array side_matrix(const py::object& obj, const char* what, char kind, int itemsize, const char* dtype,
                      int64_t rows, int64_t cols) {
  py::array a = py::array::ensure(obj);
  RAGCORE_CHECK_TYPE(a && a.dtype().kind() == kind && a.itemsize() == itemsize, what << " must be " << dtype);
  RAGCORE_CHECK(a.ndim() == 2 && a.shape(0) == rows && a.shape(1) == cols && (a.flags() & py::array::c_style),
                what << " must be a C-contiguous (" << rows << ", " << cols << ") array");
  return a;
}

// The collection of (n, dim) rows `data` with its side arrays (int8 scales; an optional int8 prefilter:
// codes and aux), validated; `keep` holds the arrays the collection points into.
dense::Collection make_collection(const py::array& data, const py::object& aux, const py::object& pre,
                                  const py::object& pre_aux, std::vector<py::array>& keep) {
  dense::Collection c;
  c.dtype = dtype_of(data);
  RAGCORE_CHECK(data.ndim() == 2, "vectors must be 2-d (n, dim), got " << data.ndim() << " dimensions");
  RAGCORE_CHECK(data.flags() & py::array::c_style, "vectors must be C-contiguous");
  c.n = data.shape(0);
  c.dim = static_cast<int>(data.shape(1));
  c.data = data.data();
  if (c.dtype == dense::DType::i8) {
    RAGCORE_CHECK(!aux.is_none(), "int8 vectors need their (n, 2) float32 scales");
    keep.push_back(side_matrix(aux, "int8 scales", 'f', 4, "float32", c.n, 2));
    c.aux = static_cast<const float*>(keep.back().data());
  }
  if (!pre.is_none()) {
    RAGCORE_CHECK(c.dtype != dense::DType::i8, "an int8 prefilter is for float32 or float16 rows");
    keep.push_back(side_matrix(pre, "prefilter codes", 'i', 1, "int8", c.n, c.dim));
    c.pre = static_cast<const int8_t*>(keep.back().data());
    RAGCORE_CHECK(!pre_aux.is_none(), "prefilter codes need their (n, 4) float32 aux");
    keep.push_back(side_matrix(pre_aux, "prefilter aux", 'f', 4, "float32", c.n, 4));
    c.pre_aux = static_cast<const float*>(keep.back().data());
  }
  return c;
}

// search(data, aux, deleted, queries, k, threads, path, pre, pre_aux)
//   -> (indices (nq,k) int64, scores (nq,k) float32); path: 0 = auto (_core.dense_search), 1 = scan,
//   2 = blocked (_core._testing.dense_search_path)
py::tuple dense_search(py::array data, py::object aux, py::object deleted, py::array queries, int k,
                       py::handle threads_obj, int path, py::object pre, py::object pre_aux) {
  const int threads = threads_arg(threads_obj);
  std::vector<py::array> keep;
  dense::Collection c = make_collection(data, aux, pre, pre_aux, keep);
  py::array del_a;
  if (!deleted.is_none()) {
    del_a = py::array::ensure(deleted);
    RAGCORE_CHECK_TYPE(del_a && del_a.itemsize() == 1 && (del_a.dtype().kind() == 'b' || del_a.dtype().kind() == 'u'),
                       "deleted mask must be bool or uint8");
    RAGCORE_CHECK(del_a.ndim() == 1 && del_a.shape(0) == c.n && (del_a.flags() & py::array::c_style),
                  "deleted mask must be a C-contiguous (" << c.n << ",) array");
    c.deleted = static_cast<const uint8_t*>(del_a.data());
  }
  RAGCORE_CHECK_TYPE(queries.dtype().kind() == 'f' && queries.itemsize() == 4,
                     "queries have dtype " << dtype_str(queries) << ", expected float32");
  RAGCORE_CHECK(queries.ndim() == 2 && queries.shape(1) == c.dim,
                "queries must have shape (nq, " << c.dim << "), got " << shape_str(queries));
  RAGCORE_CHECK(queries.flags() & py::array::c_style, "queries must be C-contiguous");
  RAGCORE_CHECK(k >= 1, "k must be >= 1, got " << k);
  RAGCORE_CHECK(path >= 0 && path <= 2, "path must be 0, 1 or 2, got " << path);
  const int64_t nq = queries.shape(0);
  py::array_t<int64_t> idx({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(k)});
  py::array_t<float> sc({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(k)});
  const float* q = static_cast<const float*>(queries.data());
  int64_t* pi = idx.mutable_data();
  float* ps = sc.mutable_data();
  {
    py::gil_scoped_release release;
    if (path == 0)
      dense::search(c, q, nq, k, threads, pi, ps);
    else
      dense::testing::search_path(c, q, nq, k, threads, path, pi, ps);
  }
  return py::make_tuple(idx, sc);
}

}  // namespace

void bind_dense(py::module_& m, py::module_& testing) {
  m.def(
      "dense_search",
      [](py::array data, py::object aux, py::object deleted, py::array queries, int k, py::handle threads,
         py::object pre, py::object pre_aux) {
        return dense_search(data, aux, deleted, queries, k, threads, 0, pre, pre_aux);
      },
      py::arg("data"), py::arg("aux"), py::arg("deleted"), py::arg("queries"), py::arg("k"), py::arg("threads") = 1,
      py::arg("pre") = py::none(), py::arg("pre_aux") = py::none(),
      "Top-k inner product over (n, dim) float32/float16/int8 rows (optionally with an int8 prefilter: "
      "codes (n, dim) and aux (n, 4)); see ragcore/dense.hpp.");
  testing.def("dense_search_path", &dense_search, py::arg("data"), py::arg("aux"), py::arg("deleted"),
              py::arg("queries"), py::arg("k"), py::arg("threads") = 1, py::arg("path") = 0,
              py::arg("pre") = py::none(), py::arg("pre_aux") = py::none(),
              "_core.dense_search forcing a path: 0 = auto, 1 = scan, 2 = blocked (tests of both paths).");
  m.def(
      "dense_prefilter_codes",
      [](py::array x, py::handle threads_obj) {
        const int threads = threads_arg(threads_obj);
        RAGCORE_CHECK_TYPE(x.dtype().kind() == 'f' && x.itemsize() == 4, "rows have dtype " << dtype_str(x)
                                                                                          << ", expected float32");
        RAGCORE_CHECK(x.ndim() == 2 && (x.flags() & py::array::c_style), "rows must be a C-contiguous (n, dim) array");
        const int64_t n = x.shape(0);
        const int dim = static_cast<int>(x.shape(1));
        py::array_t<int8_t> codes({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dim)});
        py::array_t<float> aux({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(4)});
        const float* px = static_cast<const float*>(x.data());
        int8_t* pc = codes.mutable_data();
        float* pa = aux.mutable_data();
        {
          py::gil_scoped_release release;
          dense::prefilter_codes(px, n, dim, threads, pc, pa);
        }
        return py::make_tuple(codes, aux);
      },
      py::arg("rows"), py::arg("threads") = 1,
      "The int8 prefilter (codes (n, dim) int8, aux (n, 4) float32) of float32 rows; see ragcore/dense.hpp.");
  testing.def(
      "read_probe",
      [](py::array a, py::handle threads_obj) {
        const int threads = threads_arg(threads_obj);
        RAGCORE_CHECK(a.flags() & py::array::c_style, "array must be C-contiguous");
        const void* p = a.data();
        const size_t bytes = static_cast<size_t>(a.nbytes());
        py::gil_scoped_release release;
        return dense::testing::read_probe(p, bytes, threads);
      },
      py::arg("array"), py::arg("threads") = 1,
      "XOR of the array's 8-byte words: a streaming-read probe (the benchmarks' memory-bandwidth reference).");
  m.def(
      "dense_validate",
      [](py::array data, py::object aux, py::object pre, py::object pre_aux, py::object threads_obj, float max_abs,
         uint16_t max_abs_f16) {
        const int threads = threads_obj.is_none() ? hardware_threads() : threads_arg(threads_obj);
        RAGCORE_CHECK(max_abs > 0.0f && max_abs <= FLT_MAX && max_abs_f16 <= 0x7BFF,
                      "max_abs must be finite and > 0, got " << max_abs << " (float16 bits " << max_abs_f16 << ")");
        std::vector<py::array> keep;
        const dense::Collection c = make_collection(data, aux, pre, pre_aux, keep);
        py::gil_scoped_release release;
        dense::validate_collection(c, threads, dense::RowBound{max_abs, max_abs_f16});
      },
      py::arg("data"), py::arg("aux") = py::none(), py::arg("pre") = py::none(), py::arg("pre_aux") = py::none(),
      py::arg("threads") = py::none(), py::arg("max_abs") = FLT_MAX, py::arg("max_abs_f16") = 0x7BFF,
      "Check loaded rows (see ragcore/dense.hpp validate_collection): ValueError 'corrupt index: ...' naming the "
      "first bad row.");
  m.def("dense_isa", &dense::isa, "The instruction set of the dense kernels ('amx', 'avx512', 'avx2' or 'scalar').");
  testing.def("dense_isas", &dense::testing::isas, "The instruction sets this CPU runs, best first.");
  testing.def("dense_set_isa", &dense::testing::set_isa, py::arg("name"),
              "Force 'auto', 'amx', 'avx512', 'avx2' or 'scalar' (tests, benchmarks).");
}

}  // namespace ragcore_py
