// Sparse index construction and search. Formulas of the BM25 family follow bm25s (Lù 2024,
// "BM25S: Orders of magnitude faster lexical search via eager sparse scoring"), which names them
// after Robertson et al. (1994), Lucene (exact document lengths), ATIRE (Trotman et al. 2014),
// BM25L (Lv & Zhai 2011) and BM25+ (Lv & Zhai 2011). TF-IDF follows scikit-learn's TfidfVectorizer.
#include "ragcore/sparse.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ragcore/parallel.hpp"
#include "ragcore/topk.hpp"

namespace ragcore {

Scorer scorer_from_name(const std::string& name) {
  if (name == "robertson") return Scorer::robertson;
  if (name == "lucene") return Scorer::lucene;
  if (name == "atire") return Scorer::atire;
  if (name == "bm25l") return Scorer::bm25l;
  if (name == "bm25+" || name == "bm25plus") return Scorer::bm25plus;
  if (name == "tfidf") return Scorer::tfidf;
  RAGCORE_THROW_(value_error, "unknown scoring method '" << name
                                  << "'; expected one of robertson, lucene, atire, bm25l, bm25+");
}

// ---------------------------------------------------------------------------------------------
// Builder

SparseBuilder::SparseBuilder(std::shared_ptr<const Analyzer> analyzer, bool stemming)
    : analyzer_(std::move(analyzer)), stemming_(stemming) {
  RAGCORE_ASSERT(analyzer_);
}

namespace {
// What a worker produces for a chunk of documents: token ids looked up in the vocabulary as it was
// before the batch (read-only, so workers need no lock), and the words it did not know (misses),
// which the serial pass inserts in document order: ids never depend on the thread count.
struct ChunkTokens {
  std::vector<int32_t> ids;        // per token; -1 for a miss
  std::string miss_arena;          // the missed words, concatenated
  std::vector<uint32_t> miss_len;  // per miss
  std::vector<uint32_t> doc_ntok;  // per document of the chunk
};
constexpr size_t kDocChunk = 256;
}  // namespace

void SparseBuilder::add_batch(const std::vector<DocInput>& docs, int n_threads) {
  RAGCORE_ASSERT(batch_offsets_.empty());
  const size_t n = docs.size();
  const size_t n_chunks = (n + kDocChunk - 1) / kDocChunk;
  std::vector<ChunkTokens> chunks(n_chunks);
  const StringMap& text_map = stemming_ ? surface_ : terms_;
  // 1. analyse and look up in parallel (pre-tokenized documents are handled in the serial pass)
  parallel_for(n_chunks, n_threads, 1, [&](int, size_t cb, size_t ce) {
    std::string buf;
    for (size_t c = cb; c < ce; ++c) {
      ChunkTokens& ct = chunks[c];
      const size_t db = c * kDocChunk, de = std::min(n, db + kDocChunk);
      for (size_t d = db; d < de; ++d) {
        if (docs[d].pretokenized) {
          ct.doc_ntok.push_back(0);
          continue;
        }
        const size_t before = ct.ids.size();
        analyzer_->tokenize(docs[d].text.data(), docs[d].text.size(), buf, [&](std::string_view tok) {
          const int64_t id = text_map.find(tok);
          ct.ids.push_back(static_cast<int32_t>(id));
          if (id < 0) {
            ct.miss_arena.append(tok.data(), tok.size());
            ct.miss_len.push_back(static_cast<uint32_t>(tok.size()));
          }
        });
        ct.doc_ntok.push_back(static_cast<uint32_t>(ct.ids.size() - before));
      }
    }
  });
  // 2. serially, in document order: insert the misses, take pre-tokenized documents as-is
  StringMap& map = stemming_ ? surface_ : terms_;
  batch_offsets_.assign(1, 0);
  batch_ids_.clear();
  batch_is_surface_.assign(n, 0);
  for (size_t c = 0; c < n_chunks; ++c) {
    ChunkTokens& ct = chunks[c];
    size_t tok = 0, miss = 0, pos = 0;
    const size_t db = c * kDocChunk;
    for (size_t j = 0; j < ct.doc_ntok.size(); ++j) {
      const DocInput& doc = docs[db + j];
      if (doc.pretokenized) {
        for (std::string_view t : doc.tokens) batch_ids_.push_back(static_cast<int32_t>(terms_.insert(t).first));
      } else {
        batch_is_surface_[db + j] = stemming_ ? 1 : 0;
        for (uint32_t m = 0; m < ct.doc_ntok[j]; ++m, ++tok) {
          int32_t id = ct.ids[tok];
          if (id < 0) {
            const uint32_t len = ct.miss_len[miss++];
            id = static_cast<int32_t>(map.insert(std::string_view(ct.miss_arena.data() + pos, len)).first);
            pos += len;
          }
          batch_ids_.push_back(id);
        }
      }
      batch_offsets_.push_back(batch_ids_.size());
    }
  }
}

std::vector<std::string_view> SparseBuilder::pending_words() const {
  std::vector<std::string_view> out;
  for (size_t i = resolved_; i < surface_.size(); ++i) out.push_back(surface_.key(i));
  return out;
}

void SparseBuilder::resolve_pending(const std::vector<std::string_view>& stems) {
  RAGCORE_CHECK(stems.size() == surface_.size() - resolved_,
                "stemmer returned " << stems.size() << " stems for " << surface_.size() - resolved_ << " words");
  for (std::string_view s : stems) surface_term_.push_back(s.empty() ? -1 : static_cast<int32_t>(terms_.insert(s).first));
  resolved_ = surface_.size();
}

void SparseBuilder::commit_batch(int n_threads) {
  RAGCORE_CHECK(!stemming_ || resolved_ == surface_.size(), "pending words must be resolved before commit");
  const size_t n = batch_offsets_.empty() ? 0 : batch_offsets_.size() - 1;
  const size_t n_chunks = (n + kDocChunk - 1) / kDocChunk;
  struct Out {
    std::vector<uint32_t> terms, tf, len, ndist;
  };
  std::vector<Out> outs(n_chunks);
  parallel_for(n_chunks, n_threads, 1, [&](int, size_t cb, size_t ce) {
    std::vector<uint32_t> ids;
    for (size_t c = cb; c < ce; ++c) {
      Out& o = outs[c];
      const size_t db = c * kDocChunk, de = std::min(n, db + kDocChunk);
      for (size_t d = db; d < de; ++d) {
        ids.clear();
        for (uint64_t p = batch_offsets_[d]; p < batch_offsets_[d + 1]; ++p) {
          const int32_t id = batch_ids_[p];
          const int32_t t = batch_is_surface_[d] ? surface_term_[id] : id;
          if (t >= 0) ids.push_back(static_cast<uint32_t>(t));
        }
        std::sort(ids.begin(), ids.end());
        uint32_t distinct = 0;
        for (size_t i = 0; i < ids.size();) {
          size_t j = i + 1;
          while (j < ids.size() && ids[j] == ids[i]) ++j;
          o.terms.push_back(ids[i]);
          o.tf.push_back(static_cast<uint32_t>(j - i));
          ++distinct;
          i = j;
        }
        o.len.push_back(static_cast<uint32_t>(ids.size()));
        o.ndist.push_back(distinct);
      }
    }
  });
  for (Out& o : outs) {
    fwd_terms_.insert(fwd_terms_.end(), o.terms.begin(), o.terms.end());
    fwd_tf_.insert(fwd_tf_.end(), o.tf.begin(), o.tf.end());
    doc_len_.insert(doc_len_.end(), o.len.begin(), o.len.end());
    for (uint32_t nd : o.ndist) fwd_offsets_.push_back(fwd_offsets_.back() + nd);
  }
  RAGCORE_CHECK(doc_len_.size() < static_cast<size_t>(UINT32_MAX), "more than 2^32-1 documents");
  batch_offsets_.clear();
  batch_ids_.clear();
  batch_is_surface_.clear();
}

namespace {
struct Bm25Math {
  ScoringParams p;
  double n_docs, avgdl;
  double idf(double df) const {
    switch (p.scorer) {
      case Scorer::robertson: return std::log(std::max(1.0, (n_docs - df + 0.5) / (df + 0.5)));
      case Scorer::lucene: return std::log(1.0 + (n_docs - df + 0.5) / (df + 0.5));
      case Scorer::atire: return std::log(n_docs / df);
      case Scorer::bm25l: return std::log((n_docs + 1.0) / (df + 0.5));
      case Scorer::bm25plus: return std::log((n_docs + 1.0) / df);
      case Scorer::tfidf:
        return p.smooth_idf ? std::log((1.0 + n_docs) / (1.0 + df)) + 1.0 : std::log(n_docs / df) + 1.0;
    }
    return 0.0;
  }
  // term-frequency component of the BM25 family
  double tfc(double tf, double dl) const {
    const double norm = 1.0 - p.b + p.b * dl / avgdl;
    switch (p.scorer) {
      case Scorer::robertson:
      case Scorer::lucene: return tf / (p.k1 * norm + tf);
      case Scorer::atire: return tf * (p.k1 + 1.0) / (tf + p.k1 * norm);
      case Scorer::bm25l: {
        const double c = tf / norm;
        return (p.k1 + 1.0) * (c + p.delta) / (p.k1 + c + p.delta);
      }
      case Scorer::bm25plus: return (p.k1 + 1.0) * tf / (p.k1 * norm + tf) + p.delta;
      case Scorer::tfidf: return p.sublinear_tf ? 1.0 + std::log(tf) : tf;
    }
    return 0.0;
  }
  // what a document without the term gets from it (bm25l, bm25+; 0 otherwise)
  double nonoccurrence(double idf_t) const {
    if (p.scorer == Scorer::bm25l) return idf_t * (p.k1 + 1.0) * p.delta / (p.k1 + p.delta);
    if (p.scorer == Scorer::bm25plus) return idf_t * p.delta;
    return 0.0;
  }
};
}  // namespace

SparseArrays SparseBuilder::finish(const ScoringParams& params, int n_threads) {
  RAGCORE_ASSERT(batch_offsets_.empty());
  SparseArrays a;
  const size_t N = doc_len_.size(), T = terms_.size();
  // document frequencies -> offsets
  a.term_offsets.assign(T + 1, 0);
  for (uint32_t t : fwd_terms_) ++a.term_offsets[t + 1];
  for (size_t t = 0; t < T; ++t) a.term_offsets[t + 1] += a.term_offsets[t];
  const size_t P = fwd_terms_.size();
  a.post_docs.resize(P);
  std::vector<uint32_t> post_tf(P);
  {
    std::vector<int64_t> cursor(a.term_offsets.begin(), a.term_offsets.end() - 1);
    for (size_t d = 0; d < N; ++d) {
      for (uint64_t p = fwd_offsets_[d]; p < fwd_offsets_[d + 1]; ++p) {
        const int64_t at = cursor[fwd_terms_[p]]++;
        a.post_docs[at] = static_cast<uint32_t>(d);
        post_tf[at] = fwd_tf_[p];
      }
    }
  }
  double total = 0;
  for (uint32_t l : doc_len_) total += l;
  Bm25Math m{params, static_cast<double>(N), N ? total / static_cast<double>(N) : 1.0};
  if (m.avgdl <= 0) m.avgdl = 1.0;
  // per-term arrays only where the scorer needs them at query time: idf weights TF-IDF queries,
  // the non-occurrence constant belongs to bm25l / bm25+
  const bool tfidf = params.scorer == Scorer::tfidf;
  const bool has_const = params.scorer == Scorer::bm25l || params.scorer == Scorer::bm25plus;
  if (tfidf) a.term_idf.resize(T);
  if (has_const) a.term_const.resize(T);
  std::vector<double> idf_d(T);
  for (size_t t = 0; t < T; ++t) {
    const double df = static_cast<double>(a.term_offsets[t + 1] - a.term_offsets[t]);
    idf_d[t] = df > 0 ? m.idf(df) : 0.0;
    if (tfidf) a.term_idf[t] = static_cast<float>(idf_d[t]);
    if (has_const) a.term_const[t] = static_cast<float>(m.nonoccurrence(idf_d[t]));
  }
  std::vector<double> inv_norm;
  if (params.scorer == Scorer::tfidf) {  // l2 norm of each document's tf-idf vector
    inv_norm.assign(N, 0.0);
    parallel_for(N, n_threads, 4096, [&](int, size_t b, size_t e) {
      for (size_t d = b; d < e; ++d) {
        double s = 0;
        for (uint64_t p = fwd_offsets_[d]; p < fwd_offsets_[d + 1]; ++p) {
          const double w = m.tfc(fwd_tf_[p], 0) * idf_d[fwd_terms_[p]];
          s += w * w;
        }
        inv_norm[d] = s > 0 ? 1.0 / std::sqrt(s) : 0.0;
      }
    });
  }
  // recompute idf in double for the impacts (term_idf is the float32 copy for query weighting)
  a.post_weights.resize(P);
  parallel_for(T, n_threads, 1024, [&](int, size_t tb, size_t te) {
    for (size_t t = tb; t < te; ++t) {
      const int64_t b = a.term_offsets[t], e = a.term_offsets[t + 1];
      if (b == e) continue;
      const double idf = idf_d[t];
      const double nonocc = m.nonoccurrence(idf);
      for (int64_t p = b; p < e; ++p) {
        const uint32_t d = a.post_docs[p];
        double w;
        if (params.scorer == Scorer::tfidf) {
          w = m.tfc(post_tf[p], 0) * idf * inv_norm[d];
        } else {
          w = idf * m.tfc(post_tf[p], doc_len_[d]) - nonocc;
        }
        a.post_weights[p] = static_cast<float>(w);
      }
    }
  });
  a.n_docs = N;
  doc_len_.clear();
  a.term_data = terms_.arena();
  a.term_str_offsets = terms_.offsets();
  if (stemming_) {
    a.surface_data = surface_.arena();
    a.surface_offsets = surface_.offsets();
    a.surface_term = surface_term_;
  } else {
    a.surface_offsets.assign(1, 0);
  }
  fwd_terms_.clear();
  fwd_tf_.clear();
  fwd_offsets_.assign(1, 0);
  return a;
}

// ---------------------------------------------------------------------------------------------
// Index

SparseIndex::View SparseIndex::view_of(const SparseArraysRef& a, size_t n_docs, const ScoringParams& p) {
  View v;
  v.n_docs = n_docs;
  v.n_terms = a.term_offsets.size - 1;
  v.term_offsets = a.term_offsets.data;
  v.post_docs = a.post_docs.data;
  v.post_weights = a.post_weights.data;
  v.term_idf = p.scorer == Scorer::tfidf ? a.term_idf.data : nullptr;
  v.term_const = p.scorer == Scorer::bm25l || p.scorer == Scorer::bm25plus ? a.term_const.data : nullptr;
  // postings increase within a term (validated), so each term's last one is its highest document
  for (size_t t = 0; t < v.n_terms; ++t)
    if (v.term_offsets[t + 1] > v.term_offsets[t])
      v.span_docs = std::max<size_t>(v.span_docs, size_t{v.post_docs[v.term_offsets[t + 1] - 1]} + 1);
  return v;
}

// Member order matters: term_max_ (the validation) is initialised before anything reads the arrays.
SparseIndex::SparseIndex(const SparseArraysRef& a, size_t n_docs, ScoringParams params,
                         std::shared_ptr<const Analyzer> analyzer, bool stemming, std::shared_ptr<void> keepalive)
    : term_max_(validate_sparse_arrays(a, n_docs, params.scorer, hardware_threads())),
      v_(view_of(a, n_docs, params)),
      params_(params),
      analyzer_(std::move(analyzer)),
      terms_(a.term_data.data, a.term_str_offsets.data, v_.n_terms, "term_data"),
      surface_(a.surface_data.data, a.surface_offsets.data, a.surface_term.size, "surface_data"),
      surface_term_(a.surface_term.data, a.surface_term.data + a.surface_term.size),
      stemming_(stemming),
      keepalive_(std::move(keepalive)) {
  RAGCORE_ASSERT(analyzer_);
}

void SparseIndex::finish_query(std::vector<std::pair<int32_t, float>>& toks, Queries& out) const {
  std::sort(toks.begin(), toks.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const size_t begin = out.terms.size();
  float constant = 0.0f;
  for (size_t i = 0; i < toks.size();) {
    size_t j = i;
    float count = 0;
    while (j < toks.size() && toks[j].first == toks[i].first) count += toks[j++].second;
    const int32_t t = toks[i].first;
    float w = count;
    if (params_.scorer == Scorer::tfidf) {
      RAGCORE_ASSERT(v_.term_idf);
      w = (params_.sublinear_tf ? 1.0f + std::log(count) : count) * v_.term_idf[t];
    } else if (v_.term_const) {
      constant += count * v_.term_const[t];
    }
    out.terms.push_back(t);
    out.weights.push_back(w);
    i = j;
  }
  if (params_.scorer == Scorer::tfidf) {
    double s = 0;
    for (size_t i = begin; i < out.weights.size(); ++i) s += double(out.weights[i]) * out.weights[i];
    const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
    for (size_t i = begin; i < out.weights.size(); ++i) out.weights[i] *= inv;
  }
  out.offsets.push_back(static_cast<int64_t>(out.terms.size()));
  out.constants.push_back(constant);
}

bool SparseIndex::prepare_one_text(std::string_view text, Queries& out, std::string& buf,
                                   std::vector<std::pair<int32_t, float>>& toks,
                                   std::vector<std::string>* missing) const {
  toks.clear();
  bool complete = true;
  analyzer_->tokenize(text.data(), text.size(), buf, [&](std::string_view w) {
    int64_t t;
    if (!stemming_) {
      t = terms_.find(w);
    } else {
      const int64_t sid = surface_.find(w);
      if (sid >= 0) {
        t = surface_term_[sid];
      } else {
        const int64_t c = qcache_.find(w);  // the caller holds cache_mutex_ shared
        if (c < 0) {
          complete = false;
          if (missing) missing->emplace_back(w);
          return;
        }
        t = qcache_term_[c];
      }
    }
    if (t >= 0) toks.emplace_back(static_cast<int32_t>(t), 1.0f);
  });
  if (!complete) return false;
  out.offsets.assign(1, 0);
  out.terms.clear();
  out.weights.clear();
  out.constants.clear();
  finish_query(toks, out);
  return true;
}

void SparseIndex::prepare_one_tokens(const std::vector<std::string_view>& tokens, Queries& out,
                                     std::vector<std::pair<int32_t, float>>& toks) const {
  toks.clear();
  for (std::string_view w : tokens) {
    const int64_t t = terms_.find(w);
    if (t >= 0) toks.emplace_back(static_cast<int32_t>(t), 1.0f);
  }
  out.offsets.assign(1, 0);
  out.terms.clear();
  out.weights.clear();
  out.constants.clear();
  finish_query(toks, out);
}

void SparseIndex::add_surface_words(const std::vector<std::string_view>& words,
                                    const std::vector<std::string_view>& stems) {
  RAGCORE_CHECK(words.size() == stems.size(), "got " << stems.size() << " stems for " << words.size() << " words");
  std::unique_lock<std::shared_mutex> lock(cache_mutex_);
  constexpr size_t kMaxCache = size_t{1} << 20;
  if (qcache_.size() + words.size() > kMaxCache) {
    qcache_.clear();
    qcache_term_.clear();
  }
  for (size_t i = 0; i < words.size(); ++i) {
    auto [id, inserted] = qcache_.insert(words[i]);
    const int64_t t = stems[i].empty() ? -1 : terms_.find(stems[i]);
    if (inserted) qcache_term_.push_back(static_cast<int32_t>(t));
    else qcache_term_[id] = static_cast<int32_t>(t);
  }
}

std::unique_ptr<SparseIndex::Scratch> SparseIndex::acquire() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto s = std::move(pool_.back());
      pool_.pop_back();
      return s;
    }
  }
  auto s = std::make_unique<Scratch>();
  s->acc.assign(v_.span_docs, 0.0f);
  s->seen.assign((v_.span_docs + 63) / 64, 0);
  s->seen2.assign((s->seen.size() + 63) / 64, 0);
  return s;
}

