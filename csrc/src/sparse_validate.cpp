// One validation pass over the arrays of a sparse index, run on every construction (after index()
// and on every load, whether or not checksums are verified): what search reads must be in range
// and what its pruning assumes must hold, so that a corrupt or crafted file raises ValueError
// instead of crashing or ranking wrongly. The hot loops are branch-free (a flag accumulates the
// checks; the offending element is looked up only once a check failed).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "ragcore/parallel.hpp"
#include "ragcore/sparse.hpp"

namespace ragcore {

#define RAGCORE_CORRUPT(cond, msg) RAGCORE_CHECK(cond, "corrupt index: " << msg)

namespace {

// off (len >= 1): off[0] == 0, never decreasing, off[len - 1] == data_len.
void check_offsets(const char* name, ArrayRef<int64_t> off, size_t data_len, const char* data_name) {
  RAGCORE_CORRUPT(off.size >= 1, name << " is empty, expected at least 1 element");
  const int64_t* o = off.data;
  RAGCORE_CORRUPT(o[0] == 0, name << "[0] is " << o[0] << ", expected 0");
  bool bad = false;
  for (size_t i = 1; i < off.size; ++i) bad |= o[i] < o[i - 1];
  if (bad) {
    for (size_t i = 1; i < off.size; ++i)
      RAGCORE_CORRUPT(o[i] >= o[i - 1], name << "[" << i << "] is " << o[i] << ", less than " << name << "[" << i - 1
                                             << "] (" << o[i - 1] << "), expected non-decreasing offsets");
  }
  RAGCORE_CORRUPT(o[off.size - 1] == static_cast<int64_t>(data_len),
                  name << " ends at " << o[off.size - 1] << ", expected " << data_len << " (the length of "
                       << data_name << ")");
}

void check_length(const char* name, size_t got, size_t expected, const char* why) {
  RAGCORE_CORRUPT(got == expected, name << " has " << got << " elements, expected " << expected << " (" << why << ")");
}

inline bool finite_nonneg(float w) { return (w >= 0.0f) & (w <= FLT_MAX) & !std::signbit(w); }  // false for NaN

// Postings of terms overlapping [pb, pe): docs < n_docs, strictly increasing within a term, weights
// finite and >= 0; the largest weight of each term entirely inside the range goes to term_max, those
// of the (at most two) terms cut by the range's ends to `partial`. Returns false when a check failed.
bool check_postings(const int64_t* off, size_t n_terms, const uint32_t* docs, const float* pw, size_t pb,
                    size_t pe, uint32_t n_docs, float* term_max, std::vector<std::pair<size_t, float>>& partial) {
  // the term holding posting pb: the last t with off[t] <= pb
  size_t t = static_cast<size_t>(std::upper_bound(off, off + n_terms + 1, static_cast<int64_t>(pb)) - off) - 1;
  uint32_t ok = 1;
  for (; t < n_terms && static_cast<size_t>(off[t]) < pe; ++t) {
    const size_t tb = static_cast<size_t>(off[t]), te = static_cast<size_t>(off[t + 1]);
    const size_t b = std::max(tb, pb), e = std::min(te, pe);
    // on the bits: a float is finite and >= +0 iff its bits are <= 0x7F7FFFFF (as uint32), and those
    // order as the floats do; one unsigned compare per check, one pass over each array
    uint32_t mx = 0;
    if (b < e) {
      uint32_t w;
      std::memcpy(&w, pw + b, 4);
      ok &= static_cast<uint32_t>(docs[b] < n_docs) & static_cast<uint32_t>(w <= 0x7F7FFFFFu) &
            static_cast<uint32_t>(b == tb || docs[b] > docs[b - 1]);
      mx = w;
    }
    for (size_t p = b + 1; p < e; ++p) {
      uint32_t w;
      std::memcpy(&w, pw + p, 4);
      ok &= static_cast<uint32_t>(docs[p] < n_docs) & static_cast<uint32_t>(docs[p] > docs[p - 1]) &
            static_cast<uint32_t>(w <= 0x7F7FFFFFu);
      mx = w > mx ? w : mx;
    }
    float m;
    std::memcpy(&m, &mx, 4);
    if (b == tb && e == te) {
      term_max[t] = m;
    } else {
      partial.emplace_back(t, m);
    }
  }
  return ok != 0;
}

// The first bad posting, for the message (only called once a check failed).
[[noreturn]] void report_postings(const int64_t* off, size_t n_terms, const uint32_t* docs, const float* pw,
                                  uint32_t n_docs) {
  for (size_t t = 0; t < n_terms; ++t) {
    for (int64_t p = off[t]; p < off[t + 1]; ++p) {
      RAGCORE_CORRUPT(docs[p] < n_docs, "post_docs[" << p << "] is " << docs[p] << ", expected < n_docs (" << n_docs
                                                     << ")");
      RAGCORE_CORRUPT(finite_nonneg(pw[p]),
                      "post_weights[" << p << "] is " << pw[p] << ", expected a finite value >= 0");
      RAGCORE_CORRUPT(p == off[t] || docs[p] > docs[p - 1],
                      "post_docs[" << p << "] is " << docs[p] << " after " << docs[p - 1] << " in the postings of term "
                                   << t << ", expected strictly increasing documents");
    }
  }
  RAGCORE_ASSERT(false);
}

void check_term_floats(const char* name, ArrayRef<float> a, bool nonneg) {
  bool ok = true;
  for (size_t i = 0; i < a.size; ++i) ok &= std::isfinite(a.data[i]) & (!nonneg | (a.data[i] >= 0.0f));
  if (ok) return;
  for (size_t i = 0; i < a.size; ++i)
    RAGCORE_CORRUPT(std::isfinite(a.data[i]) && (!nonneg || a.data[i] >= 0.0f),
                    name << "[" << i << "] is " << a.data[i] << ", expected a finite value" << (nonneg ? " >= 0" : ""));
}

}  // namespace

std::vector<float> validate_sparse_arrays(const SparseArraysRef& a, size_t n_docs, Scorer scorer, int threads) {
  RAGCORE_CORRUPT(n_docs < static_cast<size_t>(UINT32_MAX), "n_docs is " << n_docs << ", expected < 2^32 - 1");
  // sizes first: nothing is read before the length of what holds it is known
  RAGCORE_CORRUPT(a.term_offsets.size >= 1, "term_offsets is empty, expected n_terms + 1 >= 1 elements");
  const size_t n_terms = a.term_offsets.size - 1;
  RAGCORE_CORRUPT(n_terms < static_cast<size_t>(INT32_MAX), "term_offsets has " << a.term_offsets.size
                                                                << " elements, expected at most 2^31 - 1");
  check_offsets("term_offsets", a.term_offsets, a.post_docs.size, "post_docs");
  check_length("post_weights", a.post_weights.size, a.post_docs.size, "one per posting, as post_docs");
  const bool tfidf = scorer == Scorer::tfidf;
  const bool has_const = scorer == Scorer::bm25l || scorer == Scorer::bm25plus;
  check_length("term_idf", a.term_idf.size, tfidf ? n_terms : 0, tfidf ? "one per term" : "unused by this scorer");
  check_length("term_const", a.term_const.size, has_const ? n_terms : 0,
               has_const ? "one per term" : "unused by this scorer");
  check_length("term_str_offsets", a.term_str_offsets.size, n_terms + 1, "n_terms + 1, as term_offsets");
  check_offsets("term_str_offsets", a.term_str_offsets, a.term_data.size, "term_data");
  RAGCORE_CORRUPT(a.surface_offsets.size >= 1, "surface_offsets is empty, expected n_surface + 1 >= 1 elements");
  check_length("surface_term", a.surface_term.size, a.surface_offsets.size - 1, "n_surface, one per surface word");
  check_offsets("surface_offsets", a.surface_offsets, a.surface_data.size, "surface_data");
  // values
  check_term_floats("term_idf", a.term_idf, true);  // query weights: MaxScore's bounds need them >= 0
  check_term_floats("term_const", a.term_const, false);
  {
    const int32_t* st = a.surface_term.data;
    const int64_t nt = static_cast<int64_t>(n_terms);
    bool ok = true;
    for (size_t i = 0; i < a.surface_term.size; ++i) ok &= (st[i] >= -1) & (st[i] < nt);
    if (!ok)
      for (size_t i = 0; i < a.surface_term.size; ++i)
        RAGCORE_CORRUPT(st[i] >= -1 && st[i] < nt, "surface_term[" << i << "] is " << st[i]
                                                                   << ", expected -1 or a term id < " << n_terms);
  }
  // the postings: split evenly over the threads by posting (one term may hold most of them)
  std::vector<float> term_max(n_terms, 0.0f);
  const size_t P = a.post_docs.size;
  constexpr size_t kMinPostingsPerPart = size_t{1} << 20;
  const size_t parts = std::max<size_t>(1, std::min<size_t>(static_cast<size_t>(std::max(threads, 1)),
                                                             P / kMinPostingsPerPart));
  std::vector<std::vector<std::pair<size_t, float>>> partial(parts);
  std::vector<uint8_t> ok(parts, 1);
  const int64_t* off = a.term_offsets.data;
  parallel_for(parts, static_cast<int>(parts), 1, [&](int, size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      ok[i] = check_postings(off, n_terms, a.post_docs.data, a.post_weights.data, P * i / parts, P * (i + 1) / parts,
                             static_cast<uint32_t>(n_docs), term_max.data(), partial[i]);
  });
  if (std::find(ok.begin(), ok.end(), 0) != ok.end())
    report_postings(off, n_terms, a.post_docs.data, a.post_weights.data, static_cast<uint32_t>(n_docs));
  for (const auto& part : partial)
    for (const auto& [t, m] : part) term_max[t] = std::max(term_max[t], m);
  return term_max;
}

}  // namespace ragcore
