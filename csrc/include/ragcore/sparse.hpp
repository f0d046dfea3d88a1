// Sparse retrieval: an inverted index of precomputed impacts (BM25 variants, TF-IDF), built from
// analysed or pre-tokenized documents, searched by exhaustive term-at-a-time accumulation and the
// shared top-k selector.
//
// Stemming is applied by the caller (Python, PyStemmer) once per distinct *surface word*: when an
// index stems, the builder maps every analysed word to a surface id, hands the new surface words
// out (pending_words), and takes their stems back (resolve_pending) before postings are built.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "ragcore/analyzer.hpp"
#include "ragcore/string_map.hpp"
#include "ragcore/topk.hpp"

namespace ragcore {

enum class Scorer : int { robertson = 0, lucene = 1, atire = 2, bm25l = 3, bm25plus = 4, tfidf = 5 };

struct ScoringParams {
  Scorer scorer = Scorer::lucene;
  double k1 = 1.5, b = 0.75, delta = 0.5;  ///< BM25 family
  bool sublinear_tf = false, smooth_idf = true;  ///< TF-IDF
};

/// One document of a batch: analysed text (UTF-8 bytes) or a list of tokens taken as-is.
struct DocInput {
  std::string_view text;
  std::vector<std::string_view> tokens;
  bool pretokenized = false;
};

/// The arrays an index is made of (owned; they become numpy arrays in the bindings).
struct SparseArrays {
  std::vector<int64_t> term_offsets;  ///< (n_terms + 1,) postings of term t: [off[t], off[t+1])
  std::vector<uint32_t> post_docs;    ///< (n_postings,) ascending doc index within a term
  std::vector<float> post_weights;    ///< (n_postings,) impact of the term in the document
  std::vector<float> term_idf;        ///< (n_terms,) idf (query weighting), TF-IDF only; else empty
  std::vector<float> term_const;      ///< (n_terms,) score every document gets from the term, bm25l / bm25+ only; else empty
  size_t n_docs = 0;
  std::vector<char> term_data;        ///< term strings, arena
  std::vector<int64_t> term_str_offsets;     ///< (n_terms + 1,)
  std::vector<char> surface_data;            ///< surface words (stemming indexes only), arena
  std::vector<int64_t> surface_offsets;      ///< (n_surface + 1,)
  std::vector<int32_t> surface_term;         ///< (n_surface,) term id of each surface word, -1 none
};

class SparseBuilder {
 public:
  SparseBuilder(std::shared_ptr<const Analyzer> analyzer, bool stemming);

  /// Analyse a batch (parallel over documents). With stemming, new surface words become pending.
  void add_batch(const std::vector<DocInput>& docs, int n_threads);
  /// Surface words seen for the first time since the last resolve_pending (stemming only).
  std::vector<std::string_view> pending_words() const;
  /// Stems of pending_words(), in order (an empty stem drops the word).
  void resolve_pending(const std::vector<std::string_view>& stems);
  /// Turn the batch into per-document term frequencies (needs pending words resolved).
  void commit_batch(int n_threads);

  size_t n_docs() const { return doc_len_.size(); }
  /// Build the postings and impacts. The builder is consumed.
  SparseArrays finish(const ScoringParams& params, int n_threads);