void SparseIndex::release(std::unique_ptr<Scratch> s) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(s));
}

// Exact top-k by blocked term-at-a-time accumulation with MaxScore pruning (Turtle & Flood 1995).
// The document space is cut into blocks whose accumulator fits in L2; within a block, terms are
// processed by decreasing upper bound (weight x max impact) into a dense accumulator, branch-free.
// All impacts and weights are >= 0, so scores only grow: once the k-th best score (of earlier blocks,
// or of this block's partial scores) exceeds what the remaining terms can add, those terms are
// "non-essential": no unseen document can enter the top-k, and they are only looked up, by galloping
// search, for the candidates that can still reach the threshold. Every document's impacts are added
// in the same order whatever is pruned, so scores are bitwise those of exhaustive scoring.
namespace {
// relative slack on bounds so float rounding can never prune a document that belongs in the top-k
constexpr float kBoundSlack = 1e-5f;
constexpr uint32_t kBlockDocs = uint32_t{1} << 15;  // 128 KiB of float accumulator per block
constexpr uint32_t kSummaryMinDocs = 8192;          // below: no summary bitmap
constexpr int64_t kSplitMinPostings = 98304;  // one query over several threads from here (thread start ~50 us)

inline int64_t gallop(const uint32_t* a, int64_t lo, int64_t hi, uint32_t x) {
  // first position in [lo, hi) with a[pos] >= x
  int64_t step = 1, prev = lo;
  while (lo < hi && a[lo] < x) {
    prev = lo;
    lo += step;
    step <<= 1;
  }
  if (lo > hi) lo = hi;
  return std::lower_bound(a + prev, a + lo, x) - a;
}

// Visit the set bits of words[wb, we) (documents), using the summary bitmap (one bit per word) to
// skip empty words when there is one (summary != nullptr); clear=true zeroes what it visits.
template <class F>
inline void for_each_set(uint64_t* words, uint64_t* summary, size_t wb, size_t we, bool clear, F&& f) {
  auto visit_word = [&](size_t wi) {
    uint64_t bits = words[wi];
    if (!bits) return;
    if (clear) words[wi] = 0;
    while (bits) {
      f(static_cast<uint32_t>(wi * 64 + __builtin_ctzll(bits)));
      bits &= bits - 1;
    }
  };
  if (!summary) {
    for (size_t wi = wb; wi < we; ++wi) visit_word(wi);
    return;
  }
  for (size_t sw = wb / 64; sw < (we + 63) / 64; ++sw) {
    uint64_t sbits = summary[sw];
    if (!sbits) continue;
    if (clear) summary[sw] = 0;
    while (sbits) {
      visit_word(sw * 64 + __builtin_ctzll(sbits));
      sbits &= sbits - 1;
    }
  }
}
}  // namespace

