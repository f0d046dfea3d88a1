// Glue shared by the binding files: str/bytes -> UTF-8 views, std::vector -> numpy without a copy.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <exception>
#include <string_view>
#include <vector>

#include "ragcore/common.hpp"
#include "ragcore/parallel.hpp"

namespace ragcore_py {
namespace py = pybind11;

inline std::string type_name(PyObject* o) { return Py_TYPE(o)->tp_name; }

/// View the UTF-8 bytes of a str (or the raw bytes of a bytes object). The object viewed is kept
/// alive in `hold` (a new reference): once the GIL is released, another thread may drop the
/// caller's last reference to it (`queries[i] = "x"`) while the view is read. A str with lone
/// surrogates is encoded with "surrogatepass" (its surrogates then act as invalid bytes, i.e.
/// separators); that temporary is what `hold` keeps. Returns false when obj is neither str nor bytes.
inline bool utf8_view(PyObject* o, std::string_view& out, std::vector<py::object>& hold) {
  if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(o, &n);
    if (p) {
      hold.push_back(py::reinterpret_borrow<py::object>(o));
      out = std::string_view(p, static_cast<size_t>(n));
      return true;
    }
    PyErr_Clear();
    PyObject* b = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass");
    if (!b) throw py::error_already_set();
    hold.push_back(py::reinterpret_steal<py::object>(b));
    out = std::string_view(PyBytes_AS_STRING(b), static_cast<size_t>(PyBytes_GET_SIZE(b)));
    return true;
  }
  if (PyBytes_Check(o)) {
    hold.push_back(py::reinterpret_borrow<py::object>(o));
    out = std::string_view(PyBytes_AS_STRING(o), static_cast<size_t>(PyBytes_GET_SIZE(o)));
    return true;
  }
  return false;
}

/// The `threads` argument of a binding: a Python int (or anything with __index__) in
/// [1, kMaxThreads]; TypeError / ValueError naming the value otherwise (pybind11's own int
/// conversion gives a generic TypeError for 2**31 and lets 2**31 - 1 through to thread creation).
inline int threads_arg(py::handle h) {
  PyObject* o = h.ptr();
  RAGCORE_CHECK_TYPE(!PyBool_Check(o) && !PyFloat_Check(o) && PyIndex_Check(o),
                     "threads must be an int, got " << type_name(o));
  py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(o));
  if (!i) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  RAGCORE_CHECK(!overflow && v >= 1 && v <= ragcore::kMaxThreads,
                "threads must be between 1 and " << ragcore::kMaxThreads << ", got " << std::string(py::str(i)));
  return static_cast<int>(v);
}

inline py::str to_str(std::string_view s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogatepass");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

/// Hand a vector's buffer to numpy (1-d), no copy.
template <class T, class Out = T>
py::array_t<Out> to_numpy(std::vector<T>&& v) {
  static_assert(sizeof(T) == sizeof(Out), "same element size");
  auto* p = new std::vector<T>(std::move(v));
  py::capsule owner(p, [](void* x) { delete static_cast<std::vector<T>*>(x); });
  return py::array_t<Out>({static_cast<py::ssize_t>(p->size())}, {static_cast<py::ssize_t>(sizeof(T))},
                          reinterpret_cast<const Out*>(p->data()), owner);
}


/// Exception translator of every ragcore module: ragcore's error types -> ValueError, TypeError,
/// IndexError, RuntimeError (anything else falls through to pybind11's own translation).
inline void translate_errors(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const ragcore::type_error& e) {
    PyErr_SetString(PyExc_TypeError, e.what());
  } catch (const ragcore::value_error& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const ragcore::index_error& e) {
    PyErr_SetString(PyExc_IndexError, e.what());
  } catch (const ragcore::internal_error& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
}

}  // namespace ragcore_py
