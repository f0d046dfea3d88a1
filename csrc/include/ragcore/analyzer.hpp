// The analyzer: UTF-8 text -> tokens. By default it yields exactly the tokens of Python's
// re.findall(r"(?u)\b\w\w+\b", text.lower()): maximal runs of word characters (str.isalnum() or "_")
// of at least two code points, after Python's full lowercase mapping (Final_Sigma included).
// Invalid UTF-8 behaves as bytes.decode("utf-8", "replace"): invalid sequences separate tokens.
// Stopwords are dropped here; stemming happens once per distinct word, outside (see sparse.hpp).
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "ragcore/string_map.hpp"
#include "ragcore/unicode.hpp"

namespace ragcore {

namespace detail {
struct AsciiWordTable {
  bool v[128];
  constexpr AsciiWordTable() : v() {
    for (int c = 0; c < 128; ++c)
      v[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }
};
inline constexpr AsciiWordTable kAsciiWord{};
}  // namespace detail

struct AnalyzerOptions {
  bool lowercase = true;
  int min_token_len = 2;  ///< in code points
};

class Analyzer {
 public:
  Analyzer(AnalyzerOptions opt, const std::vector<std::string>& stopwords) : opt_(opt) {
    RAGCORE_CHECK(opt.min_token_len >= 1, "min_token_len must be >= 1, got " << opt.min_token_len);
    for (const auto& w : stopwords) stop_.insert(w);
  }

  const AnalyzerOptions& options() const { return opt_; }
  size_t n_stopwords() const { return stop_.size(); }

  /// Call emit(std::string_view token) for every token of text[0, n), in order. `buf` is scratch
  /// space; the view passed to emit is valid only during the call.
  template <class Emit>
  void tokenize(const char* text, size_t n, std::string& buf, Emit&& emit) const {
    const auto* s = reinterpret_cast<const unsigned char*>(text);
    buf.clear();
    int len = 0;
    auto flush = [&]() {
      if (len >= opt_.min_token_len && (stop_.size() == 0 || stop_.find(buf) < 0)) emit(std::string_view(buf));
      buf.clear();
      len = 0;
    };
    auto push = [&](uint32_t cp) {
      if (unicode::is_word(cp)) {
        unicode::append_utf8(buf, cp);
        ++len;
      } else if (len) {
        flush();
      }
    };
    size_t i = 0;
    while (i < n) {
      const unsigned char c = s[i];
      if (c < 0x80) {  // ASCII fast path
        if (detail::kAsciiWord.v[c]) {
          buf.push_back(static_cast<char>((opt_.lowercase && c >= 'A' && c <= 'Z') ? c + 32 : c));
          ++len;
        } else if (len) {
          flush();
        }
        ++i;
        continue;
      }
      const size_t start = i;
      const uint32_t cp = unicode::decode(s, n, i);
      if (cp == unicode::kInvalid) {
        if (len) flush();
        continue;
      }
      if (!opt_.lowercase) {
        push(cp);
      } else if (cp == 0x3A3) {
        push(unicode::final_sigma(s, n, start, i) ? 0x3C2 : 0x3C3);
      } else {
        uint32_t low[2];
        const int m = unicode::lower(cp, low);
        for (int j = 0; j < m; ++j) push(low[j]);
      }
    }
    if (len) flush();
  }

 private:

  AnalyzerOptions opt_;
  StringMap stop_;
};

}  // namespace ragcore
