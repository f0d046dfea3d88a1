// Dense kernels for AVX-512, chosen at run time. Every SIMD function here carries RAGCORE_AVX512 (i8_pack
// is portable); the helpers are static to this file and the kernels are leaf functions on raw pointers
// with no std templates inside (see dense_kernels.hpp: no AVX-512 code in shared functions).
#include "dense_kernels.hpp"

#ifdef RAGCORE_X86
#include <immintrin.h>

namespace ragcore::dense::detail {

// AVX-512 F/BW/VL/DQ + VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4 and later): 16-float
// vectors, masked tails, and int8 dot products by vpdpbusd. Packing, conversions, filtering and the
// exact re-score reuse the AVX2 kernels (valid on these CPUs, and not where the time goes).

// One query against half rows, one row after the other (as scores_avx2), 64 dimensions per step in
// four accumulators, the tail by masked loads. float32 rows keep the AVX2 scan: 64-byte loads of
// rows that numpy aligns to 16 bytes split a cache line each, and measured 10% slower here.
RAGCORE_AVX512 static inline __m512 load16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
RAGCORE_AVX512 void scores_f16_avx512(const float* q, const uint16_t* X, int64_t nr, int dim, float* out) {
  const int rem = dim % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << rem) - 1u);
  for (int64_t r = 0; r < nr; ++r) {
    const uint16_t* x = X + r * dim;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int d = 0;
    for (; d + 64 <= dim; d += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), load16(x + d), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 16), load16(x + d + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 32), load16(x + d + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 48), load16(x + d + 48), a3);
    }
    for (; d + 16 <= dim; d += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), load16(x + d), a0);
    if (rem)
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + d), _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail, x + d)), a1);
    out[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

// int8 . int8 by vpdpbusd, which multiplies unsigned by signed bytes: the row byte x is read as the
// unsigned x + 128 (x XOR 0x80), so the sum is qq . x + 128 * sum(qq), and the second term, a
// constant of the query, is subtracted. Exact in int32 (|sum| <= dim * 255 * 127).
RAGCORE_AVX512 void dots_i8_avx512(const int8_t* qq, const int8_t* X, int64_t nr, int dim, int32_t* out) {
  int32_t qsum = 0;
  for (int d = 0; d < dim; ++d) qsum += qq[d];
  const int32_t bias = 128 * qsum;
  const int rem = dim % 64;
  const __mmask64 tail = rem ? (~0ull >> (64 - rem)) : 0ull;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t r = 0; r < nr; ++r) {
    const int8_t* x = X + r * dim;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    int d = 0;
    for (; d + 128 <= dim; d += 128) {
      const __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(x + d), flip);
      const __m512i x1 = _mm512_xor_si512(_mm512_loadu_si512(x + d + 64), flip);
      a0 = _mm512_dpbusd_epi32(a0, x0, _mm512_loadu_si512(qq + d));
      a1 = _mm512_dpbusd_epi32(a1, x1, _mm512_loadu_si512(qq + d + 64));
    }
    for (; d + 64 <= dim; d += 64)
      a0 = _mm512_dpbusd_epi32(a0, _mm512_xor_si512(_mm512_loadu_si512(x + d), flip), _mm512_loadu_si512(qq + d));
    if (rem) {  // zero bytes past the end in both: they add nothing (0 + 128 times a zero query byte)
      const __m512i xt = _mm512_xor_si512(_mm512_maskz_loadu_epi8(tail, x + d), flip);
      a1 = _mm512_dpbusd_epi32(a1, xt, _mm512_maskz_loadu_epi8(tail, qq + d));
    }
    out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)) - bias;
  }
}

// Register tile: NQ queries (broadcast from the packed queries at constant offsets) x NP panels of
// 16 rows (one vector per panel and dimension): up to 12 x 2 = 24 accumulators, 24 FMAs per 2
// panel loads + 12 broadcasts.
template <int NQ, int NP>
RAGCORE_AVX512 static inline void panel_tile512(const float* Qp, const float* P, int dim, float* out, int64_t ldo) {
  __m512 c[NP][NQ];
#pragma GCC unroll 2
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) c[p][i] = _mm512_setzero_ps();
  const int64_t pstride = static_cast<int64_t>(kPanel) * dim;
  for (int d = 0; d < dim; ++d) {
    __m512 b[NP];
#pragma GCC unroll 2
    for (int p = 0; p < NP; ++p) b[p] = _mm512_loadu_ps(P + p * pstride + d * kPanel);
    const float* q = Qp + static_cast<int64_t>(d) * kAvx512TileQ;
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) {
      const __m512 a = _mm512_set1_ps(q[i]);
#pragma GCC unroll 2
      for (int p = 0; p < NP; ++p) c[p][i] = _mm512_fmadd_ps(a, b[p], c[p][i]);
    }
  }
