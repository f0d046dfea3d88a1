// The private extension ragcore._core: exception translation and the binding files.
#include <pybind11/pybind11.h>

#include <thread>

#include "common.hpp"

namespace py = pybind11;

namespace ragcore_py {
void bind_analysis(py::module_& m);
void bind_sparse(py::module_& m, py::module_& testing);
void bind_dense(py::module_& m, py::module_& testing);
}  // namespace ragcore_py

PYBIND11_MODULE(_core, m) {
  m.doc() = "ragcore native core (private: use the ragcore package)";
  py::register_exception_translator(ragcore_py::translate_errors);
  ragcore_py::bind_analysis(m);
  // test and benchmark knobs: not ragcore's API (forced search paths, instruction-set overrides, probes)
  py::module_ testing = m.def_submodule("_testing", "Test and benchmark knobs of the native core (private; not "
                                                    "ragcore's API: they may change or go at any time)");
  ragcore_py::bind_sparse(m, testing);
  ragcore_py::bind_dense(m, testing);
#ifdef RAGCORE_HAS_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  m.attr("MAX_THREADS") = ragcore::kMaxThreads;  // the bound of every `threads` argument
  m.def("hardware_threads", []() {
    const unsigned h = std::thread::hardware_concurrency();
    return h ? static_cast<int>(h) : 1;
  });
}
