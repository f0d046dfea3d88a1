// Sparse index search: the index over validated arrays (built by sparse_builder.cpp, or mapped from
// disk), query preparation (analysis, stemming cache) and exact top-k by blocked term-at-a-time
// accumulation with MaxScore pruning.
#include "ragcore/sparse.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ragcore/parallel.hpp"
#include "ragcore/topk.hpp"

namespace ragcore {

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
