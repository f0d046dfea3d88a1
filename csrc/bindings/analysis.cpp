// Bindings of the analyzer.
#include <pybind11/stl.h>

#include "common.hpp"
#include "ragcore/analyzer.hpp"

namespace ragcore_py {

void bind_analysis(py::module_& m) {
  using ragcore::Analyzer;
  py::class_<Analyzer, std::shared_ptr<Analyzer>>(m, "Analyzer")
      .def(py::init([](bool lowercase, int min_token_len, const std::vector<std::string>& stopwords) {
             ragcore::AnalyzerOptions o;
             o.lowercase = lowercase;
             o.min_token_len = min_token_len;
             return std::make_shared<Analyzer>(o, stopwords);
           }),
           py::arg("lowercase"), py::arg("min_token_len"), py::arg("stopwords"))
      .def(
          "tokenize",
          [](const Analyzer& a, py::handle text) {
            std::string_view v;
            std::vector<py::object> hold;
            RAGCORE_CHECK_TYPE(utf8_view(text.ptr(), v, hold),
                               "text must be str or bytes, got " << type_name(text.ptr()));
            std::string buf;
            std::vector<std::string> toks;
            {
              py::gil_scoped_release nogil;
              a.tokenize(v.data(), v.size(), buf, [&](std::string_view t) { toks.emplace_back(t); });
            }
            py::list out(toks.size());
            for (size_t i = 0; i < toks.size(); ++i) out[i] = to_str(toks[i]);
            return out;
          },
          py::arg("text"), "Tokens of one text (str or bytes), stopwords removed, not stemmed.");
}

}  // namespace ragcore_py