#pragma GCC unroll 2
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) _mm512_storeu_ps(out + i * ldo + p * kPanel, c[p][i]);
}
template <int NQ>
RAGCORE_AVX512 static inline void panels512(const float* Qp, const float* P, int np, int dim, float* out, int64_t ldo) {
  const int64_t pstride = static_cast<int64_t>(kPanel) * dim;
  int p = 0;
  for (; p + 2 <= np; p += 2) panel_tile512<NQ, 2>(Qp, P + p * pstride, dim, out + p * kPanel, ldo);
  if (p < np) panel_tile512<NQ, 1>(Qp, P + p * pstride, dim, out + p * kPanel, ldo);
}
RAGCORE_AVX512 void tile_f32_avx512(const float* Qp, int nq, const float* P, int np, int dim, float* out,
                                    int64_t ldo) {
  switch (nq) {
    case 12: panels512<12>(Qp, P, np, dim, out, ldo); break;
    case 11: panels512<11>(Qp, P, np, dim, out, ldo); break;
    case 10: panels512<10>(Qp, P, np, dim, out, ldo); break;
    case 9: panels512<9>(Qp, P, np, dim, out, ldo); break;
    case 8: panels512<8>(Qp, P, np, dim, out, ldo); break;
    case 7: panels512<7>(Qp, P, np, dim, out, ldo); break;
    case 6: panels512<6>(Qp, P, np, dim, out, ldo); break;
    case 5: panels512<5>(Qp, P, np, dim, out, ldo); break;
    case 4: panels512<4>(Qp, P, np, dim, out, ldo); break;
    case 3: panels512<3>(Qp, P, np, dim, out, ldo); break;
    case 2: panels512<2>(Qp, P, np, dim, out, ldo); break;
    case 1: panels512<1>(Qp, P, np, dim, out, ldo); break;
    default: break;
  }
}

void i8_pack(const int8_t* X, int64_t nr, int dim, int groups, int32_t* P, int32_t* rs) {
  const int64_t np = ((nr + 15) / 16 + 1) / 2 * 2;
  for (int64_t p = 0; p < np; ++p) {
    int32_t* panel = P + p * groups * 16;
    for (int j = 0; j < 16; ++j) {
      const int64_t row = p * 16 + j;
      if (row >= nr) {
        for (int g = 0; g < groups; ++g) panel[g * 16 + j] = 0;
        continue;
      }
      const int8_t* x = X + row * dim;
      int32_t sum = 0;
      int g = 0;
      for (; 4 * g + 4 <= dim; ++g) {
        int32_t w;
        std::memcpy(&w, x + 4 * g, 4);
        panel[g * 16 + j] = w;
        sum += x[4 * g] + x[4 * g + 1] + x[4 * g + 2] + x[4 * g + 3];
      }
      for (; g < groups; ++g) {
        int8_t b[4] = {0, 0, 0, 0};
        for (int t = 0; t < 4 && 4 * g + t < dim; ++t) {
          b[t] = x[4 * g + t];
          sum += b[t];
        }
        int32_t w;
        std::memcpy(&w, b, 4);
        panel[g * 16 + j] = w;
      }
      rs[row] = sum;
    }
  }
}

