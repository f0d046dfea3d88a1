// The private extension ragcore._cuda: the CUDA dense store (issue 4). Glue and validation only;
// the GIL is released around every call that touches the GPU. Built only when a CUDA compiler is
// found, and independent of ragcore._core: the CUDA runtime is linked statically, so importing this
// module needs no libcudart and works on a machine without a driver (device_count() is then 0).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "../bindings/common.hpp"
#include "ragcore/common.hpp"
#include "ragcore/cuda_dense.hpp"

namespace py = pybind11;
using namespace pybind11::literals;
using ragcore::cuda::DenseStore;

namespace {

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

// A C-contiguous numpy array of element type T with `ndim` dimensions (and `cols` columns when
// ndim == 2 and cols >= 0): TypeError for another type, ValueError for another layout.
template <class T>
py::array checked_array(py::handle h, const char* what, const char* expected_dtype, int ndim, int64_t cols) {
  RAGCORE_CHECK_TYPE(py::isinstance<py::array>(h),
                     what << " must be a numpy.ndarray of " << expected_dtype << ", got " << ragcore_py::type_name(h.ptr()));
  py::array a = py::reinterpret_borrow<py::array>(h);
  RAGCORE_CHECK_TYPE(py::isinstance<py::array_t<T>>(a), what << " must have dtype " << expected_dtype << ", got "
                                                              << std::string(py::str(a.dtype())));
  if (ndim == 2) {
    RAGCORE_CHECK(a.ndim() == 2 && a.shape(1) == cols, what << " must have shape (n, " << cols << "), got "
                                                             << shape_str(a));
  } else {
    RAGCORE_CHECK(a.ndim() == ndim, what << " must be " << ndim << "-dimensional, got shape " << shape_str(a));
  }
  RAGCORE_CHECK(a.flags() & py::array::c_style, what << " must be C-contiguous (use numpy.ascontiguousarray)");
  return a;
}

// A search's optional filter: None, or a C-contiguous uint8 (n,) array (its length is checked against the
// store's size under the store's lock).
py::object checked_skip(py::handle h) {
  if (h.is_none()) return py::none();
  return checked_array<uint8_t>(h, "skip", "uint8", 1, -1);
}

int64_t checked_k(int64_t k) {
  RAGCORE_CHECK(k >= 1, "k must be >= 1, got " << k);
  RAGCORE_CHECK(k <= ragcore::cuda::kMaxK,
                "k must be <= " << ragcore::cuda::kMaxK << " for the GPU top-k select, got " << k);
  return k;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "ragcore CUDA kernels: dense top-k search on the GPU (private: use ragcore.DenseIndex)";
  py::register_local_exception_translator(ragcore_py::translate_errors);
  py::register_local_exception_translator([](std::exception_ptr p) {  // tried first
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ragcore::cuda::cuda_error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.attr("MAX_K") = ragcore::cuda::kMaxK;

  m.def("device_count", &ragcore::cuda::device_count,
        "Number of CUDA devices; 0 when there is no driver or no GPU (never raises).");
  m.def(
      "device_name",
      [](int device) {
        py::gil_scoped_release nogil;
        return ragcore::cuda::device_name(device);
      },
      "device"_a, "Name of CUDA device `device`.");

  py::class_<DenseStore>(m, "DenseStore",
                         "Rows on one GPU (float32, float16 or bfloat16) with exact top-k inner-product search.")
      .def(py::init([](int64_t dim, const std::string& dtype, int device) {
             const auto t = ragcore::cuda::storage_type_from_name(dtype);
             py::gil_scoped_release nogil;
             return std::make_unique<DenseStore>(dim, t, device);
           }),
           "dim"_a, "dtype"_a = "float32", "device"_a = 0)
      .def(
          "add",
          [](DenseStore& s, py::handle vectors) {
            py::array a = checked_array<float>(vectors, "vectors", "float32", 2, s.dim());
            const auto* p = static_cast<const float*>(a.data());
            const int64_t n = a.shape(0);
            py::gil_scoped_release nogil;
            s.add(p, n);
          },
          "vectors"_a, "Append rows: float32 (n, dim), C-contiguous (already normalised for cosine).")
      .def(
          "set_deleted",
          [](DenseStore& s, py::handle indices) {
            py::array a = checked_array<int64_t>(indices, "indices", "int64", 1, -1);
            const auto* p = static_cast<const int64_t*>(a.data());
            const int64_t n = a.shape(0);
            py::gil_scoped_release nogil;
            s.set_deleted(p, n);
          },
          "indices"_a, "Tombstone rows: int64 (m,) row ids; these rows are never returned.")
      .def(
          "search",
          [](DenseStore& s, py::handle queries, int64_t k, py::handle skip) {
            checked_k(k);
            py::array a = checked_array<float>(queries, "queries", "float32", 2, s.dim());
            py::object sk = checked_skip(skip);  // held until the search is done
            const auto* pk = sk.is_none() ? nullptr : static_cast<const uint8_t*>(py::array(sk).data());
            const int64_t nk = sk.is_none() ? 0 : py::array(sk).shape(0);
            const int64_t nq = a.shape(0);
            py::array_t<int64_t> idx({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(k)});
            py::array_t<float> sc({static_cast<py::ssize_t>(nq), static_cast<py::ssize_t>(k)});
            const auto* q = static_cast<const float*>(a.data());
            int64_t* pi = idx.mutable_data();
            float* ps = sc.mutable_data();
            {
              py::gil_scoped_release nogil;
              s.search(q, nq, k, pi, ps, pk, nk);
            }
            return py::make_tuple(idx, sc);
          },
          "queries"_a, "k"_a, "skip"_a = py::none(),
          "Exact top-k of float32 queries (nq, dim): (indices int64 (nq, k), scores float32 (nq, k)), best first, "
          "ties by lower row id, padded with -1 / -inf. `skip`: optional uint8 (size,), nonzero = leave the row "
          "out of this search too (a filter).")
      .def(
          "search_device",
          [](DenseStore& s, std::uintptr_t queries_ptr, int64_t nq, int64_t k, std::uintptr_t out_indices_ptr,
             std::uintptr_t out_scores_ptr, std::uintptr_t stream, py::handle skip) {
            checked_k(k);
            RAGCORE_CHECK(nq >= 0, "nq must be >= 0, got " << nq);
            py::object sk = checked_skip(skip);
            const auto* pk = sk.is_none() ? nullptr : static_cast<const uint8_t*>(py::array(sk).data());
            const int64_t nk = sk.is_none() ? 0 : py::array(sk).shape(0);
            py::gil_scoped_release nogil;
            s.search_device(reinterpret_cast<const float*>(queries_ptr), nq, k,
                            reinterpret_cast<int64_t*>(out_indices_ptr), reinterpret_cast<float*>(out_scores_ptr),
                            stream, pk, nk);
          },
          "queries_ptr"_a, "nq"_a, "k"_a, "out_indices_ptr"_a, "out_scores_ptr"_a, "stream"_a = 0,
          "skip"_a = py::none(),
          "As search() on device pointers (float32 queries (nq, dim), int64 / float32 outputs (nq, k), row-major), "
          "enqueued on `stream` (a cudaStream_t as an int, 0 = default stream); returns without waiting. `skip` "
          "as in search(), a host array (copied before this returns).")
      .def(
          "to_host",
          [](DenseStore& s) {
            const int64_t n = s.size();
            py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(s.dim())});
            float* p = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              s.to_host(p, n);
            }
            return out;
          },
          "The stored rows as float32 (size, dim) (float16 / bfloat16 rows converted exactly).")
      .def(
          "_set_limits",
          [](DenseStore& s, int64_t chunk_rows, int64_t segment_rows, int64_t query_block) {
            s.set_limits(chunk_rows, segment_rows, query_block);
          },
          "chunk_rows"_a = 0, "segment_rows"_a = 0, "query_block"_a = 0,
          "Testing knobs (0 = automatic): rows per scored chunk, keys per select segment, queries per block.")
      .def_property_readonly("size", &DenseStore::size, "Rows stored, tombstoned ones included.")
      .def_property_readonly("dim", &DenseStore::dim)
      .def_property_readonly("dtype", [](const DenseStore& s) { return ragcore::cuda::storage_type_name(s.dtype()); })
      .def_property_readonly("device", &DenseStore::device)
      .def("__repr__", [](const DenseStore& s) {
        return "<ragcore._cuda.DenseStore dim=" + std::to_string(s.dim()) + " dtype=" +
               ragcore::cuda::storage_type_name(s.dtype()) + " size=" + std::to_string(s.size()) +
               " device=" + std::to_string(s.device()) + ">";
      });
}