 private:
  std::shared_ptr<const Analyzer> analyzer_;
  bool stemming_;
  StringMap surface_, terms_;
  std::vector<int32_t> surface_term_;
  size_t resolved_ = 0;  // surface ids below this have a term
  // the batch in flight: per document, a list of ids (surface ids for analysed text with stemming,
  // term ids otherwise) with a flag per document saying which
  std::vector<uint64_t> batch_offsets_;
  std::vector<int32_t> batch_ids_;
  std::vector<uint8_t> batch_is_surface_;
  // committed forward index
  std::vector<uint64_t> fwd_offsets_{0};
  std::vector<uint32_t> fwd_terms_, fwd_tf_;
  std::vector<uint32_t> doc_len_;
};

/// A borrowed array and its length.
template <class T>
struct ArrayRef {
  const T* data = nullptr;
  size_t size = 0;
};

/// The arrays of an index as SparseArrays describes them, borrowed (from a builder, or mapped from a
/// file nobody checked): every length is given, nothing is trusted.
struct SparseArraysRef {
  ArrayRef<int64_t> term_offsets;
  ArrayRef<uint32_t> post_docs;
  ArrayRef<float> post_weights;
  ArrayRef<float> term_idf, term_const;  ///< (n_terms,) where the scorer uses them, else empty
  ArrayRef<char> term_data;
  ArrayRef<int64_t> term_str_offsets;
  ArrayRef<char> surface_data;
  ArrayRef<int64_t> surface_offsets;
  ArrayRef<int32_t> surface_term;
};

/// Check every structural invariant that search relies on and return each term's largest impact
/// (n_terms,) (the MaxScore bounds). Raises value_error "corrupt index: <array> ..." naming the
/// array, the position and the value found against the one expected:
///  - term_offsets, term_str_offsets, surface_offsets: at least one element, the first 0, never
///    decreasing, the last equal to the length of what they index (post_docs / post_weights,
///    term_data, surface_data); term_str_offsets has n_terms + 1 elements, n_terms < 2^31 - 1;
///  - post_weights as long as post_docs; within each term, post_docs strictly increasing (the cursor
///    gallops) and < n_docs; post_weights finite and >= +0 (MaxScore adds non-negative impacts; -0 is refused too);
///  - term_idf (TF-IDF) n_terms finite values >= 0, term_const (bm25l, bm25+) n_terms finite values,
///    both empty for the other scorers;
///  - surface_term: one per surface word, each -1 or a term id < n_terms; n_docs < 2^32 - 1.
/// (Term and surface strings must also be unique: StringMap checks that as it rebuilds the maps.)
/// Branch-free loops over the postings, split over up to `threads` threads.
std::vector<float> validate_sparse_arrays(const SparseArraysRef& a, size_t n_docs, Scorer scorer, int threads);

/// Read-only view of an index's arrays (from a builder or mmapped from disk) plus its vocabulary.
class SparseIndex {
 public:
  struct View {
    size_t n_docs = 0, n_terms = 0;
    /// 1 + the highest document id with a posting (0 without postings): the documents a search can
    /// return. Search scratch (accumulator, bitmaps) and blocks span these only, so documents without
    /// any term (or an n_docs inflated in an edited manifest) cost a search nothing.
    size_t span_docs = 0;
    const int64_t* term_offsets = nullptr;
    const uint32_t* post_docs = nullptr;
    const float* post_weights = nullptr;
    const float* term_idf = nullptr;    ///< (n_terms,) or nullptr when the scorer does not need it
    const float* term_const = nullptr;  ///< (n_terms,) or nullptr
  };

  /// An index over borrowed arrays, validated first (validate_sparse_arrays: a corrupt array raises
  /// value_error, never a crash); `keepalive` owns them for the index's lifetime.
  SparseIndex(const SparseArraysRef& arrays, size_t n_docs, ScoringParams params,
              std::shared_ptr<const Analyzer> analyzer, bool stemming, std::shared_ptr<void> keepalive);

  size_t n_docs() const { return v_.n_docs; }
  size_t n_terms() const { return v_.n_terms; }
  bool stemming() const { return stemming_; }
  const ScoringParams& params() const { return params_; }
  const Analyzer& analyzer() const { return *analyzer_; }

  /// Queries as term ids with weights, duplicates merged: CSR by query.
  struct Queries {
    std::vector<int64_t> offsets{0};
    std::vector<int32_t> terms;
    std::vector<float> weights;
    std::vector<float> constants;  ///< per query: added to the score of every matching document
  };

