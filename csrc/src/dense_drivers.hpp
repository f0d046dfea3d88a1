// Private to csrc/src: what the dense drivers share, the few-query scan (dense_scan.cpp), the batches
// by tiles (dense_blocked.cpp) and the choice between them (dense.cpp). Portable C++ only: the drivers
// reach the kernels through the table (dense_kernels.hpp).
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "dense_kernels.hpp"
#include "ragcore/dense.hpp"
#include "ragcore/topk.hpp"

namespace ragcore::dense::detail {

inline bool live(const Collection& c, int64_t i) { return !c.deleted || !c.deleted[i]; }

inline const float* f32_rows(const Collection& c, int64_t r) {
  return static_cast<const float*>(c.data) + r * c.dim;
}
inline const uint16_t* f16_rows(const Collection& c, int64_t r) {
  return static_cast<const uint16_t*>(c.data) + r * c.dim;
}
inline const int8_t* i8_rows(const Collection& c, int64_t r) {
  return static_cast<const int8_t*>(c.data) + r * c.dim;
}

/// The int8 query of a float query: qq = round(q / sq), sq = max|q| / 127.
float quantize_query(const float* q, int dim, int8_t* qq);

/// Candidates under an error bound (the int8 scan, the AMX batches), for one query and one worker:
/// top-k of the lower bounds and the rows whose upper bound reached the running k-th lower bound (only
/// those can be in the exact top-k).
struct BoundScan {
  explicit BoundScan(int k) : lower(static_cast<size_t>(k)) {}
  TopK lower;
  std::vector<std::pair<float, int64_t>> cand;  // (upper bound, row)
  void add(float lo, float hi, int64_t row) {
    lower.push(lo, row);
    cand.emplace_back(hi, row);
  }
  /// Drop the candidates the k-th lower bound has ruled out, once there are many.
  void compact_if_large() {
    if (cand.size() <= 8192) return;
    lower.tighten();
    const float t = lower.threshold();
    size_t w = 0;
    for (const auto& x : cand)
      if (x.first >= t) cand[w++] = x;
    cand.resize(w);
  }
};

/// The exact score of query q against stored row i (int8: the float query times the row, times its scale).
float exact_score(const Kernels& K, const Collection& c, const float* q, int64_t i);

/// The drivers: top-k of `nq` queries (nq, dim) into out_idx / out_scores (nq, k), as dense::search
/// describes them. search_scan (dense_scan.cpp): one query at a time over the rows, split over threads;
/// search_blocked (float32 register tiles), search_blocked_amx (bf16 tiles, needs K.amx) and
/// search_blocked_i8 (int8 tiles, needs K.i8tile): queries split over threads (dense_blocked.cpp).
void search_scan(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                 int64_t* out_idx, float* out_scores);
void search_blocked(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                    int64_t* out_idx, float* out_scores);
void search_blocked_amx(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k,
                        int threads, int64_t* out_idx, float* out_scores);
void search_blocked_i8(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                       int64_t* out_idx, float* out_scores);

/// With AMX, a prefiltered collection's batches take the int8 tiles for k up to this and the bf16 tiles
/// over its float rows beyond it: the int8 bound is about twice the bf16 one, so the candidates to
/// re-score grow faster with k (100k x 384, 1000 queries, one thread: int8 1.37x bf16 at k=10, 1.14x at
/// k=32, 0.92x at k=50, 0.85x at k=100).
constexpr int kAmxPrefilterMaxK = 40;

/// dense::search on a path: 0 = auto (kBlockedMinQueries), 1 = scan, 2 = blocked (the kernels in use
/// pick the tiles); dense.cpp. testing::search_path (dense_testing.hpp) forces a path for tests.
void search_path(const Collection& c, const float* queries, int64_t nq, int k, int threads, int path,
                 int64_t* out_idx, float* out_scores);

}  // namespace ragcore::dense::detail
