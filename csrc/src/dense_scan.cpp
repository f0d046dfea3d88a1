// Dense search, few queries: each query scans the rows once (split over threads), scoring blocks of
// rows into L1 and selecting against the running threshold; int8 rows and int8 prefilters scan int8
// codes with the query quantised to int8, under a proven error bound, and re-score the candidates
// exactly. Portable C++: the kernels come from the table (dense_kernels.hpp).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dense_drivers.hpp"
#include "ragcore/parallel.hpp"

namespace ragcore::dense::detail {
namespace {

constexpr int kScanBlock = 256;          // rows scored into L1 before selection (scan path)
constexpr int64_t kScanChunk = 16384;    // rows per task when one query's rows are split over threads

/// Scan rows [b, e) for one float query (f32 / f16), pushing into top.
void scan_float(const Kernels& K, const Collection& c, const float* q, int64_t b, int64_t e, TopK& top) {
  float buf[kScanBlock];
  int pos[kScanBlock];
  for (int64_t r = b; r < e; r += kScanBlock) {
    const int nr = static_cast<int>(std::min<int64_t>(kScanBlock, e - r));
    if (c.dtype == DType::f32)
      K.scores_f32(q, f32_rows(c, r), nr, c.dim, buf);
    else
      K.scores_f16(q, f16_rows(c, r), nr, c.dim, buf);
    const int m = K.filter_ge(buf, nr, top.threshold(), pos);
    for (int t = 0; t < m; ++t) {
      const int64_t i = r + pos[t];
      if (live(c, i)) top.push(buf[pos[t]], i);
    }
  }
}

}  // namespace

/// The int8 query of a float query: qq = round(q / sq), sq = max|q| / 127.
float quantize_query(const float* q, int dim, int8_t* qq) {
  float amax = 0.f;
  for (int d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(q[d]));
  const float sq = amax > 0.f ? amax / 127.f : 1.f;
  for (int d = 0; d < dim; ++d) {
    const float v = std::nearbyint(q[d] / sq);
    qq[d] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, v)));
  }
  return sq;
}

/// The exact score of query q against stored row i (int8: the float query times the row, times its scale).
float exact_score(const Kernels& K, const Collection& c, const float* q, int64_t i) {
  float v;
  if (c.dtype == DType::f32)
    K.scores_f32(q, f32_rows(c, i), 1, c.dim, &v);
  else if (c.dtype == DType::f16)
    K.scores_f16(q, f16_rows(c, i), 1, c.dim, &v);
  else
    v = c.aux[2 * i] * K.dot_f32_i8(q, i8_rows(c, i), c.dim);
  return v;
}

namespace {

// For a query q with q = sq * qq + e, |e_d| <= sq / 2 (round to nearest; clipping never happens since
// |q_d| <= 127 sq), the exact score s = scale * (q . x) and the integer estimate a = scale * sq * (qq . x)
// differ by at most scale * (sq / 2) * |x|_1. The float rounding of a and of the bound is covered by
// a relative slack far above float epsilon.
struct I8Bound {  // int8 rows: aux (n, 2) = (scale, L1 of the codes)
  static constexpr int stride = 2;
  float sq;
  float en() const { return std::numeric_limits<float>::infinity(); }  // (for Kernels::scan_filter)
  float qn() const { return 0.f; }
  float rnd() const { return 0.f; }
  float operator()(const float* aux, float a) const {
    return aux[0] * sq * (0.5f * aux[1]) * (1.f + 1e-5f) + std::fabs(a) * 1e-5f + 1e-30f;
  }
};

// The prefilter of f32 / f16 rows: x = scale * c + r (c the codes, r the residual), q = sq * qq + e. Then
// q . x = scale * sq * (qq . c) + e . (scale * c) + q . r, with |e . (scale c)| <= min(sq/2 * scale |c|_1,
// |e|_2 |scale c|_2) and |q . r| <= |q|_2 |r|_2 (Cauchy-Schwarz). The stored rows' own float score
// differs from q . x by float rounding, at most ~dim/8 * 2^-24 * |q|_2 |x|_2 with 8-lane accumulation and
// dim * 2^-24 * |q|_2 |x|_2 for the scalar kernels: the 3e-5 |q| (|scale c| + |r|) term covers both for
// any dim up to ~500, and scales with dim beyond that.
struct PreBound {  // pre_aux (n, 4) = (scale, scale * L1(c) / 2, L2(scale c), L2(r))
  static constexpr int stride = 4;
  float sq, e_n, q_n, round;  // e_n = |e|_2, q_n = |q|_2 (rounded up), round = the rounding factor
  float en() const { return e_n; }
  float qn() const { return q_n; }
  float rnd() const { return round; }
  float operator()(const float* aux, float a) const {
    const float query_err = std::min(sq * aux[1], e_n * aux[2]);
    return (query_err + q_n * aux[3] + round * q_n * (aux[2] + aux[3])) * (1.f + 1e-5f) + std::fabs(a) * 1e-5f +
           1e-30f;
  }
};

/// Scan int8 codes of rows [b, e) (row r at codes + r * dim, its aux at aux + r * Bound::stride) with the
/// quantised query, keeping the candidates the bound cannot rule out.
template <class Bound>
void scan_codes(const Kernels& K, const Collection& c, const int8_t* codes, const float* aux_all, const int8_t* qq,
                float sq, const Bound& bound_of, int64_t b, int64_t e, BoundScan& st) {
  int32_t dots[kScanBlock];
  float upper[kScanBlock], lowerb[kScanBlock];
  int pos[kScanBlock];
  for (int64_t r = b; r < e; r += kScanBlock) {
    const int nr = static_cast<int>(std::min<int64_t>(kScanBlock, e - r));
    K.dots_i8(qq, codes + r * c.dim, nr, c.dim, dots);
    const float* aux = aux_all + Bound::stride * r;
    const float thr = st.lower.threshold();
    // the hits (position, lower, upper bound): vectorised for whole groups of 16 rows, then row by row
    const int vec = K.scan_filter ? nr / 16 * 16 : 0;
    int m = vec ? K.scan_filter(dots, aux, Bound::stride, vec, sq, bound_of.en(), bound_of.qn(), bound_of.rnd(), thr,
                                pos, lowerb, upper)
                : 0;
    for (int t = vec; t < nr; ++t) {
      const float* at = aux + Bound::stride * t;
      const float a = at[0] * sq * static_cast<float>(dots[t]);
      const float bound = bound_of(at, a);
      if (a + bound < thr) continue;
      pos[m] = t;
      lowerb[m] = a - bound;
      upper[m++] = a + bound;
    }
    for (int t = 0; t < m; ++t) {
      const int64_t i = r + pos[t];
      if (live(c, i)) st.add(lowerb[t], upper[t], i);
    }
    st.compact_if_large();
  }
}

}  // namespace