template <int NQ>
RAGCORE_AVX512 static inline void i8_tile_pair(const int32_t* Qp, const int32_t* P0, const int32_t* P1, int groups,
                                        int32_t* out, int64_t ldo) {
  __m512i c0[NQ], c1[NQ];
#pragma GCC unroll 12
  for (int i = 0; i < NQ; ++i) c0[i] = c1[i] = _mm512_setzero_si512();
  for (int g = 0; g < groups; ++g) {
    const __m512i x0 = _mm512_loadu_si512(P0 + g * 16), x1 = _mm512_loadu_si512(P1 + g * 16);
#pragma GCC unroll 12
    for (int i = 0; i < NQ; ++i) {
      const __m512i q = _mm512_set1_epi32(Qp[g * kI8TileQ + i]);
      c0[i] = _mm512_dpbusd_epi32(c0[i], q, x0);
      c1[i] = _mm512_dpbusd_epi32(c1[i], q, x1);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < NQ; ++i) {
    _mm512_storeu_si512(out + i * ldo, c0[i]);
    _mm512_storeu_si512(out + i * ldo + 16, c1[i]);
  }
}
template <int NQ>
RAGCORE_AVX512 static inline void i8_pairs(const int32_t* Qp, const int32_t* P, int np, int groups, int32_t* out, int64_t ldo) {
  const int64_t pstride = static_cast<int64_t>(groups) * 16;
  for (int p = 0; p + 2 <= np; p += 2)
    i8_tile_pair<NQ>(Qp, P + p * pstride, P + (p + 1) * pstride, groups, out + p * 16, ldo);
}
RAGCORE_AVX512 void i8_tile_avx512(const int32_t* Qp, int nq, const int32_t* P, int np, int groups, int32_t* out,
                                   int64_t ldo) {
  switch (nq) {
    case 12: i8_pairs<12>(Qp, P, np, groups, out, ldo); break;
    case 11: i8_pairs<11>(Qp, P, np, groups, out, ldo); break;
    case 10: i8_pairs<10>(Qp, P, np, groups, out, ldo); break;
    case 9: i8_pairs<9>(Qp, P, np, groups, out, ldo); break;
    case 8: i8_pairs<8>(Qp, P, np, groups, out, ldo); break;
    case 7: i8_pairs<7>(Qp, P, np, groups, out, ldo); break;
    case 6: i8_pairs<6>(Qp, P, np, groups, out, ldo); break;
    case 5: i8_pairs<5>(Qp, P, np, groups, out, ldo); break;
    case 4: i8_pairs<4>(Qp, P, np, groups, out, ldo); break;
    case 3: i8_pairs<3>(Qp, P, np, groups, out, ldo); break;
    case 2: i8_pairs<2>(Qp, P, np, groups, out, ldo); break;
    case 1: i8_pairs<1>(Qp, P, np, groups, out, ldo); break;
    default: break;
  }
}
// The lanes set in m of rows j..j+15: their positions and lower / upper bounds appended at cnt; returns
// the new count.
RAGCORE_AVX512 static inline int emit_hits(__mmask16 m, int j, __m512 lower, __m512 upper, int* pos, float* lo, float* hi,
                                    int cnt) {
  alignas(64) float ua[16], la[16];
  _mm512_store_ps(ua, upper);
  _mm512_store_ps(la, lower);
  while (m) {
    const int t = __builtin_ctz(m);
    m = static_cast<__mmask16>(m & (m - 1));
    pos[cnt] = j + t;
    lo[cnt] = la[t];
    hi[cnt] = ua[t];
    ++cnt;
  }
  return cnt;
}

// The int8 bound of 16 rows (see search_blocked_i8): estimates a = scale * sq * dot and bound =
// (min(sq b1, en b2) + qn c3) (1 + 1e-5) + 1e-5 |a| + 1e-30; returns the bound, a in *a_out.
RAGCORE_AVX512 static inline __m512 i8_bound16(__m512i dot, __m512 scale, __m512 b1, __m512 b2, __m512 c3, __m512 vsq,
                                        __m512 ven, __m512 vqn, __m512* a_out) {
  const __m512 a = _mm512_mul_ps(_mm512_mul_ps(scale, vsq), _mm512_cvtepi32_ps(dot));
  const __m512 qerr = _mm512_min_ps(_mm512_mul_ps(vsq, b1), _mm512_mul_ps(ven, b2));
  const __m512 core = _mm512_fmadd_ps(vqn, c3, qerr);
  *a_out = a;
  return _mm512_add_ps(_mm512_fmadd_ps(_mm512_abs_ps(a), _mm512_set1_ps(1e-5f), _mm512_mul_ps(core, _mm512_set1_ps(1.f + 1e-5f))),
                       _mm512_set1_ps(1e-30f));
}

RAGCORE_AVX512 int i8_filter_avx512(const int32_t* dot, const int32_t* rs, const float* scale, const float* b1,
                                    const float* b2, const float* c3, int n, float sq, float en, float qn, float thr,
                                    int* pos, float* lo, float* hi) {
  const __m512 vsq = _mm512_set1_ps(sq), ven = _mm512_set1_ps(en), vqn = _mm512_set1_ps(qn), vthr = _mm512_set1_ps(thr);
  int cnt = 0;
  for (int j = 0; j < n; j += 16) {
    const __mmask16 valid = n - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - j)) - 1u);
    const __m512i d = _mm512_sub_epi32(_mm512_loadu_si512(dot + j), _mm512_slli_epi32(_mm512_loadu_si512(rs + j), 7));
    __m512 a;
    const __m512 bound = i8_bound16(d, _mm512_loadu_ps(scale + j), _mm512_loadu_ps(b1 + j), _mm512_loadu_ps(b2 + j),
                                    _mm512_loadu_ps(c3 + j), vsq, ven, vqn, &a);
    const __m512 up = _mm512_add_ps(a, bound);
    const __mmask16 m = _mm512_mask_cmp_ps_mask(valid, up, vthr, _CMP_GE_OQ);
    if (m) cnt = emit_hits(m, j, _mm512_sub_ps(a, bound), up, pos, lo, hi, cnt);
  }
  return cnt;
}
RAGCORE_AVX512 int scan_filter_avx512(const int32_t* dots, const float* aux, int stride, int n, float sq, float en,
                                      float qn, float rnd, float thr, int* pos, float* lo, float* hi) {  // n % 16 == 0
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 vsq = _mm512_set1_ps(sq), ven = _mm512_set1_ps(en), vqn = _mm512_set1_ps(qn), vthr = _mm512_set1_ps(thr);
  const __m512 vrnd = _mm512_set1_ps(rnd), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.f);
  int cnt = 0;
  for (int j = 0; j < n; j += 16) {
    __m512 scale, b1, b2, c3;
    if (stride == 4) {  // 16 rows of (scale, b1, b2, b3): de-interleave in two rounds of even / odd picks
      const float* p = aux + 4 * static_cast<int64_t>(j);
      const __m512 A = _mm512_loadu_ps(p), B = _mm512_loadu_ps(p + 16), C = _mm512_loadu_ps(p + 32),
                   D = _mm512_loadu_ps(p + 48);
      const __m512 abe = _mm512_permutex2var_ps(A, ev, B), abo = _mm512_permutex2var_ps(A, od, B);
      const __m512 cde = _mm512_permutex2var_ps(C, ev, D), cdo = _mm512_permutex2var_ps(C, od, D);
      scale = _mm512_permutex2var_ps(abe, ev, cde);
      b2 = _mm512_permutex2var_ps(abe, od, cde);
      b1 = _mm512_permutex2var_ps(abo, ev, cdo);
      const __m512 b3 = _mm512_permutex2var_ps(abo, od, cdo);
      c3 = _mm512_fmadd_ps(vrnd, _mm512_add_ps(b2, b3), b3);
    } else {  // (scale, L1 of the codes): the query term only
      const float* p = aux + 2 * static_cast<int64_t>(j);
      const __m512 A = _mm512_loadu_ps(p), B = _mm512_loadu_ps(p + 16);
      scale = _mm512_permutex2var_ps(A, ev, B);
      b1 = _mm512_mul_ps(scale, _mm512_mul_ps(half, _mm512_permutex2var_ps(A, od, B)));
      b2 = one;
      c3 = _mm512_setzero_ps();
    }
    __m512 a;
    const __m512 bound = i8_bound16(_mm512_loadu_si512(dots + j), scale, b1, b2, c3, vsq, ven, vqn, &a);
    const __m512 up = _mm512_add_ps(a, bound);
    const __mmask16 m = _mm512_cmp_ps_mask(up, vthr, _CMP_GE_OQ);
    if (m) cnt = emit_hits(m, j, _mm512_sub_ps(a, bound), up, pos, lo, hi, cnt);
  }
  return cnt;
}

static const I8TileKernels kI8TileAvx512 = {kI8TileQ, 1, false, nullptr, nullptr, i8_pack, i8_tile_avx512, i8_filter_avx512};

const Kernels kAvx512 = {"avx512",        scores_f32_avx2,   scores_f16_avx512, dots_i8_avx512,  dot_f32_i8_avx2,
                         pack_avx2,       kAvx512TileQ,      tile_f32_avx512,   f16_to_f32_avx2, i8_to_f32_avx2,
                         filter_ge_avx2,  nullptr,           &kI8TileAvx512,    scan_filter_avx512};

}  // namespace ragcore::dense::detail
#endif  // RAGCORE_X86