void SparseIndex::search_one(const Queries& q, size_t i, size_t k, const uint8_t* mask, Scratch& s, TopK& top,
                             uint32_t doc_begin, uint32_t doc_end) const {
  float* acc = s.acc.data();
  uint64_t* seen = s.seen.data();
  const uint32_t* docs = v_.post_docs;
  const float* pw = v_.post_weights;
  const int64_t* off = v_.term_offsets;
  const uint32_t n_docs = static_cast<uint32_t>(v_.span_docs);  // no document past it has a posting
  doc_end = std::min(doc_end, n_docs);
  RAGCORE_ASSERT(doc_begin % kBlockDocs == 0);
  // small collections scan their few bitmap words directly; larger ones keep a summary bitmap
  const bool use_summary = n_docs > kSummaryMinDocs;
  uint64_t* seen2 = use_summary ? s.seen2.data() : nullptr;
  // terms by decreasing upper bound (ties: lower term id)
  s.terms.clear();
  for (int64_t j = q.offsets[i]; j < q.offsets[i + 1]; ++j) {
    const int32_t t = q.terms[j];
    s.terms.push_back({q.weights[j] * term_max_[t], q.weights[j], t});
  }
  std::sort(s.terms.begin(), s.terms.end(), [](const Scratch::Term& a, const Scratch::Term& b) {
    return a.ub > b.ub || (a.ub == b.ub && a.t < b.t);
  });
  const size_t nt = s.terms.size();
  // suffix[j] = what terms j.. can add to any document; cursor[j] = position in term j's postings
  s.suffix.assign(nt + 1, 0.0f);
  for (size_t j = nt; j-- > 0;) s.suffix[j] = s.suffix[j + 1] + s.terms[j].ub;
  s.cursor.resize(nt);
  for (size_t j = 0; j < nt; ++j) s.cursor[j] = off[s.terms[j].t];
  top.reset();
  const float c = q.constants[i];
  // a document whose partial score is `partial` with terms j.. left can still enter iff
  // partial + suffix[j] >= theta - c (with slack for rounding)
  auto bound_ok = [&](float partial, size_t j, float theta) {
    return (partial + s.suffix[j]) * (1.0f + kBoundSlack) + kBoundSlack * std::fabs(c) >= theta - c;
  };
  // essential terms: the smallest prefix whose complement cannot lift an unseen document to theta
  auto n_essential = [&](float theta) {
    size_t ne = nt;
    while (ne > 0 && !bound_ok(0.0f, ne - 1, theta)) --ne;
    return ne;
  };
  for (uint32_t bs = doc_begin; bs < doc_end; bs += kBlockDocs) {
    const uint32_t be = std::min(doc_end, bs + kBlockDocs);
    const size_t wb = bs / 64, we = (be + 63) / 64;
    top.tighten();
    float theta = top.threshold();
    size_t ne = n_essential(theta);
    if (ne == 0) continue;  // nothing in this block can enter the top-k
    const double block_frac = double(be - bs) / double(n_docs);
    // push the block's touched documents into t; final=true also resets the accumulator. The
    // threshold lives in a local: stores to acc (float) would otherwise force reloading it.
    auto select = [&](TopK& t, bool final) {
      float thr = t.threshold();
      for_each_set(seen, seen2, wb, we, final, [&](uint32_t d) {
        const float sc = acc[d] + c;
        if (final) acc[d] = 0.0f;
        if (sc >= thr && (!mask || mask[d])) {
          t.push(sc, d);
          thr = t.threshold();
        }
      });
    };
    // once earlier blocks filled the top-k, its threshold is the one to prune with
    const bool top_full = theta > -std::numeric_limits<float>::infinity();
    int64_t done = 0;
    int attempts = 0;
    for (size_t j = 0; j < ne; ++j) {
      const float w = s.terms[j].w;
      const int64_t e = off[s.terms[j].t + 1];
      int64_t p = s.cursor[j];
      if (p < e && docs[p] < bs) p = gallop(docs, p, e, bs);
      const int64_t p0 = p;
      const int64_t pe = (be == n_docs) ? e : gallop(docs, p, e, be);
      if (use_summary) {
        for (; p < pe; ++p) {
          const uint32_t d = docs[p];
          acc[d] += pw[p] * w;
          seen[d >> 6] |= uint64_t{1} << (d & 63);
          seen2[d >> 12] |= uint64_t{1} << ((d >> 6) & 63);
        }
      } else {
        for (; p < pe; ++p) {
          const uint32_t d = docs[p];
          acc[d] += pw[p] * w;
          seen[d >> 6] |= uint64_t{1} << (d & 63);
        }
      }
      s.cursor[j] = p;
      done += p - p0;
      // when the rest of the essential lists is long, a threshold from this block's partial scores
      // may make them non-essential
      if (j + 1 < ne && attempts < 2 && !top_full) {
        double rest = 0;
        for (size_t r = j + 1; r < ne; ++r) rest += double(off[s.terms[r].t + 1] - s.cursor[r]) * block_frac;
        // an attempt costs a pass over the touched documents (<= done); it pays when the
        // remaining lists are much longer
        if (rest > 4.0 * double(done) + 2048) {
          ++attempts;
          s.top2 = top;
          select(s.top2, false);
          s.top2.tighten();
          theta = s.top2.threshold();
          ne = std::max(j + 1, n_essential(theta));
        }
      }
    }
    if (ne == nt) {  // every term was accumulated: select from the block
      select(top, true);
      continue;
    }
    // Candidates of the block (those that can still reach theta) stay marked in `seen`; the
    // non-essential terms are added for them only, by a masked merge over the block's segment of
    // the posting list or by galloping lookups, whichever reads less. After each term the
    // candidates are filtered again against the smaller bound.
    size_t n_cand = 0;
    auto refilter = [&](size_t j) {
      n_cand = 0;
      auto filter_word = [&](size_t wi) {
        uint64_t bits = seen[wi], keep = 0;
        while (bits) {
          const int b = __builtin_ctzll(bits);
          bits &= bits - 1;
          const uint32_t d = static_cast<uint32_t>(wi * 64 + b);
          if ((!mask || mask[d]) && bound_ok(acc[d], j, theta)) {
            keep |= uint64_t{1} << b;
            ++n_cand;
          } else {
            acc[d] = 0.0f;
          }
        }
        seen[wi] = keep;
      };
      if (!seen2) {
        for (size_t wi = wb; wi < we; ++wi) filter_word(wi);
        return;
      }
      for (size_t sw = wb / 64; sw < (we + 63) / 64; ++sw) {
        uint64_t sbits = seen2[sw];
        while (sbits) {
          filter_word(sw * 64 + __builtin_ctzll(sbits));
          sbits &= sbits - 1;
        }
      }
    };
    refilter(ne);
    for (size_t j = ne; j < nt && n_cand; ++j) {
      const float w = s.terms[j].w;
      const int64_t e = off[s.terms[j].t + 1];
      int64_t p = s.cursor[j];
      if (p < e && docs[p] < bs) p = gallop(docs, p, e, bs);
      const int64_t pe = gallop(docs, p, e, be);
      if (static_cast<size_t>(pe - p) <= 16 * n_cand) {
        for (; p < pe; ++p) {  // masked merge: non-candidates have acc 0 and get + 0
          const uint32_t d = docs[p];
          const float m = static_cast<float>((seen[d >> 6] >> (d & 63)) & 1);
          acc[d] += pw[p] * w * m;
        }
      } else {
        for_each_set(seen, seen2, wb, we, false, [&](uint32_t d) {
          if (p == pe) return;
          p = gallop(docs, p, pe, d);
          if (p < pe && docs[p] == d) acc[d] += pw[p] * w;
        });
      }
      s.cursor[j] = pe;
      if (j + 1 < nt) refilter(j + 1);
    }
    select(top, true);  // the candidates (already masked)
  }
}