void search_scan(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                 int64_t* out_idx, float* out_scores) {
  const int dim = c.dim;
  const int64_t n_chunks = (c.n + kScanChunk - 1) / kScanChunk;
  const int workers = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_chunks)));
  std::vector<int8_t> qq(static_cast<size_t>(dim));
  for (int64_t qi = 0; qi < nq; ++qi) {
    const float* q = queries + qi * dim;
    TopK final_top(static_cast<size_t>(k));
    if (c.dtype == DType::i8 || c.pre) {
      const float sq = quantize_query(q, dim, qq.data());
      std::vector<BoundScan> st;
      for (int w = 0; w < workers; ++w) st.emplace_back(k);
      if (c.pre) {
        double qn2 = 0, en2 = 0;
        for (int d = 0; d < dim; ++d) {
          const double err = static_cast<double>(q[d]) - static_cast<double>(sq) * qq[d];
          qn2 += static_cast<double>(q[d]) * q[d];
          en2 += err * err;
        }
        const PreBound pb{sq, static_cast<float>(std::sqrt(en2) * (1 + 1e-6)),
                          static_cast<float>(std::sqrt(qn2) * (1 + 1e-6)),
                          3e-5f * std::max(1.f, static_cast<float>(dim) / 500.f)};
        parallel_for(static_cast<size_t>(c.n), workers, static_cast<size_t>(kScanChunk),
                     [&](int w, size_t b, size_t e) { scan_codes(K, c, c.pre, c.pre_aux, qq.data(), sq, pb, b, e, st[w]); });
      } else {
        const I8Bound ib{sq};
        parallel_for(static_cast<size_t>(c.n), workers, static_cast<size_t>(kScanChunk), [&](int w, size_t b, size_t e) {
          scan_codes(K, c, i8_rows(c, 0), c.aux, qq.data(), sq, ib, b, e, st[w]);
        });
      }
      TopK lower(static_cast<size_t>(k));  // the k-th best lower bound over all workers
      for (auto& s : st) s.lower.for_each([&](float v, int64_t i) { lower.push(v, i); });
      lower.tighten();
      const float t = lower.threshold();
      for (auto& s : st)
        for (const auto& x : s.cand)
          if (x.first >= t) {
            const int64_t i = x.second;
            final_top.push(exact_score(K, c, q, i), i);
          }
    } else if (workers <= 1) {
      scan_float(K, c, q, 0, c.n, final_top);
    } else {
      std::vector<TopK> tops(static_cast<size_t>(workers), TopK(static_cast<size_t>(k)));
      parallel_for(static_cast<size_t>(c.n), workers, static_cast<size_t>(kScanChunk),
                   [&](int w, size_t b, size_t e) { scan_float(K, c, q, b, e, tops[w]); });
      for (auto& t : tops) t.for_each([&](float v, int64_t i) { final_top.push(v, i); });
    }
    final_top.write(out_idx + qi * k, out_scores + qi * k);
  }
}

}  // namespace ragcore::dense::detail
