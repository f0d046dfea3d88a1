// Sparse index construction: the builder (analysis of batches, forward index, postings and impacts)
// and the scorers' names; the index and its search are in sparse_index.cpp. Formulas of the BM25
// family follow bm25s (Lù 2024, "BM25S: Orders of magnitude faster lexical search via eager sparse
// scoring"), which names them after Robertson et al. (1994), Lucene (exact document lengths), ATIRE
// (Trotman et al. 2014), BM25L (Lv & Zhai 2011) and BM25+ (Lv & Zhai 2011). TF-IDF follows
// scikit-learn's TfidfVectorizer.
#include "ragcore/sparse.hpp"

#include <algorithm>
#include <cmath>

#include "ragcore/parallel.hpp"

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

}  // namespace ragcore