template <class Prepare>
void SparseIndex::run_queries(size_t nq, size_t k, const uint8_t* mask, int n_threads, int64_t* indices,
                              float* scores, Prepare&& prepare) const {
  RAGCORE_CHECK(k >= 1, "k must be >= 1, got " << k);
  const size_t n_blocks = (v_.span_docs + kBlockDocs - 1) / kBlockDocs;
  if (nq == 1 && n_threads > 1 && n_blocks > 1) {
    // One query on a large index: split the document blocks over the threads, each with its own
    // accumulator and top-k, then merge (same scores, same order: the result does not depend on
    // the split). Only when the query reads enough postings to pay for the threads.
    auto s0 = acquire();
    if (!prepare(0, 0, *s0)) {
      release(std::move(s0));
      return;
    }
    int64_t postings = 0;
    for (int32_t t : s0->q.terms) postings += v_.term_offsets[t + 1] - v_.term_offsets[t];
    if (postings >= kSplitMinPostings) {
      const size_t parts = std::min<size_t>(static_cast<size_t>(n_threads), n_blocks);
      std::vector<TopK> tops(parts, TopK(k));
      const Queries& q = s0->q;
      parallel_for(parts, static_cast<int>(parts), 1, [&](int, size_t pb, size_t pe) {
        for (size_t p = pb; p < pe; ++p) {
          auto sc = acquire();
          const size_t b0 = p * n_blocks / parts, b1 = (p + 1) * n_blocks / parts;
          search_one(q, 0, k, mask, *sc, tops[p], static_cast<uint32_t>(b0 * kBlockDocs),
                     static_cast<uint32_t>(std::min(v_.span_docs, b1 * kBlockDocs)));
          release(std::move(sc));
        }
      });
      for (size_t p = 1; p < parts; ++p) tops[p].for_each([&](float sc, int64_t d) { tops[0].push(sc, d); });
      tops[0].write(indices, scores);
    } else {
      TopK top(k);
      search_one(s0->q, 0, k, mask, *s0, top);
      top.write(indices, scores);
    }
    release(std::move(s0));
    return;
  }
  const size_t chunk = std::max<size_t>(1, nq / (8 * static_cast<size_t>(std::max(n_threads, 1))));
  parallel_for(nq, n_threads, chunk, [&](int w, size_t qb, size_t qe) {
    auto scratch = acquire();
    TopK top(k);
    for (size_t i = qb; i < qe; ++i) {
      if (!prepare(w, i, *scratch)) continue;
      search_one(scratch->q, 0, k, mask, *scratch, top);
      top.write(indices + i * k, scores + i * k);
    }
    release(std::move(scratch));
  });
}

