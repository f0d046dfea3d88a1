// Bindings of the sparse index: builder (streamed batches) and searchable index. Glue and
// validation only; the GIL is released around every kernel.
#include <pybind11/stl.h>

#include "common.hpp"
#include "ragcore/sparse.hpp"

namespace ragcore_py {
using namespace ragcore;

namespace {

ScoringParams make_params(const std::string& method, double k1, double b, double delta, bool sublinear_tf,
                          bool smooth_idf) {
  ScoringParams p;
  p.scorer = scorer_from_name(method);
  p.k1 = k1;
  p.b = b;
  p.delta = delta;
  p.sublinear_tf = sublinear_tf;
  p.smooth_idf = smooth_idf;
  return p;
}

std::vector<std::string_view> str_list(const py::sequence& seq, std::vector<py::object>& hold, const char* what) {
  std::vector<std::string_view> out(py::len(seq));
  for (size_t i = 0; i < out.size(); ++i) {
    PyObject* o = PySequence_Fast_GET_ITEM(seq.ptr(), i);
    RAGCORE_CHECK_TYPE(utf8_view(o, out[i], hold),
                       what << " " << i << " is " << type_name(o) << ", expected str");
  }
  return out;
}

// A list or tuple, as a "fast" sequence.
py::sequence fast_seq(py::handle h, const char* what) {
  RAGCORE_CHECK_TYPE(PyList_Check(h.ptr()) || PyTuple_Check(h.ptr()),
                     what << " must be a list, got " << type_name(h.ptr()));
  return py::reinterpret_borrow<py::sequence>(h);
}

const uint8_t* mask_ptr(const py::object& mask, size_t n_docs, py::array& keep) {
  if (mask.is_none()) return nullptr;
  keep = py::array::ensure(mask);
  RAGCORE_CHECK_TYPE(keep && keep.itemsize() == 1 && (keep.dtype().kind() == 'b' || keep.dtype().kind() == 'u'),
                     "filter mask must be a bool or uint8 array");
  RAGCORE_CHECK(keep.ndim() == 1 && static_cast<size_t>(keep.shape(0)) == n_docs,
                "filter mask must have shape (" << n_docs << ",), got ndim " << keep.ndim()
                                                << (keep.ndim() ? " and length " + std::to_string(keep.shape(0)) : ""));
  RAGCORE_CHECK(keep.flags() & py::array::c_style, "filter mask must be C-contiguous");
  return static_cast<const uint8_t*>(keep.data());
}

// A 1-d contiguous array of the index (its dtype checked; its length and content are checked by the
// core's validation), kept alive in `keep`.
template <class T, class Elem = T>
ArrayRef<Elem> array_ref(const py::dict& arrays, const char* name, py::list& keep) {
  RAGCORE_CHECK(arrays.contains(name), "index array '" << name << "' is missing");
  py::array a = arrays[name];
  const bool dtype_ok = a.itemsize() == sizeof(T) && py::dtype::of<T>().kind() == a.dtype().kind();
  RAGCORE_CHECK_TYPE(dtype_ok,
                     "index array '" << name << "' has dtype " << std::string(py::str(a.dtype())) << ", expected "
                                     << std::string(py::str(py::dtype::of<T>())));
  RAGCORE_CHECK(a.ndim() == 1 && (a.flags() & py::array::c_style),
                "index array '" << name << "' must be 1-d and contiguous");
  keep.append(a);
  return {static_cast<const Elem*>(a.data()), static_cast<size_t>(a.shape(0))};
}

SparseArraysRef arrays_ref(const py::dict& arrays, py::list& keep) {
  SparseArraysRef a;
  a.term_offsets = array_ref<int64_t>(arrays, "term_offsets", keep);
  a.post_docs = array_ref<uint32_t>(arrays, "post_docs", keep);
  a.post_weights = array_ref<float>(arrays, "post_weights", keep);
  a.term_idf = array_ref<float>(arrays, "term_idf", keep);
  a.term_const = array_ref<float>(arrays, "term_const", keep);
  a.term_data = array_ref<uint8_t, char>(arrays, "term_data", keep);
  a.term_str_offsets = array_ref<int64_t>(arrays, "term_str_offsets", keep);
  a.surface_data = array_ref<uint8_t, char>(arrays, "surface_data", keep);
  a.surface_offsets = array_ref<int64_t>(arrays, "surface_offsets", keep);
  a.surface_term = array_ref<int32_t>(arrays, "surface_term", keep);
  return a;
}

py::list str_list_out(const std::vector<std::string>& words) {
  py::list out(words.size());
  for (size_t i = 0; i < words.size(); ++i) out[i] = to_str(words[i]);
  return out;
}

}  // namespace

void bind_sparse(py::module_& m, py::module_& testing) {
  py::class_<SparseBuilder>(m, "SparseBuilder")
      .def(py::init([](std::shared_ptr<Analyzer> a, bool stemming) {
             return std::make_unique<SparseBuilder>(std::move(a), stemming);
           }),
           py::arg("analyzer"), py::arg("stemming"))
      .def(
          "add_batch",
          [](SparseBuilder& b, py::handle batch, size_t offset, py::handle threads_obj) {
            const int threads = threads_arg(threads_obj);
            py::sequence seq = fast_seq(batch, "batch");
            const size_t n = py::len(seq);
            std::vector<DocInput> docs(n);
            std::vector<py::object> hold;
            for (size_t i = 0; i < n; ++i) {
              PyObject* o = PySequence_Fast_GET_ITEM(seq.ptr(), i);
              if (utf8_view(o, docs[i].text, hold)) continue;
              RAGCORE_CHECK_TYPE(PyList_Check(o) || PyTuple_Check(o),
                                 "document " << offset + i << " is " << type_name(o)
                                             << ", expected str or a list of str tokens");
              py::sequence toks = py::reinterpret_borrow<py::sequence>(o);
              hold.push_back(toks);  // (its tokens are held one by one as they are viewed)
              docs[i].pretokenized = true;
              docs[i].tokens.resize(py::len(toks));
              for (size_t j = 0; j < docs[i].tokens.size(); ++j) {
                PyObject* t = PySequence_Fast_GET_ITEM(toks.ptr(), j);
                RAGCORE_CHECK_TYPE(PyUnicode_Check(t) && utf8_view(t, docs[i].tokens[j], hold),
                                   "token " << j << " of document " << offset + i << " is " << type_name(t)
                                            << ", expected str");
              }
            }
            py::gil_scoped_release nogil;
            b.add_batch(docs, threads);
          },
          py::arg("batch"), py::arg("offset"), py::arg("threads"))
      .def("pending_words",
           [](const SparseBuilder& b) {
             auto w = b.pending_words();
             py::list out(w.size());
             for (size_t i = 0; i < w.size(); ++i) out[i] = to_str(w[i]);
             return out;
           })
      .def("resolve_pending",
           [](SparseBuilder& b, py::handle stems) {
             std::vector<py::object> hold;
             auto v = str_list(fast_seq(stems, "stems"), hold, "stem");
             b.resolve_pending(v);
           })
      .def("commit_batch",
           [](SparseBuilder& b, py::handle threads_obj) {
             const int threads = threads_arg(threads_obj);
             py::gil_scoped_release nogil;
             b.commit_batch(threads);
           })
      .def_property_readonly("n_docs", &SparseBuilder::n_docs)
      .def(
          "finish",
          [](SparseBuilder& b, const std::string& method, double k1, double bb, double delta, bool sublinear_tf,
             bool smooth_idf, py::handle threads_obj) {
            const int threads = threads_arg(threads_obj);
            ScoringParams p = make_params(method, k1, bb, delta, sublinear_tf, smooth_idf);
            SparseArrays a;
            {
              py::gil_scoped_release nogil;
              a = b.finish(p, threads);
            }
            py::dict d;
            d["term_offsets"] = to_numpy(std::move(a.term_offsets));
            d["post_docs"] = to_numpy(std::move(a.post_docs));
            d["post_weights"] = to_numpy(std::move(a.post_weights));
            d["term_idf"] = to_numpy(std::move(a.term_idf));
            d["term_const"] = to_numpy(std::move(a.term_const));
            d["term_data"] = to_numpy<char, uint8_t>(std::move(a.term_data));
            d["term_str_offsets"] = to_numpy(std::move(a.term_str_offsets));
            d["surface_data"] = to_numpy<char, uint8_t>(std::move(a.surface_data));
            d["surface_offsets"] = to_numpy(std::move(a.surface_offsets));
            d["surface_term"] = to_numpy(std::move(a.surface_term));
            return d;
          },
          py::arg("method"), py::arg("k1"), py::arg("b"), py::arg("delta"), py::arg("sublinear_tf"),
          py::arg("smooth_idf"), py::arg("threads"));

  testing.def(
      "validate_sparse_arrays",
      [](const py::dict& arrays, size_t n_docs, const std::string& method, py::handle threads_obj) {
        const int threads = threads_arg(threads_obj);
        const Scorer scorer = scorer_from_name(method);
        py::list keep;
        const SparseArraysRef a = arrays_ref(arrays, keep);
        std::vector<float> term_max;
        {
          py::gil_scoped_release nogil;
          term_max = validate_sparse_arrays(a, n_docs, scorer, threads);
        }
        return to_numpy(std::move(term_max));
      },
      py::arg("arrays"), py::arg("n_docs"), py::arg("method"), py::arg("threads"),
      "The validation SparseIndex runs on construction, alone (benchmarks): raises ValueError 'corrupt index: ...'; "
      "returns each term's largest impact.");

  py::class_<SparseIndex, std::shared_ptr<SparseIndex>>(m, "SparseIndex")
      .def(py::init([](const py::dict& arrays, size_t n_docs, const std::string& method, double k1, double b, double delta,
                       bool sublinear_tf, bool smooth_idf, std::shared_ptr<Analyzer> analyzer, bool stemming) {
             ScoringParams p = make_params(method, k1, b, delta, sublinear_tf, smooth_idf);
             py::list keep;
             const SparseArraysRef a = arrays_ref(arrays, keep);
             // keep the arrays alive as long as the index; released with the GIL held
             auto* holder = new py::object(keep);
             std::shared_ptr<void> keepalive(holder, [](void* x) {
               py::gil_scoped_acquire gil;
               delete static_cast<py::object*>(x);
             });
             std::shared_ptr<SparseIndex> idx;
             {
               py::gil_scoped_release nogil;  // the arrays are validated (in parallel) without the GIL
               idx = std::make_shared<SparseIndex>(a, n_docs, p, std::move(analyzer), stemming, keepalive);
             }
             return idx;
           }),
           py::arg("arrays"), py::arg("n_docs"), py::arg("method"), py::arg("k1"), py::arg("b"), py::arg("delta"),
           py::arg("sublinear_tf"), py::arg("smooth_idf"), py::arg("analyzer"), py::arg("stemming"))
      .def_property_readonly("n_docs", &SparseIndex::n_docs)
      .def_property_readonly("n_terms", &SparseIndex::n_terms)
      .def(
          "search_text",
          [](const SparseIndex& idx, py::handle queries, size_t k, const py::object& mask,
             py::handle threads_obj) -> py::object {
            const int threads = threads_arg(threads_obj);
            std::vector<py::object> hold;
            auto texts = str_list(fast_seq(queries, "queries"), hold, "query");
            py::array keep;
            const uint8_t* mp = mask_ptr(mask, idx.n_docs(), keep);
            RAGCORE_CHECK(k >= 1, "k must be >= 1, got " << k);
            py::array_t<int64_t> indices({texts.size(), k});
            py::array_t<float> scores({texts.size(), k});
            int64_t* ip = indices.mutable_data();
            float* sp = scores.mutable_data();
            std::vector<std::string> missing;
            {
              py::gil_scoped_release nogil;
              missing = idx.search_text(texts, k, mp, threads, ip, sp);
            }
            if (!missing.empty()) return str_list_out(missing);
            return py::make_tuple(indices, scores);
          },
          py::arg("queries"), py::arg("k"), py::arg("mask"), py::arg("threads"),
          "Top-k of text queries -> (indices, scores); or, for a stemming index, the list of words to stem "
          "first (add_surface_words) when some are new.")
      .def(
          "search_tokens",
          [](const SparseIndex& idx, py::handle queries, size_t k, const py::object& mask, py::handle threads_obj) {
            const int threads = threads_arg(threads_obj);
            std::vector<py::object> hold;
            py::sequence seq = fast_seq(queries, "queries");
            std::vector<std::vector<std::string_view>> qs(py::len(seq));
            for (size_t i = 0; i < qs.size(); ++i) {
              PyObject* o = PySequence_Fast_GET_ITEM(seq.ptr(), i);
              RAGCORE_CHECK_TYPE(PyList_Check(o) || PyTuple_Check(o),
                                 "query " << i << " is " << type_name(o) << ", expected a list of str tokens");
              py::sequence toks = py::reinterpret_borrow<py::sequence>(o);
              hold.push_back(toks);  // (its tokens are held by str_list)
              qs[i] = str_list(toks, hold, "token");
            }
            py::array keep;
            const uint8_t* mp = mask_ptr(mask, idx.n_docs(), keep);
            RAGCORE_CHECK(k >= 1, "k must be >= 1, got " << k);
            py::array_t<int64_t> indices({qs.size(), k});
            py::array_t<float> scores({qs.size(), k});
            int64_t* ip = indices.mutable_data();
            float* sp = scores.mutable_data();
            {
              py::gil_scoped_release nogil;
              idx.search_tokens(qs, k, mp, threads, ip, sp);
            }
            return py::make_tuple(indices, scores);
          },
          py::arg("queries"), py::arg("k"), py::arg("mask"), py::arg("threads"))
      .def(
          "scores_text",
          [](const SparseIndex& idx, py::handle text) -> py::object {
            std::vector<py::object> hold;
            std::string_view v;
            RAGCORE_CHECK_TYPE(utf8_view(text.ptr(), v, hold), "query must be str, got " << type_name(text.ptr()));
            py::array_t<float> out(idx.n_docs());
            float* op = out.mutable_data();
            std::vector<std::string> missing;
            {
              py::gil_scoped_release nogil;
              missing = idx.dense_scores_text(v, op);
            }
            if (!missing.empty()) return str_list_out(missing);
            return std::move(out);
          },
          py::arg("text"), "Scores of every document for one text query (or the words to stem first).")
      .def(
          "scores_tokens",
          [](const SparseIndex& idx, py::handle tokens) {
            std::vector<py::object> hold;
            auto toks = str_list(fast_seq(tokens, "query"), hold, "token");
            py::array_t<float> out(idx.n_docs());
            float* op = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              idx.dense_scores_tokens(toks, op);
            }
            return out;
          },
          py::arg("tokens"))
      .def("add_surface_words",
           [](SparseIndex& idx, py::handle words, py::handle stems) {
             std::vector<py::object> hold;
             auto w = str_list(fast_seq(words, "words"), hold, "word");
             auto s = str_list(fast_seq(stems, "stems"), hold, "stem");
             idx.add_surface_words(w, s);
           })
      .def("term", [](const SparseIndex& idx, size_t t) {
        RAGCORE_CHECK_INDEX(t < idx.n_terms(), "term id " << t << " out of range [0, " << idx.n_terms() << ")");
        return to_str(idx.term(t));
      });
}

}  // namespace ragcore_py
