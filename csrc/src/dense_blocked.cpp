// Dense search, batches of queries: a blocked matrix product over L2-sized blocks of rows with selection
// per block, so the full score matrix never exists. float32 register tiles (search_blocked); bf16 AMX
// tiles (search_blocked_amx) and int8 tiles (search_blocked_i8, VNNI or AMX-INT8) select candidates
// under a proven error bound and re-score them exactly. Portable C++: the kernels come from the table
// (dense_kernels.hpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "dense_drivers.hpp"
#include "ragcore/parallel.hpp"

namespace ragcore::dense::detail {
namespace {

constexpr int64_t kRowBlock = 192;       // rows per L2 block (blocked path); a multiple of kPanel

/// Rows [r, r + nr) as float32: the stored rows themselves (f32), or converted into buf (f16; i8 times
/// the row scales), (nr, dim).
const float* rows_f32(const Kernels& K, const Collection& c, int64_t r, int64_t nr, float* buf) {
  if (c.dtype == DType::f32) return f32_rows(c, r);
  if (c.dtype == DType::f16)
    K.f16_to_f32(f16_rows(c, r), buf, nr * c.dim);
  else
    K.i8_to_f32(i8_rows(c, r), c.aux + 2 * r, nr, c.dim, buf);
  return buf;
}

/// One query's exact top-k from its candidates: the rows whose upper bound reaches the final k-th best
/// lower bound (only those can be in the exact top-k), scored exactly from the stored rows.
void rescore(const Kernels& K, const Collection& c, const float* q, BoundScan& s, int k, int64_t* out_idx,
             float* out_scores) {
  s.lower.tighten();
  const float t = s.lower.threshold();
  TopK top(static_cast<size_t>(k));
  for (const auto& x : s.cand)
    if (x.first >= t) top.push(exact_score(K, c, q, x.second), x.second);
  top.write(out_idx, out_scores);
}

}  // namespace

void search_blocked(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                    int64_t* out_idx, float* out_scores) {
  const int dim = c.dim;
  // Queries per task: all of them split evenly over the threads (a multiple of the tile), so each
  // block of rows is converted and packed once per thread.
  const int tq = K.tile_q;
  int64_t qb = (nq + threads - 1) / std::max(threads, 1);
  qb = (qb + tq - 1) / tq * tq;
  parallel_for(static_cast<size_t>(nq), threads, static_cast<size_t>(qb), [&](int, size_t qb0, size_t qe0) {
    const int64_t q0 = static_cast<int64_t>(qb0), q1 = static_cast<int64_t>(qe0), m = q1 - q0;
    std::vector<TopK> tops(static_cast<size_t>(m), TopK(static_cast<size_t>(k)));
    std::vector<float> scores(static_cast<size_t>(tq * kRowBlock));
    std::vector<float> rows;  // f16 / i8 rows of the block as float32
    if (c.dtype != DType::f32) rows.resize(static_cast<size_t>(kRowBlock * dim));
    std::vector<float> packed(static_cast<size_t>(kRowBlock * dim));
    std::vector<int> pos(static_cast<size_t>(kRowBlock));
    // the task's queries, tile by tile, dimension-major inside a tile: Qp[t][d][i] = Q[t * tq + i][d]
    const int64_t ntiles = (m + tq - 1) / tq;
    std::vector<float> qpacked(static_cast<size_t>(ntiles * dim * tq), 0.f);
    for (int64_t i = 0; i < m; ++i) {
      float* o = qpacked.data() + (i / tq) * dim * tq + i % tq;
      const float* q = queries + (q0 + i) * dim;
      for (int d = 0; d < dim; ++d) o[static_cast<int64_t>(d) * tq] = q[d];
    }
    for (int64_t r = 0; r < c.n; r += kRowBlock) {
      const int64_t nr = std::min<int64_t>(kRowBlock, c.n - r);
      const float* X = rows_f32(K, c, r, nr, rows.data());
      K.pack(X, nr, dim, packed.data());
      const int np = static_cast<int>((nr + kPanel - 1) / kPanel);
      for (int64_t i = 0; i < m; i += tq) {
        const int nt = static_cast<int>(std::min<int64_t>(tq, m - i));
        K.tile_f32(qpacked.data() + (i / tq) * dim * tq, nt, packed.data(), np, dim, scores.data(), kRowBlock);
        for (int t = 0; t < nt; ++t) {
          TopK& top = tops[static_cast<size_t>(i + t)];
          const float* s = scores.data() + static_cast<int64_t>(t) * kRowBlock;
          const int cnt = K.filter_ge(s, static_cast<int>(nr), top.threshold(), pos.data());
          for (int u = 0; u < cnt; ++u) {
            const int64_t row = r + pos[static_cast<size_t>(u)];
            if (live(c, row)) top.push(s[pos[static_cast<size_t>(u)]], row);
          }
        }
      }
    }
    for (int64_t i = 0; i < m; ++i) tops[static_cast<size_t>(i)].write(out_idx + (q0 + i) * k, out_scores + (q0 + i) * k);
  });
}

/// Batches on AMX: bf16 tile products select candidates, float32 re-scoring decides. For a query q and
/// a row x, the tile unit's score a = sum_d bf16(q_d) bf16(x_d), accumulated in float32, differs from
/// the exact s = q . x by at most
///     |a - s| <= |q| |x| ((2u + u^2) + (dim + 2) 2^-24 (1 + u)^2),   u = 2^-8 (bf16 rounding),
/// (each product is off by at most (2u + u^2) |q_d x_d|, their sum is at most |q| |x| by Cauchy-Schwarz,
/// and float32 accumulation adds at most (dim + 2) 2^-24 times the sum of the products' magnitudes),
/// plus float rounding of a +- bound: 1e-6 |q| |x| more (|a| <= |q| |x| (1 + u)^2 (1 + dim 2^-24), so this
/// exceeds 2^-23 |a| with room to spare), all times 1.001. As in the int8 scan, each query
/// keeps the top-k of lower bounds a - b and every row whose upper bound a + b reached the running k-th
/// lower bound; at the end the rows whose upper bound reaches the final k-th lower bound (only those can
/// be in the exact top-k) are scored exactly with the stored values.
void search_blocked_amx(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k,
                        int threads, int64_t* out_idx, float* out_scores) {
  const AmxKernels& A = *K.amx;
  const int dim = c.dim;
  const int dpad = (dim + kAmxChunk - 1) / kAmxChunk * kAmxChunk;
  constexpr double u = 1.0 / 256;
  const float rel =
      static_cast<float>(((2 * u + u * u) + (dim + 2) * std::ldexp(1.0, -24) * (1 + u) * (1 + u) + 1e-6) * 1.001);
  int64_t qb = (nq + threads - 1) / std::max(threads, 1);
  qb = (qb + kAmxGroupQ - 1) / kAmxGroupQ * kAmxGroupQ;
  parallel_for(static_cast<size_t>(nq), threads, static_cast<size_t>(qb), [&](int, size_t qb0, size_t qe0) {
    const int64_t q0 = static_cast<int64_t>(qb0), m = static_cast<int64_t>(qe0) - q0;
    const int64_t m_pad = (m + kAmxGroupQ - 1) / kAmxGroupQ * kAmxGroupQ;
    const float* Q = queries + q0 * dim;
    std::vector<uint16_t> qbf(static_cast<size_t>(m_pad * dpad));
    A.queries(Q, m, m_pad, dim, dpad, qbf.data());
    std::vector<float> qscale(static_cast<size_t>(m));  // rel * |q|
    for (int64_t i = 0; i < m; ++i) {
      double ss = 0;
      for (int d = 0; d < dim; ++d) ss += static_cast<double>(Q[i * dim + d]) * Q[i * dim + d];
      qscale[static_cast<size_t>(i)] = rel * static_cast<float>(std::sqrt(ss));
    }
    std::vector<BoundScan> st;
    st.reserve(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) st.emplace_back(k);
    const int64_t np_max = ((kRowBlock + 15) / 16 + 1) / 2 * 2;
    std::vector<uint16_t> packed(static_cast<size_t>(np_max * (dpad / kAmxChunk) * 512));
    std::vector<float> norms(static_cast<size_t>(np_max * 16));
    std::vector<uint16_t> scratch(static_cast<size_t>(dpad));
    std::vector<float> rows;
    if (c.dtype != DType::f32) rows.resize(static_cast<size_t>(kRowBlock * dim));
    std::vector<float> scores(static_cast<size_t>(kAmxGroupQ * np_max * 16));
    std::vector<int> pos(static_cast<size_t>(kRowBlock));
    const int64_t ldo = np_max * 16;
    struct TileGuard {  // the tiles are this thread's until released, also on an exception
      const AmxKernels& a;
      explicit TileGuard(const AmxKernels& x) : a(x) { a.begin(); }
      ~TileGuard() { a.end(); }
    } guard(A);
    for (int64_t r = 0; r < c.n; r += kRowBlock) {
      const int64_t nr = std::min<int64_t>(kRowBlock, c.n - r);
      const float* X = rows_f32(K, c, r, nr, rows.data());
      A.pack(X, nr, dim, dpad, packed.data(), norms.data(), scratch.data());
      const int np = static_cast<int>(((nr + 15) / 16 + 1) / 2 * 2);
      for (int64_t g = 0; g < m; g += kAmxGroupQ) {
        A.scores(qbf.data() + g * dpad, dpad, packed.data(), np, scores.data(), ldo);
        const int64_t ng = std::min<int64_t>(kAmxGroupQ, m - g);
        for (int64_t i = 0; i < ng; ++i) {
          BoundScan& s = st[static_cast<size_t>(g + i)];
          const float qs = qscale[static_cast<size_t>(g + i)];
          const float* row = scores.data() + i * ldo;
          const int cnt = A.filter(row, norms.data(), static_cast<int>(nr), qs, s.lower.threshold(), pos.data());
          for (int u = 0; u < cnt; ++u) {
            const int t = pos[static_cast<size_t>(u)];
            if (!live(c, r + t)) continue;
            const float a = row[t], bound = amx_bound(norms[static_cast<size_t>(t)], qs);
            s.add(a - bound, a + bound, r + t);
          }
          s.compact_if_large();
        }
      }
    }
    // exact scores of the surviving candidates
    for (int64_t i = 0; i < m; ++i)
      rescore(K, c, Q + i * dim, st[static_cast<size_t>(i)], k, out_idx + (q0 + i) * k, out_scores + (q0 + i) * k);
  });
}

/// Batches of int8 codes (an int8 collection's rows, or the int8 prefilter of float rows) by vpdpbusd
/// tiles: each query is quantised to int8 (as in the scan), the integer dot products give the estimates,
/// the scan's bounds (I8Bound, PreBound; here in one form) keep every row that could still reach the
/// top-k, and those are re-scored exactly from the stored rows, as in search_blocked_amx.
void search_blocked_i8(const Kernels& K, const Collection& c, const float* queries, int64_t nq, int k, int threads,
                       int64_t* out_idx, float* out_scores) {
  const I8TileKernels& T = *K.i8tile;
  const int dim = c.dim;
  const int tq = T.tile_q;
  const int groups = ((dim + 3) / 4 + T.group_align - 1) / T.group_align * T.group_align;
  const bool pre = c.pre != nullptr;
  const int8_t* codes = pre ? c.pre : static_cast<const int8_t*>(c.data);
  const float rnd = 3e-5f * std::max(1.f, static_cast<float>(dim) / 500.f);
  int64_t qb = (nq + threads - 1) / std::max(threads, 1);
  qb = (qb + tq - 1) / tq * tq;
  parallel_for(static_cast<size_t>(nq), threads, static_cast<size_t>(qb), [&](int, size_t qb0, size_t qe0) {
    const int64_t q0 = static_cast<int64_t>(qb0), m = static_cast<int64_t>(qe0) - q0;
    const float* Q = queries + q0 * dim;
    const int64_t ntiles = (m + tq - 1) / tq;
    // the queries: int8 codes + 128 packed per tile (interleaved, or row-major for AMX), and each one's
    // bound terms
    std::vector<int32_t> qp(static_cast<size_t>(ntiles * groups * tq), 0);
    std::vector<float> sq(static_cast<size_t>(m)), en(static_cast<size_t>(m)), qn(static_cast<size_t>(m));
    std::vector<int8_t> qq(static_cast<size_t>(groups) * 4, 0);  // zero past dim: those bytes are 128
    for (int64_t i = 0; i < m; ++i) {
      const float* q = Q + i * dim;
      const float s = quantize_query(q, dim, qq.data());
      double qn2 = 0, en2 = 0;
      for (int d = 0; d < dim; ++d) {
        const double err = static_cast<double>(q[d]) - static_cast<double>(s) * qq[static_cast<size_t>(d)];
        qn2 += static_cast<double>(q[d]) * q[d];
        en2 += err * err;
      }
      sq[static_cast<size_t>(i)] = s;
      // int8 rows: the scan's I8Bound (no row residual; the query term by L1 only, via en = inf)
      en[static_cast<size_t>(i)] = pre ? static_cast<float>(std::sqrt(en2) * (1 + 1e-6)) : std::numeric_limits<float>::infinity();
      qn[static_cast<size_t>(i)] = static_cast<float>(std::sqrt(qn2) * (1 + 1e-6));
      for (int g = 0; g < groups; ++g) {
        uint8_t b[4];
        for (int t = 0; t < 4; ++t) b[t] = static_cast<uint8_t>(qq[static_cast<size_t>(4 * g + t)] + 128);
        int32_t w;
        std::memcpy(&w, b, 4);
        if (T.row_major_queries)
          qp[static_cast<size_t>(i * groups + g)] = w;
        else
          qp[static_cast<size_t>((i / tq) * groups * tq + g * tq + i % tq)] = w;
      }
    }
    std::vector<BoundScan> st;
    st.reserve(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) st.emplace_back(k);
    const int64_t np_max = ((kRowBlock + 15) / 16 + 1) / 2 * 2, ldo = np_max * 16;
    std::vector<int32_t> packed(static_cast<size_t>(np_max * groups * 16)), rs(static_cast<size_t>(ldo));
    std::vector<int32_t> dots(static_cast<size_t>(tq * ldo));
    struct Guard {  // AMX: the tiles are this thread's until released, also on an exception
      const I8TileKernels& t;
      explicit Guard(const I8TileKernels& x) : t(x) { if (t.begin) t.begin(); }
      ~Guard() { if (t.end) t.end(); }
    } guard(T);
    // per row of the block: scale and the bound's coefficients (see PreBound)
    std::vector<float> scale(static_cast<size_t>(ldo)), b1(static_cast<size_t>(ldo)), b2(static_cast<size_t>(ldo)),
        c3(static_cast<size_t>(ldo)), lo(static_cast<size_t>(ldo)), hi(static_cast<size_t>(ldo));
    std::vector<int> pos(static_cast<size_t>(ldo));
    for (int64_t r = 0; r < c.n; r += kRowBlock) {
      const int64_t nr = std::min<int64_t>(kRowBlock, c.n - r);
      T.pack(codes + r * dim, nr, dim, groups, packed.data(), rs.data());
      for (int64_t j = 0; j < nr; ++j) {
        const size_t u = static_cast<size_t>(j);
        if (pre) {
          const float* a = c.pre_aux + 4 * (r + j);
          scale[u] = a[0], b1[u] = a[1], b2[u] = a[2], c3[u] = a[3] + rnd * (a[2] + a[3]);
        } else {
          const float* a = c.aux + 2 * (r + j);
          scale[u] = a[0], b1[u] = a[0] * (0.5f * a[1]), b2[u] = 1.f, c3[u] = 0.f;
        }
      }
      const int np = static_cast<int>(((nr + 15) / 16 + 1) / 2 * 2);
      for (int64_t i0 = 0; i0 < m; i0 += tq) {
        const int nt = static_cast<int>(std::min<int64_t>(tq, m - i0));
        T.tile(qp.data() + (i0 / tq) * groups * tq, nt, packed.data(), np, groups, dots.data(), ldo);
        for (int t = 0; t < nt; ++t) {
          const size_t qi = static_cast<size_t>(i0 + t);
          BoundScan& bs = st[qi];
          const float s = sq[qi], e = en[qi], n2 = qn[qi];
          const int cnt = T.filter(dots.data() + t * ldo, rs.data(), scale.data(), b1.data(), b2.data(), c3.data(),
                                   static_cast<int>(nr), s, e, n2, bs.lower.threshold(), pos.data(), lo.data(), hi.data());
          for (int u = 0; u < cnt; ++u) {
            const int64_t row = r + pos[static_cast<size_t>(u)];
            if (hi[static_cast<size_t>(u)] >= bs.lower.threshold() && live(c, row))
              bs.add(lo[static_cast<size_t>(u)], hi[static_cast<size_t>(u)], row);
          }
          bs.compact_if_large();
        }
      }
    }
    for (int64_t i = 0; i < m; ++i)
      rescore(K, c, Q + i * dim, st[static_cast<size_t>(i)], k, out_idx + (q0 + i) * k, out_scores + (q0 + i) * k);
  });
}

}  // namespace ragcore::dense::detail