std::vector<std::string> SparseIndex::search_text(const std::vector<std::string_view>& texts, size_t k,
                                                  const uint8_t* mask, int n_threads, int64_t* indices,
                                                  float* scores) const {
  std::shared_lock<std::shared_mutex> lock(cache_mutex_, std::defer_lock);
  if (stemming_) lock.lock();
  const int workers = std::max(n_threads, 1);
  std::vector<std::vector<std::string>> missing(static_cast<size_t>(workers));
  run_queries(texts.size(), k, mask, n_threads, indices, scores, [&](int w, size_t i, Scratch& s) {
    return prepare_one_text(texts[i], s.q, s.buf, s.toks, &missing[static_cast<size_t>(w)]);
  });
  std::vector<std::string> all;
  for (auto& m : missing) all.insert(all.end(), std::make_move_iterator(m.begin()), std::make_move_iterator(m.end()));
  if (!all.empty()) {
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
  }
  return all;
}

void SparseIndex::search_tokens(const std::vector<std::vector<std::string_view>>& queries, size_t k,
                                const uint8_t* mask, int n_threads, int64_t* indices, float* scores) const {
  run_queries(queries.size(), k, mask, n_threads, indices, scores, [&](int, size_t i, Scratch& s) {
    prepare_one_tokens(queries[i], s.q, s.toks);
    return true;
  });
}