  /// Top-k of text queries (analysed with the index's analyzer), in parallel over queries:
  /// indices (n_queries, k) and scores (n_queries, k), row-major, best first, -1 / -inf padding.
  /// mask: (n_docs,) bytes, nonzero = allowed, or nullptr. With stemming, words neither in the
  /// vocabulary nor in the query cache are returned (unique, sorted) and the outputs of the queries
  /// that contain them are left unwritten: stem them, add_surface_words, and search again.
  std::vector<std::string> search_text(const std::vector<std::string_view>& texts, size_t k, const uint8_t* mask,
                                       int n_threads, int64_t* indices, float* scores) const;
  /// Same for pre-tokenized queries: tokens are looked up as terms, as-is.
  void search_tokens(const std::vector<std::vector<std::string_view>>& queries, size_t k, const uint8_t* mask,
                     int n_threads, int64_t* indices, float* scores) const;
  /// Remember the stems of query words (stemming indexes); bounded cache.
  void add_surface_words(const std::vector<std::string_view>& words, const std::vector<std::string_view>& stems);

  /// Score of every document for one query: out (n_docs,); documents without any query term get
  /// the query's constant (non-zero for bm25l / bm25+ only). Impacts are added in the order
  /// search uses. The text form returns the words to stem first, as search_text does.
  std::vector<std::string> dense_scores_text(std::string_view text, float* out) const;
  void dense_scores_tokens(const std::vector<std::string_view>& tokens, float* out) const;

  std::string_view term(size_t id) const { return terms_.key(id); }

 private:
  void finish_query(std::vector<std::pair<int32_t, float>>& toks, Queries& out) const;
  bool prepare_one_text(std::string_view text, Queries& out, std::string& buf,
                        std::vector<std::pair<int32_t, float>>& toks, std::vector<std::string>* missing) const;
  void prepare_one_tokens(const std::vector<std::string_view>& tokens, Queries& out,
                          std::vector<std::pair<int32_t, float>>& toks) const;
  void dense_scores_prepared(const Queries& q, float* out) const;
  struct Scratch {
    std::vector<float> acc;        // (n_docs,) all zero between queries
    std::vector<uint64_t> seen;    // (ceil(n_docs / 64),) documents touched by the query, all zero between queries
    std::vector<uint64_t> seen2;   // (ceil(n_docs / 4096),) summary: which words of `seen` may be non-zero
    struct Term {
      float ub;  // weight * max impact: what the term can add to any document
      float w;
      int32_t t;
    };
    std::vector<Term> terms;
    std::vector<float> suffix;     // suffix sums of the terms' upper bounds
    std::vector<int64_t> cursor;   // per term: next posting to read
    TopK top2{1};                  // scratch copy of the running top-k
    Queries q;                     // the query being searched
    std::string buf;
    std::vector<std::pair<int32_t, float>> toks;
  };
  template <class Prepare>
  void run_queries(size_t nq, size_t k, const uint8_t* mask, int n_threads, int64_t* indices, float* scores,
                   Prepare&& prepare) const;
  /// Top-k of query i of q over documents [doc_begin, doc_end) (doc_begin at a block boundary).
  void search_one(const Queries& q, size_t i, size_t k, const uint8_t* mask, Scratch& s, TopK& top,
                  uint32_t doc_begin = 0, uint32_t doc_end = UINT32_MAX) const;
  std::unique_ptr<Scratch> acquire() const;
  void release(std::unique_ptr<Scratch> s) const;

  static View view_of(const SparseArraysRef& a, size_t n_docs, const ScoringParams& p);

  std::vector<float> term_max_;  // (n_terms,) largest impact of each term (MaxScore bounds); first:
                                 // computed by the validation, which runs before anything reads the arrays
  View v_;
  ScoringParams params_;
  std::shared_ptr<const Analyzer> analyzer_;
  StringMap terms_, surface_;
  std::vector<int32_t> surface_term_;
  bool stemming_;
  // query-word cache (stemming): words seen only in queries
  mutable std::shared_mutex cache_mutex_;
  StringMap qcache_;
  std::vector<int32_t> qcache_term_;
  std::shared_ptr<void> keepalive_;
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<Scratch>> pool_;
};

/// Name <-> enum for scorers ("robertson", "lucene", "atire", "bm25l", "bm25+", "tfidf").
Scorer scorer_from_name(const std::string& name);

}  // namespace ragcore