void SparseIndex::dense_scores_prepared(const Queries& q, float* out) const {
  RAGCORE_ASSERT(q.offsets.size() >= 2);
  // same order of additions as search(): terms by decreasing upper bound, then the constant
  std::vector<std::pair<float, int64_t>> order;
  for (int64_t j = q.offsets[0]; j < q.offsets[1]; ++j) order.push_back({q.weights[j] * term_max_[q.terms[j]], j});
  std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && q.terms[a.second] < q.terms[b.second]);
  });
  std::fill(out, out + v_.n_docs, 0.0f);
  for (const auto& o : order) {
    const int32_t t = q.terms[o.second];
    const float w = q.weights[o.second];
    for (int64_t p = v_.term_offsets[t]; p < v_.term_offsets[t + 1]; ++p) out[v_.post_docs[p]] += v_.post_weights[p] * w;
  }
  const float c = q.constants[0];
  for (size_t d = 0; d < v_.n_docs; ++d) out[d] += c;
}

std::vector<std::string> SparseIndex::dense_scores_text(std::string_view text, float* out) const {
  std::shared_lock<std::shared_mutex> lock(cache_mutex_, std::defer_lock);
  if (stemming_) lock.lock();
  Queries q;
  std::string buf;
  std::vector<std::pair<int32_t, float>> toks;
  std::vector<std::string> missing;
  if (!prepare_one_text(text, q, buf, toks, &missing)) {
    std::sort(missing.begin(), missing.end());
    missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
    return missing;
  }
  dense_scores_prepared(q, out);
  return {};
}

void SparseIndex::dense_scores_tokens(const std::vector<std::string_view>& tokens, float* out) const {
  Queries q;
  std::vector<std::pair<int32_t, float>> toks;
  prepare_one_tokens(tokens, q, toks);
  dense_scores_prepared(q, out);
}

}  // namespace ragcore
